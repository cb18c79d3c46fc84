"""dpo: plain DPO for reverse_kl, TRL's f-divergence sigmoid loss otherwise; checked against numpy re-derivations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignctl.objectives import dpo, fdpo

from ._helpers import (DIV_IDS, DIVERGENCES, LOG2, LOW_PRECISION, assert_finite, dfprime_dh, div, extreme_pairs,
                       fprime_u, grads, neg_log_sigmoid, np_, random_pairs, reward_u, sigmoid)


def test_reverse_kl_is_plain_dpo_value_and_gradient():
    beta = 0.3
    logps, leaves = random_pairs(seed=1)
    out = dpo.loss(logps, divergence=div("reverse_kl"), beta=beta)
    h_w = np_(leaves["policy_chosen_logps"]) - np_(leaves["ref_chosen_logps"])
    h_l = np_(leaves["policy_rejected_logps"]) - np_(leaves["ref_rejected_logps"])
    z = beta * (h_w - h_l)
    np.testing.assert_allclose(np_(out.losses), neg_log_sigmoid(z), rtol=1e-12)
    g = grads(out.losses, leaves)
    s = sigmoid(-z)
    np.testing.assert_allclose(np_(g["policy_chosen_logps"]), -beta * s, rtol=1e-12)
    np.testing.assert_allclose(np_(g["policy_rejected_logps"]), beta * s, rtol=1e-12)
    np.testing.assert_allclose(np_(g["ref_chosen_logps"]), beta * s, rtol=1e-12)
    np.testing.assert_allclose(np_(g["ref_rejected_logps"]), -beta * s, rtol=1e-12)
    np.testing.assert_allclose(np_(out.chosen_rewards), beta * h_w, rtol=1e-12)
    np.testing.assert_allclose(np_(out.rejected_rewards), beta * h_l, rtol=1e-12)


def test_default_divergence_is_reverse_kl():
    logps, _ = random_pairs(seed=2)
    torch.testing.assert_close(dpo.loss(logps, divergence=None).losses,
                               dpo.loss(logps, divergence=div("reverse_kl")).losses, rtol=0, atol=0)
    assert dpo.OBJECTIVE.default_divergence == "reverse_kl"


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_f_divergence_value_and_gradient_from_u(name, alpha):
    """-log sigmoid(beta (f'(u_w) - f'(u_l))) with f' written from u = e^h, gradient u f''(u) by hand."""
    beta = 0.7
    logps, leaves = random_pairs(seed=3)
    out = dpo.loss(logps, divergence=div(name, alpha), beta=beta)
    u_w = np.exp(np_(leaves["policy_chosen_logps"]) - np_(leaves["ref_chosen_logps"]))
    u_l = np.exp(np_(leaves["policy_rejected_logps"]) - np_(leaves["ref_rejected_logps"]))
    z = beta * (fprime_u(name, u_w, alpha) - fprime_u(name, u_l, alpha))
    np.testing.assert_allclose(np_(out.losses), neg_log_sigmoid(z), rtol=1e-10)
    g = grads(out.losses, leaves)
    s = sigmoid(-z)
    np.testing.assert_allclose(np_(g["policy_chosen_logps"]), -beta * s * dfprime_dh(name, u_w, alpha), rtol=1e-10)
    np.testing.assert_allclose(np_(g["policy_rejected_logps"]), beta * s * dfprime_dh(name, u_l, alpha), rtol=1e-10)
    np.testing.assert_allclose(np_(g["ref_chosen_logps"]), beta * s * dfprime_dh(name, u_w, alpha), rtol=1e-10)
    np.testing.assert_allclose(np_(out.chosen_rewards), beta * reward_u(name, u_w, alpha), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np_(out.rejected_rewards), beta * reward_u(name, u_l, alpha), rtol=1e-10, atol=1e-14)
    # the rewards' margin is the loss's logit
    torch.testing.assert_close(out.losses.detach(),
                               -torch.nn.functional.logsigmoid(out.chosen_rewards - out.rejected_rewards))


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_log2_and_gradient_at_reference(name, alpha):
    beta = 0.1
    logps, leaves = random_pairs(seed=4, scale=0.0)  # policy == reference
    out = dpo.loss(logps, divergence=div(name, alpha), beta=beta)
    torch.testing.assert_close(out.losses, torch.full_like(out.losses, LOG2), rtol=0, atol=1e-14)
    g = grads(out.losses, leaves)
    k = 4 if name == "js" else 2
    torch.testing.assert_close(g["policy_chosen_logps"], torch.full_like(out.losses, -beta / k), rtol=0, atol=1e-14)
    torch.testing.assert_close(g["policy_rejected_logps"], torch.full_like(out.losses, beta / k), rtol=0, atol=1e-14)


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_same_math_as_fdpo(name, alpha):
    logps, _ = random_pairs(seed=5)
    a = dpo.loss(logps, divergence=div(name, alpha), beta=0.2)
    b = fdpo.loss(logps, divergence=div(name, alpha), beta=0.2)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_alpha_limits_approach_reverse_and_forward_kl():
    logps, _ = random_pairs(seed=6)
    rev = dpo.loss(logps, divergence=div("reverse_kl")).losses
    fwd = dpo.loss(logps, divergence=div("forward_kl")).losses
    torch.testing.assert_close(dpo.loss(logps, divergence=div("alpha", 1e-7)).losses, rev, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dpo.loss(logps, divergence=div("alpha", 1 - 1e-7)).losses, fwd, rtol=1e-5, atol=1e-6)
    assert (dpo.loss(logps, divergence=div("alpha", 0.5)).losses - rev).abs().max() > 1e-3  # the limit is not trivial


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_loss_falls_as_chosen_rises_or_rejected_falls(name, alpha):
    h = torch.linspace(-5, 5, 21, dtype=torch.float64)
    zeros = torch.zeros_like(h)
    from alignctl.objectives.base import PreferenceLogps
    ones = torch.ones_like(h)
    up = dpo.loss(PreferenceLogps(h, zeros, ones, ones, zeros, zeros), divergence=div(name, alpha)).losses
    down = dpo.loss(PreferenceLogps(zeros, h, ones, ones, zeros, zeros), divergence=div(name, alpha)).losses
    assert (up.diff() < 0).all() and (down.diff() > 0).all()


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_finite_at_extreme_log_ratios(name, alpha, dtype):
    logps, leaves = extreme_pairs(dtype)
    out = dpo.loss(logps, divergence=div(name, alpha), beta=0.1)
    assert out.losses.dtype == torch.float32
    assert_finite(out, leaves)


def test_bfloat16_matches_float32():
    logps, _ = random_pairs(seed=7, dtype=torch.bfloat16)
    logps32 = type(logps)(**{k: (v.detach().float() if torch.is_tensor(v) and v.is_floating_point() else v)
                             for k, v in logps.__dict__.items()})
    torch.testing.assert_close(dpo.loss(logps, divergence=None).losses, dpo.loss(logps32, divergence=None).losses.detach())


def test_registry_entry():
    from alignctl.divergences import NAMES

    from ._helpers import check_entry

    check_entry(
        "dpo", defaults={"beta": 0.1}, data="pairs", needs_reference=True, divergences=set(NAMES),
        default_divergence="reverse_kl",
    )
