"""GRPO's divergence term (spec section 8) against independent re-derivations in numpy (never alignctl's f)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignctl.divergences import get
from alignctl.objectives import grpo
from alignctl.objectives.grpo import TokenLogps

GENERATORS = [("forward_kl", None), ("js", None), ("alpha", 0.2), ("alpha", 0.5)]
GEN_IDS = ["forward_kl", "js", "alpha0.2", "alpha0.5"]


def f_np(name: str, u: np.ndarray, alpha: float | None = None) -> np.ndarray:
    """The spec's DPH-RL generators, written from u = pi_theta / pi_0."""
    if name == "forward_kl":
        return u - 1.0 - np.log(u)
    if name == "js":
        return u * np.log(u) - (u + 1.0) * np.log((u + 1.0) / 2.0)
    a = alpha
    return (u ** (1.0 - a) - (1.0 - a) * u - a) / (a * (a - 1.0))


@pytest.mark.parametrize("name, alpha", GENERATORS, ids=GEN_IDS)
def test_generator_matches_spec_formula_and_is_token_mean(name, alpha):
    g = torch.Generator().manual_seed(0)
    policy = -3 * torch.rand(3, 5, generator=g, dtype=torch.float64)
    ref = -3 * torch.rand(3, 5, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 5, generator=g) > 0.3
    out = grpo.loss(TokenLogps(policy, ref, mask), divergence=get(name, alpha), divergence_coef=0.5)
    u = np.exp(policy.numpy() - ref.numpy())
    expected = f_np(name, u, alpha)[mask.numpy()].mean()
    assert out.penalty.item() == pytest.approx(expected, rel=1e-10)
    assert out.loss.item() == pytest.approx(0.5 * expected, rel=1e-10)


@pytest.mark.parametrize("name, alpha", [*GENERATORS, ("reverse_kl", None)], ids=[*GEN_IDS, "reverse_kl_k3"])
def test_value_and_gradient_vanish_at_the_starting_policy(name, alpha):
    """Spec 8 test 1: at pi_theta = pi_0, f(1) = f'(1) = 0, so value and gradient are 0 (k3 too)."""
    ref = torch.log_softmax(torch.randn(4, 6, dtype=torch.float64), -1)
    policy = ref.clone().requires_grad_(True)
    out = grpo.loss(TokenLogps(policy, ref), divergence=get(name, alpha), divergence_coef=1.0)
    out.loss.backward()
    assert out.penalty.item() == pytest.approx(0.0, abs=1e-12)
    assert policy.grad.abs().max().item() == pytest.approx(0.0, abs=1e-12)


def test_forward_kl_generator_is_non_negative_per_token():
    """Spec 8 test 2 (and k3 for reverse KL): both are >= 0 for any log-ratio, including extreme ones."""
    h = torch.cat([torch.linspace(-30, 30, 2001), torch.tensor([-80.0, 80.0])])
    fkl = grpo.generator(get("forward_kl"), h, torch.zeros_like(h))
    assert (fkl >= 0).all() and torch.isfinite(fkl).all()
    assert (grpo.k3(h, torch.zeros_like(h)) >= 0).all()
    np.testing.assert_allclose(fkl.numpy(), f_np("forward_kl", np.exp(h.double().numpy())), rtol=1e-5, atol=1e-6)


def test_gradient_is_rehearsal_sft_with_a_correction():
    """Forward KL's gradient w.r.t. l_theta is (u - 1) (spec: (u-1) grad log pi_theta), per token, / #tokens."""
    policy = torch.tensor([-1.0, -2.0, -0.5], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-1.5, -1.0, -0.5], dtype=torch.float64)
    grpo.loss(TokenLogps(policy, ref), divergence=get("forward_kl"), divergence_coef=1.0).loss.backward()
    u = np.exp(policy.detach().numpy() - ref.numpy())
    np.testing.assert_allclose(policy.grad.numpy(), (u - 1.0) / 3, rtol=1e-12)


