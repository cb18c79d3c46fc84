"""tdpo1: -log sigmoid(beta (h_w - h_l + K_w - K_l)); value and gradient against hand derivations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignctl.objectives import dpo, tdpo1

from ._helpers import (DIV_IDS, DIVERGENCES, LOG2, LOW_PRECISION, assert_finite, div, extreme_pairs, grads,
                       neg_log_sigmoid, np_, random_pairs, sigmoid)
from ._token import random_logits, token_batch


def test_value_gradient_and_rewards():
    beta = 0.4
    logps, leaves = random_pairs(seed=31, seq_kl=True)
    out = tdpo1.loss(logps, divergence=div("forward_kl"), beta=beta)
    h_w = np_(leaves["policy_chosen_logps"]) - np_(leaves["ref_chosen_logps"])
    h_l = np_(leaves["policy_rejected_logps"]) - np_(leaves["ref_rejected_logps"])
    k_w, k_l = np_(leaves["chosen_seq_kl"]), np_(leaves["rejected_seq_kl"])
    z = beta * (h_w - h_l + k_w - k_l)
    np.testing.assert_allclose(np_(out.losses), neg_log_sigmoid(z), rtol=1e-12)
    g, s = grads(out.losses, leaves), sigmoid(-z)
    np.testing.assert_allclose(np_(g["policy_chosen_logps"]), -beta * s, rtol=1e-12)
    np.testing.assert_allclose(np_(g["policy_rejected_logps"]), beta * s, rtol=1e-12)
    np.testing.assert_allclose(np_(g["chosen_seq_kl"]), -beta * s, rtol=1e-12)
    np.testing.assert_allclose(np_(g["rejected_seq_kl"]), beta * s, rtol=1e-12)
    np.testing.assert_allclose(np_(out.chosen_rewards), beta * (h_w + k_w), rtol=1e-12)
    np.testing.assert_allclose(np_(out.rejected_rewards), beta * (h_l + k_l), rtol=1e-12)


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_log2_at_reference_and_first_step_gradient_is_dpo(name, alpha):
    """pi = pi_ref: K = 0 (its minimum, zero gradient), loss log 2, and the logits' gradient equals DPO's."""
    d = div(name, alpha)
    (lw, tw), (ll, tl) = random_logits(1), random_logits(2)
    pol_w, pol_l = lw.clone().requires_grad_(), ll.clone().requires_grad_()
    batch = token_batch(pol_w, pol_l, lw, ll, tw, tl, d)
    assert batch.chosen_seq_kl.abs().max() < 1e-12 and batch.rejected_seq_kl.abs().max() < 1e-12
    out = tdpo1.loss(batch, divergence=d, beta=0.1)
    torch.testing.assert_close(out.losses, torch.full_like(out.losses, LOG2), rtol=0, atol=1e-12)
    g_tdpo = torch.autograd.grad(out.losses.sum(), [pol_w, pol_l])
    batch = token_batch(pol_w, pol_l, lw, ll, tw, tl, d)
    g_dpo = torch.autograd.grad(dpo.loss(batch, divergence=div("reverse_kl"), beta=0.1).losses.sum(), [pol_w, pol_l])
    for a, b in zip(g_tdpo, g_dpo):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        assert a.abs().max() > 1e-4


def test_kl_gradient_reaches_the_logits_away_from_reference():
    """Away from pi = pi_ref the sequential KL does change the gradient (the previous test could fail)."""
    d = div("forward_kl")
    (lw, tw), (ll, tl) = random_logits(3), random_logits(4)
    pol_w, pol_l = (lw + 0.5 * random_logits(5)[0]).requires_grad_(), ll.clone().requires_grad_()
    g_tdpo = torch.autograd.grad(tdpo1.loss(token_batch(pol_w, pol_l, lw, ll, tw, tl, d), divergence=d).losses.sum(), pol_w)
    g_dpo = torch.autograd.grad(dpo.loss(token_batch(pol_w, pol_l, lw, ll, tw, tl, d), divergence=None).losses.sum(), pol_w)
    assert (g_tdpo[0] - g_dpo[0]).abs().max() > 1e-6


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_accepts_every_divergence_and_defaults_to_forward_kl(name, alpha):
    logps, _ = random_pairs(seed=32, seq_kl=True)
    a = tdpo1.loss(logps, divergence=div(name, alpha))
    b = tdpo1.loss(logps, divergence=None)  # the token term is the trainer's; the loss only consumes K
    torch.testing.assert_close(a.losses, b.losses)
    assert tdpo1.OBJECTIVE.default_divergence == "forward_kl" and tdpo1.OBJECTIVE.needs_token_divergence


def test_missing_seq_kl_is_an_error():
    logps, _ = random_pairs(seed=33)
    with pytest.raises(ValueError, match="seq_kl"):
        tdpo1.loss(logps, divergence=None)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_finite_at_extreme_log_ratios(name, alpha, dtype):
    logps, leaves = extreme_pairs(dtype, seq_kl=True)
    assert_finite(tdpo1.loss(logps, divergence=div(name, alpha)), leaves)


def test_registry_entry():
    from alignctl.divergences import NAMES

    from ._helpers import check_entry

    check_entry(
        "tdpo1", defaults={"beta": 0.1}, data="pairs", needs_reference=True, divergences=set(NAMES),
        default_divergence="forward_kl",
    )
