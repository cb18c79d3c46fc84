"""ipo: (Delta - 1/(2 tau))^2 on length-normalised f'(u) scores, as TRL 1.16 computes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignctl.objectives import ipo
from alignctl.objectives.base import PreferenceLogps

from ._helpers import (DIV_IDS, DIVERGENCES, LOW_PRECISION, assert_finite, dfprime_dh, div, extreme_pairs, grads, np_,
                       random_pairs, reward_u)


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_value_and_gradient(name, alpha):
    tau = 0.3
    logps, leaves = random_pairs(seed=21)
    out = ipo.loss(logps, divergence=div(name, alpha), tau=tau)
    u_w = np.exp(np_(leaves["policy_chosen_logps"]) - np_(leaves["ref_chosen_logps"]))
    u_l = np.exp(np_(leaves["policy_rejected_logps"]) - np_(leaves["ref_rejected_logps"]))
    n_w, n_l = logps.chosen_lengths.double().numpy(), logps.rejected_lengths.double().numpy()
    # f' must be the standardised one (f'(1) = 0, as TRL's scores): with lengths the constant no longer cancels
    delta = reward_u(name, u_w, alpha) / n_w - reward_u(name, u_l, alpha) / n_l
    np.testing.assert_allclose(np_(out.losses), (delta - 1 / (2 * tau)) ** 2, rtol=1e-10)
    g = grads(out.losses, leaves)
    outer = 2 * (delta - 1 / (2 * tau))
    np.testing.assert_allclose(np_(g["policy_chosen_logps"]), outer * dfprime_dh(name, u_w, alpha) / n_w, rtol=1e-10)
    np.testing.assert_allclose(np_(g["policy_rejected_logps"]), -outer * dfprime_dh(name, u_l, alpha) / n_l, rtol=1e-10)
    np.testing.assert_allclose(np_(g["ref_rejected_logps"]), outer * dfprime_dh(name, u_l, alpha) / n_l, rtol=1e-10)
    # rewards: tau * score, so their margin is tau * Delta
    np.testing.assert_allclose(np_(out.chosen_rewards - out.rejected_rewards), tau * delta, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
@pytest.mark.parametrize("tau,expected", [(0.1, 25.0), (0.5, 1.0), (2.0, 1 / 16)])
def test_value_and_gradient_at_reference(name, alpha, tau, expected):
    logps, leaves = random_pairs(seed=22, scale=0.0)
    out = ipo.loss(logps, divergence=div(name, alpha), tau=tau)
    torch.testing.assert_close(out.losses, torch.full_like(out.losses, expected), rtol=1e-12, atol=0)
    g = grads(out.losses, leaves)
    slope = 0.5 if name == "js" else 1.0
    torch.testing.assert_close(g["policy_chosen_logps"], -slope / tau / logps.chosen_lengths.double())


def test_length_normalisation_and_default():
    """Delta divides each sequence log-ratio by its completion length (TRL); divergence None is reverse_kl."""
    h = torch.tensor([4.0, 4.0], dtype=torch.float64)
    zero = torch.zeros(2, dtype=torch.float64)
    lengths_w, lengths_l = torch.tensor([1, 4]), torch.tensor([1, 1])
    out = ipo.loss(PreferenceLogps(h, zero, lengths_w, lengths_l, zero, zero), divergence=None, tau=0.1)
    torch.testing.assert_close(out.losses, torch.tensor([(4.0 - 5.0) ** 2, (1.0 - 5.0) ** 2], dtype=torch.float64))
    # zero-length completions count as one token instead of dividing by zero
    out0 = ipo.loss(PreferenceLogps(h, zero, torch.tensor([0, 0]), lengths_l, zero, zero), divergence=None, tau=0.1)
    torch.testing.assert_close(out0.losses, torch.full((2,), 1.0, dtype=torch.float64))


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_finite_at_extreme_log_ratios(name, alpha, dtype):
    logps, leaves = extreme_pairs(dtype)
    assert_finite(ipo.loss(logps, divergence=div(name, alpha), tau=0.1), leaves)


def test_registry_entry():
    from alignctl.divergences import NAMES

    from ._helpers import check_entry

    check_entry(
        "ipo", defaults={"tau": 0.1}, data="pairs", needs_reference=True, divergences=set(NAMES),
        default_divergence="reverse_kl",
    )
