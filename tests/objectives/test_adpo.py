"""adpo: cross-entropy of target q against softmax((l_theta - l_anchor)/tau); pairwise soft labels and listwise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignctl.objectives import adpo, dpo
from alignctl.objectives.base import CandidateLogps

from ._helpers import LOW_PRECISION, assert_finite, div, grads, neg_log_sigmoid, np_, random_pairs


def _np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _candidates(seed, batch=4, n=5, scale=2.0, **extra):
    g = torch.Generator().manual_seed(seed)
    anchor = -torch.rand(batch, n, generator=g, dtype=torch.float64) * 30 - 5
    policy = (anchor + torch.randn(batch, n, generator=g, dtype=torch.float64) * scale).requires_grad_()
    anchor = anchor.requires_grad_()
    return CandidateLogps(policy, anchor, **extra), {"policy_logps": policy, "anchor_logps": anchor}


def test_hard_label_with_tau_one_over_beta_is_dpo():
    beta = 0.1
    logps, leaves = random_pairs(seed=81)
    cand_p = torch.stack([leaves["policy_chosen_logps"], leaves["policy_rejected_logps"]], -1)
    cand_a = torch.stack([leaves["ref_chosen_logps"], leaves["ref_rejected_logps"]], -1)
    a = adpo.loss(CandidateLogps(cand_p, cand_a), divergence=None, tau=1 / beta)  # default q = one-hot(0)
    a_soft = adpo.loss(CandidateLogps(cand_p, cand_a, labels=torch.tensor([[1.0, 0.0]]).expand(6, 2)),
                       divergence=None, tau=1 / beta)
    b = dpo.loss(logps, divergence=None, beta=beta)
    for x in (a, a_soft):
        torch.testing.assert_close(x.losses, b.losses, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(x.chosen_rewards, b.chosen_rewards, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(x.rejected_rewards, b.rejected_rewards, rtol=1e-13, atol=1e-15)
    ga, gb = grads(a.losses, leaves), grads(b.losses, leaves)
    for k in leaves:
        torch.testing.assert_close(ga[k], gb[k], rtol=1e-13, atol=1e-15)
    assert adpo.loss.__kwdefaults__["tau"] == 1 / dpo.loss.__kwdefaults__["beta"]  # the defaults agree too


def test_soft_pairwise_formula():
    tau = 2.0
    c, leaves = _candidates(82, n=2, labels=torch.tensor([[0.8, 0.2], [0.5, 0.5], [0.3, 0.7], [1.0, 0.0]], dtype=torch.float64))
    out = adpo.loss(c, divergence=None, tau=tau)
    z = (np_(leaves["policy_logps"]) - np_(leaves["anchor_logps"])) / tau
    q = c.labels.numpy()[:, 0]
    d = z[:, 0] - z[:, 1]
    np.testing.assert_allclose(np_(out.losses), q * neg_log_sigmoid(d) + (1 - q) * neg_log_sigmoid(-d), rtol=1e-12)


def test_half_labels_at_anchor_give_log2_and_zero_gradient():
    c, leaves = _candidates(83, n=2, scale=0.0, labels=torch.full((4, 2), 0.5, dtype=torch.float64))
    out = adpo.loss(c, divergence=None)
    torch.testing.assert_close(out.losses, torch.full((4,), math.log(2), dtype=torch.float64), rtol=0, atol=1e-14)
    assert grads(out.losses, leaves)["policy_logps"].abs().max() < 1e-15


@pytest.mark.parametrize("n", [3, 8])
def test_uniform_listwise_at_anchor_gives_log_n_and_zero_gradient(n):
    c, leaves = _candidates(84, n=n, scale=0.0, labels=torch.full((4, n), 1.0 / n, dtype=torch.float64))
    out = adpo.loss(c, divergence=None, tau=0.8)
    torch.testing.assert_close(out.losses, torch.full((4,), math.log(n), dtype=torch.float64), rtol=0, atol=1e-13)
    assert grads(out.losses, leaves)["policy_logps"].abs().max() < 1e-15


def test_listwise_value_and_gradient_against_numpy():
    tau = 0.7
    g = torch.Generator().manual_seed(0)
    labels = torch.rand(4, 5, generator=g, dtype=torch.float64)
    c, leaves = _candidates(85, labels=labels)
    out = adpo.loss(c, divergence=None, tau=tau)
    z = (np_(leaves["policy_logps"]) - np_(leaves["anchor_logps"])) / tau
    q = labels.numpy() / labels.numpy().sum(-1, keepdims=True)  # labels are renormalised
    p = _np_softmax(z)
    np.testing.assert_allclose(np_(out.losses), -(q * np.log(p)).sum(-1), rtol=1e-12)
    gr = grads(out.losses, leaves)
    np.testing.assert_allclose(np_(gr["policy_logps"]), (p - q) / tau, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np_(gr["anchor_logps"]), -(p - q) / tau, rtol=1e-10, atol=1e-14)
    rows = np.arange(4)
    np.testing.assert_allclose(np_(out.chosen_rewards), z[rows, q.argmax(-1)], rtol=1e-12)
    np.testing.assert_allclose(np_(out.rejected_rewards), z[rows, q.argmin(-1)], rtol=1e-12)


@pytest.mark.parametrize("zscore", [False, True])
def test_scores_become_softmax_labels(zscore):
    beta_r = 0.5
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(4, 5, generator=g, dtype=torch.float64) * 3
    c, leaves = _candidates(86, scores=scores)
    out = adpo.loss(c, divergence=None, tau=1.0, beta_r=beta_r, zscore=zscore)
    r = scores.numpy()
    if zscore:
        r = (r - r.mean(-1, keepdims=True)) / (r.std(-1, ddof=1, keepdims=True) + 1e-6)  # the port's torch.std
    q = _np_softmax(r / beta_r)
    z = np_(leaves["policy_logps"]) - np_(leaves["anchor_logps"])
    np.testing.assert_allclose(np_(out.losses), -(q * np.log(_np_softmax(z))).sum(-1), rtol=1e-10)
    # pairwise: softmax of two scores is sigmoid((r_w - r_l)/beta_r), the spec's soft label
    c2, _ = _candidates(87, n=2, scores=torch.tensor([[1.0, 0.2]] * 4, dtype=torch.float64))
    q_w = 1 / (1 + math.exp(-(1.0 - 0.2) / beta_r))
    explicit = adpo.loss(CandidateLogps(c2.policy_logps, c2.anchor_logps, labels=torch.tensor([[q_w, 1 - q_w]] * 4,
                         dtype=torch.float64)), divergence=None, tau=1.0)
    torch.testing.assert_close(adpo.loss(c2, divergence=None, tau=1.0, beta_r=beta_r).losses, explicit.losses)


def test_mask_equals_the_smaller_group():
    g = torch.Generator().manual_seed(2)
    labels = torch.rand(4, 3, generator=g, dtype=torch.float64)
    small, _ = _candidates(88, n=3, labels=labels)
    pad_p = torch.cat([small.policy_logps.detach(), torch.full((4, 2), float("nan"), dtype=torch.float64)], -1)
    pad_a = torch.cat([small.anchor_logps.detach(), torch.zeros(4, 2, dtype=torch.float64)], -1)
    pad_p.requires_grad_()
    padded = CandidateLogps(pad_p, pad_a, labels=torch.cat([labels, torch.ones(4, 2, dtype=torch.float64)], -1),
                            mask=torch.tensor([[True, True, True, False, False]] * 4))
    a, b = adpo.loss(padded, divergence=None, tau=0.5), adpo.loss(small, divergence=None, tau=0.5)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    (gp,) = torch.autograd.grad(a.losses.sum(), pad_p)
    assert torch.isfinite(gp).all() and (gp[:, 3:] == 0).all()


def test_only_reverse_kl_and_candidates_data():
    c, _ = _candidates(89)
    with pytest.raises(ValueError):
        adpo.loss(c, divergence=div("forward_kl"))
    assert adpo.OBJECTIVE.data == "candidates" and adpo.OBJECTIVE.needs_reference


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_finite_at_extreme_log_ratios(dtype):
    h = torch.tensor([[-1000.0, 1000.0, 0.0, -30.0], [1000.0, -1000.0, 100.0, -100.0], [1000.0, 1000.0, -1000.0, -1000.0]])
    anchor = torch.full_like(h, -10.0)
    leaves = {"policy_logps": (anchor + h).to(dtype).requires_grad_(), "anchor_logps": anchor.to(dtype).requires_grad_()}
    for extra in ({}, {"labels": torch.tensor([[0.4, 0.3, 0.2, 0.1]] * 3)}, {"scores": h}):
        for tau in (0.1, 10.0):
            out = adpo.loss(CandidateLogps(**leaves, **extra), divergence=None, tau=tau)
            # saturated rows (q equal to p, or all mass on the best) legitimately have zero gradient
            assert_finite(out, leaves, require_signal="labels" in extra)


def test_registry_entry():
    from ._helpers import check_entry

    check_entry(
        "adpo", defaults={"tau": 10.0, "beta_r": 0.5, "zscore": False}, data="candidates", needs_reference=True, divergences={"reverse_kl"},
        default_divergence="reverse_kl",
    )
