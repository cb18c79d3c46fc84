"""fdpo: the f-DPO paper's objective; checked against TRL 1.16's convention re-derived in numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignctl.objectives import fdpo
from alignctl.objectives.base import PreferenceLogps

from ._helpers import (DIV_IDS, DIVERGENCES, LOG2, LOW_PRECISION, assert_finite, div, extreme_pairs, grads,
                       neg_log_sigmoid, np_, random_pairs)


def trl_scores(name: str, h: np.ndarray, alpha: float | None) -> np.ndarray:
    """TRL 1.16 DPOTrainer scores, written from its source; its f_alpha_divergence_coef is 1 - alpha_paper."""
    if name == "reverse_kl":
        return h
    if name == "forward_kl":
        return 1.0 - np.exp(-h)
    if name == "js":
        return math.log(2.0) - np.log1p(np.exp(-h))
    coef = 1.0 - alpha
    return (np.exp((coef - 1.0) * h) - 1.0) / (coef - 1.0)


def np_loss(leaves, name, alpha, beta):
    h_w = np_(leaves["policy_chosen_logps"]) - np_(leaves["ref_chosen_logps"])
    h_l = np_(leaves["policy_rejected_logps"]) - np_(leaves["ref_rejected_logps"])
    return neg_log_sigmoid(beta * (trl_scores(name, h_w, alpha) - trl_scores(name, h_l, alpha)))


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_matches_trl_convention_value_and_finite_difference_gradient(name, alpha):
    beta = 0.5
    logps, leaves = random_pairs(seed=11)
    out = fdpo.loss(logps, divergence=div(name, alpha), beta=beta)
    np.testing.assert_allclose(np_(out.losses), np_loss(leaves, name, alpha, beta), rtol=1e-10)
    g = grads(out.losses, leaves)
    eps = 1e-6
    for key in ("policy_chosen_logps", "policy_rejected_logps"):
        plus = {k: v.detach().clone() for k, v in leaves.items()}
        minus = {k: v.detach().clone() for k, v in leaves.items()}
        plus[key] += eps
        minus[key] -= eps
        fd = (np_loss(plus, name, alpha, beta) - np_loss(minus, name, alpha, beta)) / (2 * eps)
        np.testing.assert_allclose(np_(g[key]), fd, rtol=1e-6, atol=1e-9)


def test_default_divergence_is_js():
    logps, _ = random_pairs(seed=12)
    torch.testing.assert_close(fdpo.loss(logps, divergence=None).losses, fdpo.loss(logps, divergence=div("js")).losses)
    assert fdpo.OBJECTIVE.default_divergence == "js"
    assert set(fdpo.OBJECTIVE.divergences) == {"reverse_kl", "forward_kl", "js", "alpha"}


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_log2_and_gradient_at_reference(name, alpha):
    beta = 0.2
    logps, leaves = random_pairs(seed=13, scale=0.0)
    out = fdpo.loss(logps, divergence=div(name, alpha), beta=beta)
    torch.testing.assert_close(out.losses, torch.full_like(out.losses, LOG2), rtol=0, atol=1e-14)
    g = grads(out.losses, leaves)
    expected = beta / 4 if name == "js" else beta / 2  # d f'(e^h)/dh at h = 0: 1/2 for JS, 1 otherwise
    torch.testing.assert_close(g["policy_chosen_logps"], torch.full_like(out.losses, -expected), rtol=0, atol=1e-14)
    torch.testing.assert_close(g["policy_rejected_logps"], torch.full_like(out.losses, expected), rtol=0, atol=1e-14)
    assert (out.chosen_rewards == 0).all() and (out.rejected_rewards == 0).all()


@pytest.mark.parametrize("name,ceiling", [("forward_kl", 1.0), ("js", LOG2), ("alpha", 1 / 0.5)])
def test_bounded_rewards(name, ceiling):
    """Only reverse KL has an unbounded implicit reward: beta f'(u) saturates at beta * ceiling."""
    big = torch.tensor([200.0], dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    one = torch.ones(1)
    out = fdpo.loss(PreferenceLogps(big, zero, one, one, zero, zero), divergence=div(name, 0.5 if name == "alpha" else None), beta=1.0)
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([ceiling], dtype=torch.float64))


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_finite_at_extreme_log_ratios(name, alpha, dtype):
    logps, leaves = extreme_pairs(dtype)
    assert_finite(fdpo.loss(logps, divergence=div(name, alpha), beta=0.1), leaves)


def test_registry_entry():
    from alignctl.divergences import NAMES

    from ._helpers import check_entry

    check_entry(
        "fdpo", defaults={"beta": 0.1}, data="pairs", needs_reference=True, divergences=set(NAMES),
        default_divergence="js",
    )
