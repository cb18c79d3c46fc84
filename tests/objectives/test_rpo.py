"""rpo (Liu et al.): DPO + eta beta (-l_theta(y_w)), summed NLL."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignctl.objectives import dpo, rpo

from ._helpers import (LOG2, LOW_PRECISION, assert_finite, div, extreme_pairs, grads, neg_log_sigmoid, np_,
                       random_pairs, sigmoid)


def test_value_and_gradient():
    beta, eta = 0.2, 0.3
    logps, leaves = random_pairs(seed=61)
    out = rpo.loss(logps, divergence=div("reverse_kl"), beta=beta, eta=eta)
    pw = np_(leaves["policy_chosen_logps"])
    h_w = pw - np_(leaves["ref_chosen_logps"])
    h_l = np_(leaves["policy_rejected_logps"]) - np_(leaves["ref_rejected_logps"])
    z = beta * (h_w - h_l)
    np.testing.assert_allclose(np_(out.losses), neg_log_sigmoid(z) - eta * beta * pw, rtol=1e-12)
    g, s = grads(out.losses, leaves), sigmoid(-z)
    np.testing.assert_allclose(np_(g["policy_chosen_logps"]), -beta * s - eta * beta, rtol=1e-12)
    np.testing.assert_allclose(np_(g["policy_rejected_logps"]), beta * s, rtol=1e-12)
    np.testing.assert_allclose(np_(g["ref_chosen_logps"]), beta * s, rtol=1e-12)
    np.testing.assert_allclose(np_(out.chosen_rewards), beta * h_w, rtol=1e-12)


def test_eta_zero_is_dpo():
    logps, leaves = random_pairs(seed=62)
    a, b = rpo.loss(logps, divergence=None, beta=0.1, eta=0.0), dpo.loss(logps, divergence=None, beta=0.1)
    torch.testing.assert_close(a.losses, b.losses, rtol=0, atol=0)
    ga, gb = grads(a.losses, leaves), grads(b.losses, leaves)
    torch.testing.assert_close(ga["policy_chosen_logps"], gb["policy_chosen_logps"], rtol=0, atol=0)


def test_at_reference_is_log2_plus_summed_nll():
    logps, _ = random_pairs(seed=63, scale=0.0)
    out = rpo.loss(logps, divergence=None)  # defaults beta = 0.01, eta = 0.005
    expected = LOG2 + 0.005 * 0.01 * (-logps.policy_chosen_logps.detach())
    torch.testing.assert_close(out.losses, expected, rtol=1e-14, atol=1e-14)


def test_only_reverse_kl():
    logps, _ = random_pairs(seed=64)
    with pytest.raises(ValueError, match="not accepted"):
        rpo.loss(logps, divergence=div("js"))


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_finite_at_extreme_log_ratios(dtype):
    logps, leaves = extreme_pairs(dtype)
    assert_finite(rpo.loss(logps, divergence=div("reverse_kl")), leaves)


def test_registry_entry():
    from ._helpers import check_entry

    check_entry(
        "rpo", defaults={"beta": 0.01, "eta": 0.005}, data="pairs", needs_reference=True, divergences={"reverse_kl"},
        default_divergence="reverse_kl",
    )
