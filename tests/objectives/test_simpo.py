"""simpo: -log sigmoid(beta (lbar_w - lbar_l) - gamma), reference-free."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignctl.objectives import simpo
from alignctl.objectives.base import PreferenceLogps

from ._helpers import LOW_PRECISION, assert_finite, div, extreme_pairs, grads, neg_log_sigmoid, np_, sigmoid


def _pairs(seed=0, batch=6):
    g = torch.Generator().manual_seed(seed)
    leaves = {"policy_chosen_logps": (-torch.rand(batch, generator=g, dtype=torch.float64) * 40).requires_grad_(),
              "policy_rejected_logps": (-torch.rand(batch, generator=g, dtype=torch.float64) * 40).requires_grad_()}
    n_w, n_l = torch.randint(1, 20, (batch,), generator=g), torch.randint(1, 20, (batch,), generator=g)
    return PreferenceLogps(leaves["policy_chosen_logps"], leaves["policy_rejected_logps"], n_w, n_l), leaves


def test_value_gradient_and_rewards():
    beta, ratio = 2.5, 0.3
    logps, leaves = _pairs(seed=51)
    out = simpo.loss(logps, divergence=None, beta=beta, gamma_beta_ratio=ratio)
    n_w, n_l = logps.chosen_lengths.double().numpy(), logps.rejected_lengths.double().numpy()
    lw, ll = np_(leaves["policy_chosen_logps"]) / n_w, np_(leaves["policy_rejected_logps"]) / n_l
    # the reference code's path: logits = lbar_w - lbar_l - gamma/beta, loss = -log sigmoid(beta logits)
    z = beta * (lw - ll - ratio)
    np.testing.assert_allclose(np_(out.losses), neg_log_sigmoid(z), rtol=1e-12)
    g, s = grads(out.losses, leaves), sigmoid(-z)
    np.testing.assert_allclose(np_(g["policy_chosen_logps"]), -beta * s / n_w, rtol=1e-12)
    np.testing.assert_allclose(np_(g["policy_rejected_logps"]), beta * s / n_l, rtol=1e-12)
    np.testing.assert_allclose(np_(out.chosen_rewards), beta * lw, rtol=1e-12)
    np.testing.assert_allclose(np_(out.rejected_rewards), beta * ll, rtol=1e-12)


def test_equal_mean_logprobs_give_log_one_plus_exp_gamma():
    # lbar_w = lbar_l = -2 with different lengths; gamma = beta * ratio = 2.0 * 0.5 = 1
    logps = PreferenceLogps(torch.tensor([-6.0, -20.0]), torch.tensor([-2.0, -40.0]), torch.tensor([3, 10]), torch.tensor([1, 20]))
    out = simpo.loss(logps, divergence=None)
    torch.testing.assert_close(out.losses, torch.full((2,), math.log1p(math.e)))
    assert abs(out.losses[0].item() - 1.3133) < 1e-4


def test_defaults_and_no_divergence():
    assert simpo.OBJECTIVE.divergences == () and not simpo.OBJECTIVE.needs_reference
    logps, _ = _pairs(seed=52)
    with pytest.raises(ValueError, match="no divergence"):
        simpo.loss(logps, divergence=div("reverse_kl"))


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_finite_at_extreme_log_probs(dtype):
    logps, leaves = extreme_pairs(dtype, reference=False)
    assert_finite(simpo.loss(logps, divergence=None), leaves)


def test_registry_entry():
    from ._helpers import check_entry

    check_entry(
        "simpo", defaults={"beta": 2.0, "gamma_beta_ratio": 0.5}, data="pairs", needs_reference=False, divergences=set(),
        default_divergence="none",
    )
