"""tdpo2: -log sigmoid(beta (h_w - h_l + alpha (sg(K_w) - K_l))); stop-gradient, alpha = 0 is DPO."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignctl.objectives import dpo, tdpo1, tdpo2

from ._helpers import (DIV_IDS, DIVERGENCES, LOG2, LOW_PRECISION, assert_finite, div, extreme_pairs, grads,
                       neg_log_sigmoid, np_, random_pairs, sigmoid)
from ._token import random_logits, token_batch


def test_value_gradient_and_rewards():
    beta, alpha = 0.3, 0.7
    logps, leaves = random_pairs(seed=41, seq_kl=True)
    out = tdpo2.loss(logps, divergence=div("forward_kl"), beta=beta, alpha=alpha)
    h_w = np_(leaves["policy_chosen_logps"]) - np_(leaves["ref_chosen_logps"])
    h_l = np_(leaves["policy_rejected_logps"]) - np_(leaves["ref_rejected_logps"])
    k_w, k_l = np_(leaves["chosen_seq_kl"]), np_(leaves["rejected_seq_kl"])
    z = beta * (h_w - h_l + alpha * (k_w - k_l))
    np.testing.assert_allclose(np_(out.losses), neg_log_sigmoid(z), rtol=1e-12)
    g, s = grads(out.losses, leaves), sigmoid(-z)
    np.testing.assert_allclose(np_(g["policy_chosen_logps"]), -beta * s, rtol=1e-12)
    np.testing.assert_allclose(np_(g["ref_rejected_logps"]), -beta * s, rtol=1e-12)
    np.testing.assert_allclose(np_(g["rejected_seq_kl"]), alpha * beta * s, rtol=1e-12)
    assert g["chosen_seq_kl"] is None or (g["chosen_seq_kl"] == 0).all()  # stop-gradient
    np.testing.assert_allclose(np_(out.chosen_rewards), beta * (h_w + alpha * k_w), rtol=1e-12)
    np.testing.assert_allclose(np_(out.rejected_rewards), beta * (h_l + alpha * k_l), rtol=1e-12)
    torch.testing.assert_close(out.losses.detach(),
                               -torch.nn.functional.logsigmoid(out.chosen_rewards - out.rejected_rewards))


def test_alpha_zero_is_dpo():
    logps, leaves = random_pairs(seed=42, seq_kl=True)
    a = tdpo2.loss(logps, divergence=None, beta=0.2, alpha=0.0)
    b = dpo.loss(logps, divergence=None, beta=0.2)
    torch.testing.assert_close(a.losses, b.losses, rtol=0, atol=1e-15)  # beta (a - b) vs beta a - beta b rounding
    ga, gb = grads(a.losses, leaves), grads(b.losses, leaves)
    for k in ("policy_chosen_logps", "policy_rejected_logps"):
        torch.testing.assert_close(ga[k], gb[k], rtol=0, atol=1e-15)


def test_alpha_one_has_tdpo1_value_but_not_its_gradient():
    logps, leaves = random_pairs(seed=43, seq_kl=True)
    a, b = tdpo2.loss(logps, divergence=None, alpha=1.0), tdpo1.loss(logps, divergence=None)
    torch.testing.assert_close(a.losses, b.losses, rtol=0, atol=1e-15)
    assert grads(b.losses, leaves)["chosen_seq_kl"].abs().min() > 0  # TDPO1 does push K_w


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_logits_feeding_only_chosen_kl_get_no_gradient(name, alpha):
    """Token level: a copy of the chosen policy logits used only for K_w receives no gradient; K_l's logits do."""
    d = div(name, alpha)
    (lw, tw), (ll, tl) = random_logits(6), random_logits(7)
    pol_w = (lw + 0.3 * random_logits(8)[0]).requires_grad_()
    pol_l = (ll + 0.3 * random_logits(9)[0]).requires_grad_()
    kl_only_w, kl_only_l = pol_w.detach().clone().requires_grad_(), pol_l.detach().clone().requires_grad_()
    base = token_batch(pol_w, pol_l, lw, ll, tw, tl, d)
    kl_src = token_batch(kl_only_w, kl_only_l, lw, ll, tw, tl, d)
    batch = type(base)(**{**base.__dict__, "chosen_seq_kl": kl_src.chosen_seq_kl, "rejected_seq_kl": kl_src.rejected_seq_kl})
    out = tdpo2.loss(batch, divergence=d, beta=0.1, alpha=0.5)
    g_w, g_l = torch.autograd.grad(out.losses.sum(), [kl_only_w, kl_only_l], allow_unused=True)
    assert g_w is None or (g_w == 0).all()
    assert g_l is not None and g_l.abs().max() > 1e-6


def test_log2_at_reference():
    d = div("forward_kl")
    (lw, tw), (ll, tl) = random_logits(10), random_logits(11)
    out = tdpo2.loss(token_batch(lw, ll, lw, ll, tw, tl, d), divergence=d)
    torch.testing.assert_close(out.losses, torch.full_like(out.losses, LOG2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_finite_at_extreme_log_ratios(name, alpha, dtype):
    logps, leaves = extreme_pairs(dtype, seq_kl=True)
    assert_finite(tdpo2.loss(logps, divergence=div(name, alpha)), leaves)


def test_registry_entry():
    from alignctl.divergences import NAMES

    from ._helpers import check_entry

    check_entry(
        "tdpo2", defaults={"beta": 0.1, "alpha": 0.5}, data="pairs", needs_reference=True, divergences=set(NAMES),
        default_divergence="forward_kl",
    )