@pytest.mark.parametrize("name, alpha", GENERATORS, ids=GEN_IDS)
def test_monte_carlo_mean_over_pi0_samples_approaches_the_exact_divergence(name, alpha):
    """Spec 8 test 3: mean of f(pi_theta/pi_0) over y ~ pi_0 -> the exact divergence on a small categorical
    (forward KL = KL(pi_0 || pi_theta), summed by hand; JS = 2 JSD; alpha by its closed form)."""
    p0 = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    pt = np.array([0.2, 0.3, 0.1, 0.25, 0.15])
    if name == "forward_kl":
        exact = float(np.sum(p0 * np.log(p0 / pt)))
    elif name == "js":
        m = (p0 + pt) / 2
        exact = float(np.sum(p0 * np.log(p0 / m)) + np.sum(pt * np.log(pt / m)))
    else:
        exact = float((np.sum(pt ** (1 - alpha) * p0**alpha) - 1) / (alpha * (alpha - 1)))
    g = torch.Generator().manual_seed(0)
    y = torch.multinomial(torch.tensor(p0), 200_000, replacement=True, generator=g)
    logp0, logpt = torch.tensor(np.log(p0))[y], torch.tensor(np.log(pt))[y]
    out = grpo.loss(TokenLogps(logpt, logp0), divergence=get(name, alpha), divergence_coef=1.0)
    assert out.penalty.item() == pytest.approx(exact, rel=0.03)


def test_k3_is_trls_estimator_and_unbiased_for_reverse_kl_on_policy_samples():
    p0 = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    pt = np.array([0.2, 0.3, 0.1, 0.25, 0.15])
    exact = float(np.sum(pt * np.log(pt / p0)))
    y = torch.multinomial(torch.tensor(pt), 200_000, replacement=True, generator=torch.Generator().manual_seed(1))
    logp0, logpt = torch.tensor(np.log(p0))[y], torch.tensor(np.log(pt))[y]
    out = grpo.loss(TokenLogps(logpt, logp0), divergence=get("reverse_kl"), divergence_coef=1.0)
    assert out.penalty.item() == pytest.approx(exact, rel=0.03)
    one = grpo.k3(torch.tensor([-1.0]), torch.tensor([-2.0])).item()
    assert one == pytest.approx(math.exp(-1.0) + 1.0 - 1.0, rel=1e-6)


def test_none_is_plain_grpo_and_float32_inputs_stay_finite():
    policy = torch.full((2, 3), -1.0, requires_grad=True)
    out = grpo.loss(TokenLogps(policy, torch.zeros(2, 3)), divergence=None)
    assert out.loss.item() == 0.0 and out.penalty.item() == 0.0
    out.loss.backward()
    assert policy.grad is not None and (policy.grad == 0).all()
    big = grpo.loss(TokenLogps(torch.tensor([0.0, -200.0]), torch.tensor([-200.0, 0.0])), divergence=get("js"))
    assert torch.isfinite(big.penalty)


def test_registry_entry():
    from alignctl.divergences import NAMES

    from ._helpers import check_entry

    check_entry(
        "grpo", defaults={"divergence_coef": 0.01, "kl_estimator": "exact"}, data="groups", needs_reference=False, divergences={*NAMES, "none"},
        default_divergence="forward_kl",
    )


def verl_low_var_kl(logprob: np.ndarray, ref_logprob: np.ndarray) -> np.ndarray:
    """verl's kl_penalty(logprob, ref_logprob, "low_var_kl") (verl/trainer/ppo/core_algos.py), in numpy."""
    kl = np.clip(ref_logprob - logprob, -20.0, 20.0)
    return np.clip(np.exp(kl) - kl - 1.0, -10.0, 10.0)


def test_low_var_kl_is_verls_estimator_with_the_roles_dph_rl_gives_it():
    # DPH-RL's forward KL on pi_0 samples calls low_var_kl with pi_0's log-probs as `logprob` and the policy's as
    # `ref_logprob`, so its log-ratio is l_theta - l_0 = h. Over h in [-50, 50] (float64):
    h = np.linspace(-50.0, 50.0, 2001)
    ref = np.random.default_rng(0).normal(-3.0, 1.0, h.shape)
    policy = torch.tensor(ref + h, requires_grad=True)
    out = grpo.loss(TokenLogps(policy, torch.tensor(ref)), divergence=get("forward_kl"), divergence_coef=1.0,
                    kl_estimator="low_var_kl")  # fmt: skip
    want = verl_low_var_kl(logprob=ref, ref_logprob=ref + h)
    assert out.penalty.item() == pytest.approx(want.mean(), rel=1e-12)
    out.loss.backward()
    # gradient: d/dh (e^h - h - 1) / N where the clamps do not bind, 0 where they do
    exact = f_np("forward_kl", np.exp(h))
    inside = exact < 10.0
    grad_want = np.where(inside, np.expm1(h), 0.0) / h.size
    np.testing.assert_allclose(policy.grad.numpy(), grad_want, rtol=1e-9, atol=1e-15)
    # the exact estimator agrees inside about [-11, 2.6] and keeps growing outside it
    exact_out = grpo.loss(TokenLogps(policy.detach(), torch.tensor(ref)), divergence=get("forward_kl"),
                          divergence_coef=1.0)  # fmt: skip
    assert exact_out.penalty.item() == pytest.approx(exact.mean(), rel=1e-12)
    assert h[inside].min() == pytest.approx(-11.0, abs=0.06) and h[inside].max() == pytest.approx(2.6, abs=0.06)
    assert exact_out.penalty.item() > 10 * out.penalty.item()


