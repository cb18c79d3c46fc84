"""hypo: DPO + lam * an RLOO REINFORCE surrogate of KL(pi_theta || pi_ref); checked against explicit loops in float64
and, for the gradient estimator, against the exact gradient of KL on an enumerated categorical policy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from alignctl.objectives import dpo, hypo

from ._helpers import (LOW_PRECISION, check_entry, div, grads, neg_log_sigmoid, np_, random_pairs,
                       sigmoid)  # fmt: skip


def random_samples(seed: int = 0, batch: int = 6, k: int = 3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    ref = -torch.rand(batch, k, generator=g, dtype=torch.float64) * 20 - 2
    policy = (ref + torch.randn(batch, k, generator=g, dtype=torch.float64) * 2).to(dtype).requires_grad_()
    return policy, ref.to(dtype).requires_grad_()


def loop_kl_and_grad(policy: np.ndarray, ref: np.ndarray, mask: np.ndarray):
    """Per prompt: the mean of h over its real samples, and d/d l_theta(y_i) of the surrogate: (h_i - b_i) / n with
    b_i the mean h of the prompt's other real samples (0 when it has none)."""
    values, grad = np.zeros(len(policy)), np.zeros_like(policy)
    for b in range(len(policy)):
        real = [i for i in range(policy.shape[1]) if mask[b, i]]
        h = {i: policy[b, i] - ref[b, i] for i in real}
        if not real:
            continue
        values[b] = sum(h.values()) / len(real)
        for i in real:
            others = [h[j] for j in real if j != i]
            baseline = sum(others) / len(others) if others else 0.0
            grad[b, i] = (h[i] - baseline) / len(real)
    return values, grad


def test_lam_zero_is_dpo_exactly_value_and_gradient():
    beta = 0.3
    pairs, leaves = random_pairs(seed=1)
    policy, ref = random_samples(seed=1)
    out = hypo.loss(hypo.HybridLogps(pairs, policy, ref), divergence=None, beta=beta, lam=0.0)
    h_w = np_(leaves["policy_chosen_logps"]) - np_(leaves["ref_chosen_logps"])
    h_l = np_(leaves["policy_rejected_logps"]) - np_(leaves["ref_rejected_logps"])
    z = beta * (h_w - h_l)
    np.testing.assert_allclose(np_(out.losses), neg_log_sigmoid(z), rtol=1e-12)
    torch.testing.assert_close(out.losses, dpo.loss(pairs, divergence=None, beta=beta).losses, rtol=0, atol=0)
    g = grads(out.losses, {**leaves, "policy_samples": policy, "ref_samples": ref})
    s = sigmoid(-z)
    np.testing.assert_allclose(np_(g["policy_chosen_logps"]), -beta * s, rtol=1e-12)
    np.testing.assert_allclose(np_(g["policy_rejected_logps"]), beta * s, rtol=1e-12)
    assert g["policy_samples"] is None or not g["policy_samples"].any()
    assert g["ref_samples"] is None
    np.testing.assert_allclose(np_(out.chosen_rewards), beta * h_w, rtol=1e-12)
    np.testing.assert_allclose(np_(out.rejected_rewards), beta * h_l, rtol=1e-12)


@pytest.mark.parametrize("masked", [False, True])
def test_value_and_gradient_against_loops(masked):
    beta, lam = 0.2, 0.7
    pairs, leaves = random_pairs(seed=2)
    policy, ref = random_samples(seed=2, k=4)
    mask = torch.ones(6, 4, dtype=torch.bool)
    if masked:  # one prompt with no real sample, one with a single one, one with two
        mask[0] = False
        mask[1, 1:] = False
        mask[2, :2] = False
        policy.data[0, 0] = -math.inf  # a padded slot's value must not leak (inf * 0 = nan)
    out = hypo.loss(hypo.HybridLogps(pairs, policy, ref, mask if masked else None), divergence=div("reverse_kl"),
                    beta=beta, lam=lam)  # fmt: skip
    h_w = np_(leaves["policy_chosen_logps"]) - np_(leaves["ref_chosen_logps"])
    h_l = np_(leaves["policy_rejected_logps"]) - np_(leaves["ref_rejected_logps"])
    kl, kl_grad = loop_kl_and_grad(np_(policy), np_(ref), mask.numpy())
    np.testing.assert_allclose(np_(out.losses), neg_log_sigmoid(beta * (h_w - h_l)) + lam * kl, rtol=1e-12)
    g = grads(out.losses, {"policy_samples": policy, "ref_samples": ref})
    np.testing.assert_allclose(np_(g["policy_samples"]), lam * kl_grad, rtol=1e-12, atol=0)
    assert g["ref_samples"] is None  # the reference only enters as a constant
    np.testing.assert_allclose(np_(hypo.reverse_kl_term(policy, ref, mask if masked else None)), kl, rtol=1e-12)


