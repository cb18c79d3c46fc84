"""asft: NLL(y_w) + lam [-log sigmoid(r_w) - log sigmoid(-r_l)], r = log odds of P = exp(lbar)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignctl.objectives import asft
from alignctl.objectives.base import PreferenceLogps

from ._helpers import LOW_PRECISION, assert_finite, div, extreme_pairs, grads, np_


def _pairs(seed=0, batch=6):
    g = torch.Generator().manual_seed(seed)
    leaves = {"policy_chosen_logps": (-torch.rand(batch, generator=g, dtype=torch.float64) * 30 - 0.1).requires_grad_(),
              "policy_rejected_logps": (-torch.rand(batch, generator=g, dtype=torch.float64) * 30 - 0.1).requires_grad_()}
    n_w, n_l = torch.randint(1, 20, (batch,), generator=g), torch.randint(1, 20, (batch,), generator=g)
    return PreferenceLogps(leaves["policy_chosen_logps"], leaves["policy_rejected_logps"], n_w, n_l), leaves


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def test_value_through_odds_and_gradient():
    lam = 0.4
    logps, leaves = _pairs(seed=71)
    out = asft.loss(logps, divergence=None, lam=lam)
    pw, pl = np_(leaves["policy_chosen_logps"]), np_(leaves["policy_rejected_logps"])
    n_w, n_l = logps.chosen_lengths.double().numpy(), logps.rejected_lengths.double().numpy()
    expected, r_w, r_l = [], [], []
    for a, b, na, nb in zip(pw, pl, n_w, n_l):
        p_w, p_l = math.exp(a / na), math.exp(b / nb)  # the paper's path: probabilities, then log-odds
        rw, rl = math.log(p_w / (1 - p_w)), math.log(p_l / (1 - p_l))
        expected.append(-a / na + lam * (-_log_sigmoid(rw) - _log_sigmoid(-rl)))
        r_w.append(rw)
        r_l.append(rl)
    np.testing.assert_allclose(np_(out.losses), expected, rtol=1e-10)
    np.testing.assert_allclose(np_(out.chosen_rewards), r_w, rtol=1e-10)
    np.testing.assert_allclose(np_(out.rejected_rewards), r_l, rtol=1e-10)
    g = grads(out.losses, leaves)
    np.testing.assert_allclose(np_(g["policy_chosen_logps"]), -(1 + lam) / n_w, rtol=1e-12)
    m = pl / n_l
    np.testing.assert_allclose(np_(g["policy_rejected_logps"]), lam * np.exp(m) / (1 - np.exp(m)) / n_l, rtol=1e-10)


def test_equal_probabilities_and_no_coupling():
    """P_w = P_l = p: bracket -log p - log(1 - p); the two responses' terms do not interact."""
    lam, p = 0.1, 0.3
    lp = math.log(p)
    out = asft.loss(PreferenceLogps(torch.tensor([3 * lp]), torch.tensor([lp]), torch.tensor([3]), torch.tensor([1])),
                    divergence=None, lam=lam)
    torch.testing.assert_close(out.losses, torch.tensor([-lp + lam * (-lp - math.log(1 - p))]))
    lw = torch.tensor([-2.0, -2.0], dtype=torch.float64, requires_grad=True)
    ll = torch.tensor([-1.0, -9.0], dtype=torch.float64, requires_grad=True)
    one = torch.ones(2)
    (g_w,) = torch.autograd.grad(asft.loss(PreferenceLogps(lw, ll, one, one), divergence=None).losses.sum(), lw)
    assert g_w[0] == g_w[1]


def test_default_lambda_and_no_divergence():
    import inspect

    assert inspect.signature(asft.loss).parameters["lam"].default == 0.1
    assert asft.OBJECTIVE.divergences == () and not asft.OBJECTIVE.needs_reference
    logps, _ = _pairs(seed=72)
    with pytest.raises(ValueError):
        asft.loss(logps, divergence=div("js"))


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_finite_at_extreme_log_probs_and_probability_one(dtype):
    logps, leaves = extreme_pairs(dtype, reference=False)  # includes lbar = 0 (P = 1) and impossible +1000
    assert_finite(asft.loss(logps, divergence=None), leaves)


def test_registry_entry():
    from ._helpers import check_entry

    check_entry(
        "asft", defaults={"lam": 0.1}, data="pairs", needs_reference=False, divergences=set(),
        default_divergence="none",
    )