def test_low_var_kl_reverse_is_verls_kl_loss_on_policy_samples():
    # DPH-RL's reverse-KL baseline (verl's kl loss, kl_loss_type=low_var_kl) on policy samples: logprob = l_theta,
    # ref_logprob = l_0, so the clamped log-ratio is l_0 - l_theta = -h. Over h in [-50, 50] (float64):
    h = np.linspace(-50.0, 50.0, 2001)
    ref = np.random.default_rng(1).normal(-3.0, 1.0, h.shape)
    policy = torch.tensor(ref + h, requires_grad=True)
    out = grpo.loss(TokenLogps(policy, torch.tensor(ref)), divergence=get("reverse_kl"), divergence_coef=2.0,
                    kl_estimator="low_var_kl")  # fmt: skip
    want = verl_low_var_kl(logprob=ref + h, ref_logprob=ref)
    assert out.penalty.item() == pytest.approx(want.mean(), rel=1e-12)
    assert out.loss.item() == pytest.approx(2.0 * want.mean(), rel=1e-12)
    out.loss.backward()
    # k3 = e^{-h} + h - 1, d/dh = 1 - e^{-h} where neither clamp binds (e^{-h} + h - 1 < 10), else 0
    k3 = np.exp(-h) + h - 1.0
    inside = k3 < 10.0
    np.testing.assert_allclose(policy.grad.numpy(), 2.0 * np.where(inside, -np.expm1(-h), 0.0) / h.size,
                               rtol=1e-9, atol=1e-15)  # fmt: skip
    # TRL's k3 (exact) agrees where the clamps do not bind, and keeps growing outside
    exact = grpo.loss(TokenLogps(policy.detach(), torch.tensor(ref)), divergence=get("reverse_kl"),
                      divergence_coef=1.0)  # fmt: skip
    assert exact.penalty.item() == pytest.approx(k3.mean(), rel=1e-9)
    assert h[inside].min() == pytest.approx(-2.6, abs=0.06) and h[inside].max() == pytest.approx(11.0, abs=0.06)
    small = torch.tensor(ref[inside] + h[inside])
    both = [grpo.loss(TokenLogps(small, torch.tensor(ref[inside])), divergence=get("reverse_kl"),
                      kl_estimator=e).penalty.item() for e in ("exact", "low_var_kl")]  # fmt: skip
    assert both[0] == pytest.approx(both[1], rel=1e-12)


@pytest.mark.parametrize("divergence", ["js", "alpha"])
def test_low_var_kl_is_refused_where_dph_rl_does_not_define_it(divergence):
    from alignctl.config import compose
    from alignctl.errors import UsageError

    with pytest.raises(UsageError, match=f"objective.kl_estimator=low_var_kl applies to divergence=forward_kl or reverse_kl .*"
                                         f"not divergence={divergence}"):  # fmt: skip
        compose.compose_one(["objective=grpo", f"divergence={divergence}", "objective.kl_estimator=low_var_kl",
                             "dataset=toy_arith", "reward=exact_match"])  # fmt: skip
    with pytest.raises(ValueError, match="applies to divergence=forward_kl"):
        grpo.loss(TokenLogps(torch.zeros(2), torch.zeros(2)), divergence=get(divergence, 0.5 if divergence == "alpha"
                  else None), kl_estimator="low_var_kl")  # fmt: skip
    with pytest.raises(UsageError, match="objective.kl_estimator='clamped' is not valid; choose one of: exact, low_var_kl"):
        compose.compose_one(["objective=grpo", "objective.kl_estimator=clamped", "dataset=toy_arith",
                             "reward=exact_match"])  # fmt: skip