def categorical(logits: torch.Tensor, ref_probs: torch.Tensor):
    """The exact KL(pi_theta || pi_ref) of a categorical policy and its gradient, by hand:
    d KL / d theta_j = pi_j (log(pi_j / r_j) - KL)."""
    p = torch.softmax(logits.detach().double(), 0)
    kl = float((p * (p / ref_probs).log()).sum())
    return kl, (p * ((p / ref_probs).log() - kl)).numpy()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_expected_surrogate_gradient_is_the_exact_kl_gradient_by_enumeration(k):
    """Sum over every k-tuple of outcomes y ~ pi_theta, weighted by its probability: the expected value is KL and the
    expected gradient is grad KL exactly (REINFORCE for k = 1, leave-one-out baseline for k > 1)."""
    logits = torch.tensor([0.3, -1.2, 0.8, 0.1], dtype=torch.float64, requires_grad=True)
    ref_probs = torch.tensor([0.1, 0.4, 0.2, 0.3], dtype=torch.float64)
    log_p = torch.log_softmax(logits, 0)
    expected_value, expected_grad = 0.0, torch.zeros(4, dtype=torch.float64)
    for ys in itertools.product(range(4), repeat=k):
        weight = float(torch.exp(log_p.detach()[list(ys)].sum()))
        term = hypo.reverse_kl_term(log_p[list(ys)][None], ref_probs.log()[list(ys)][None])
        (grad,) = torch.autograd.grad(term.sum(), logits, retain_graph=True)
        expected_value += weight * float(term.detach())
        expected_grad += weight * grad
    kl, kl_grad = categorical(logits, ref_probs)
    assert expected_value == pytest.approx(kl, rel=1e-12)
    np.testing.assert_allclose(expected_grad.numpy(), kl_grad, rtol=1e-10, atol=1e-14)


def test_masked_slot_is_as_if_absent():
    policy, ref = random_samples(seed=4, batch=3, k=3)
    mask = torch.tensor([[True, True, False]] * 3)
    full = hypo.reverse_kl_term(policy, ref, mask)
    (g_full,) = torch.autograd.grad(full.sum(), policy)
    short_policy = policy[:, :2].detach().clone().requires_grad_()
    short = hypo.reverse_kl_term(short_policy, ref[:, :2])
    (g_short,) = torch.autograd.grad(short.sum(), short_policy)
    torch.testing.assert_close(full, short.detach(), rtol=0, atol=0)
    torch.testing.assert_close(g_full[:, :2], g_short, rtol=0, atol=0)
    assert not g_full[:, 2].any()


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_finite_at_extreme_log_ratios(dtype):
    pairs, leaves = random_pairs(seed=5, batch=4, dtype=dtype)
    h = torch.tensor([[-1000.0, 1000.0], [0.0, 1000.0], [-1000.0, -1000.0], [30.0, -30.0]])
    policy = (-10.0 + h).to(dtype).requires_grad_()
    ref = torch.full((4, 2), -10.0, dtype=dtype)
    out = hypo.loss(hypo.HybridLogps(pairs, policy, ref), divergence=None, lam=0.5)
    assert torch.isfinite(out.losses).all()
    g = grads(out.losses, {**leaves, "policy_samples": policy})
    assert all(torch.isfinite(v).all() for v in g.values() if v is not None)
    assert g["policy_samples"].abs().sum() > 0


def test_pairs_alone_are_dpo():
    """eval's implicit-reward classifier passes pairs without samples: the DPO loss and rewards."""
    pairs, _ = random_pairs(seed=6)
    got = hypo.loss(pairs, divergence=None, beta=0.4, lam=0.3)
    want = dpo.loss(pairs, divergence=None, beta=0.4)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_registry_entry():
    check_entry("hypo", defaults={"beta": 0.1, "lam": 0.01}, data="pairs", needs_reference=True,
                divergences={"reverse_kl"}, default_divergence="reverse_kl")  # fmt: skip
    with pytest.raises(ValueError, match="divergence=js is not accepted by objective=hypo"):
        hypo.loss(random_pairs(seed=0)[0], divergence=div("js"))
