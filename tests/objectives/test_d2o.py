"""d2o: -log sigmoid((beta/K) sum_i h(y_i) - alpha h(y_l)); K self-samples vs one human negative."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignctl.objectives import d2o, dpo
from alignctl.objectives.base import NegativeLogps

from ._helpers import LOW_PRECISION, assert_finite, div, grads, neg_log_sigmoid, np_, random_pairs, sigmoid


def _negatives(seed, batch=4, k=3, scale=2.0, mask=None):
    g = torch.Generator().manual_seed(seed)
    ref_s = -torch.rand(batch, k, generator=g, dtype=torch.float64) * 30 - 5
    ref_n = -torch.rand(batch, generator=g, dtype=torch.float64) * 30 - 5
    leaves = {
        "policy_negative_logps": ref_n + torch.randn(batch, generator=g, dtype=torch.float64) * scale,
        "ref_negative_logps": ref_n,
        "policy_sample_logps": ref_s + torch.randn(batch, k, generator=g, dtype=torch.float64) * scale,
        "ref_sample_logps": ref_s,
    }
    leaves = {k_: v.requires_grad_() for k_, v in leaves.items()}
    return NegativeLogps(**leaves, sample_mask=mask), leaves


def test_value_gradient_and_rewards():
    beta, alpha, k = 0.3, 0.2, 4
    n, leaves = _negatives(91, k=k)
    out = d2o.loss(n, divergence=None, beta=beta, alpha=alpha)
    h_s = np_(leaves["policy_sample_logps"]) - np_(leaves["ref_sample_logps"])
    h_n = np_(leaves["policy_negative_logps"]) - np_(leaves["ref_negative_logps"])
    z = beta / k * h_s.sum(-1) - alpha * h_n
    np.testing.assert_allclose(np_(out.losses), neg_log_sigmoid(z), rtol=1e-12)
    g, s = grads(out.losses, leaves), sigmoid(-z)
    # raises each self-sample's likelihood with weight beta/K, lowers the negative's with weight alpha
    np.testing.assert_allclose(np_(g["policy_sample_logps"]), np.repeat((-beta / k * s)[:, None], k, 1), rtol=1e-12)
    np.testing.assert_allclose(np_(g["policy_negative_logps"]), alpha * s, rtol=1e-12)
    np.testing.assert_allclose(np_(g["ref_negative_logps"]), -alpha * s, rtol=1e-12)
    np.testing.assert_allclose(np_(out.chosen_rewards), beta / k * h_s.sum(-1), rtol=1e-12)
    np.testing.assert_allclose(np_(out.rejected_rewards), alpha * h_n, rtol=1e-12)


def test_k1_alpha_equal_beta_is_dpo():
    logps, leaves = random_pairs(seed=92)
    n = NegativeLogps(leaves["policy_rejected_logps"], leaves["ref_rejected_logps"],
                      leaves["policy_chosen_logps"][:, None], leaves["ref_chosen_logps"][:, None])
    a, b = d2o.loss(n, divergence=None, beta=0.1, alpha=0.1), dpo.loss(logps, divergence=None, beta=0.1)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-15)
    ga, gb = grads(a.losses, leaves), grads(b.losses, leaves)
    for key in leaves:
        torch.testing.assert_close(ga[key], gb[key], rtol=1e-13, atol=1e-15)


def test_log2_at_reference():
    n, _ = _negatives(93, scale=0.0)
    torch.testing.assert_close(d2o.loss(n, divergence=None).losses, torch.full((4,), math.log(2), dtype=torch.float64))


def test_sample_mask_equals_fewer_samples():
    n, leaves = _negatives(94, k=2)
    pad = lambda t: torch.cat([t.detach(), torch.full_like(t.detach(), float("nan"))], -1)  # noqa: E731
    padded = NegativeLogps(n.policy_negative_logps, n.ref_negative_logps, pad(n.policy_sample_logps),
                           pad(n.ref_sample_logps), sample_mask=torch.tensor([[True, True, False, False]] * 4))
    torch.testing.assert_close(d2o.loss(padded, divergence=None).losses, d2o.loss(n, divergence=None).losses)


def test_only_reverse_kl_and_negatives_data():
    n, _ = _negatives(95)
    with pytest.raises(ValueError):
        d2o.loss(n, divergence=div("js"))
    assert d2o.OBJECTIVE.data == "negatives"


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_finite_at_extreme_log_ratios(dtype):
    hs = torch.tensor([[-1000.0, 1000.0, 0.0], [1000.0, 1000.0, 1000.0], [-1000.0, -1000.0, -1000.0], [0.0, 30.0, -30.0]])
    hn = torch.tensor([1000.0, -1000.0, 1000.0, -1000.0])
    leaves = {"policy_negative_logps": (hn - 10).to(dtype).requires_grad_(),
              "ref_negative_logps": torch.full((4,), -10.0).to(dtype).requires_grad_(),
              "policy_sample_logps": (hs - 10).to(dtype).requires_grad_(),
              "ref_sample_logps": torch.full((4, 3), -10.0).to(dtype).requires_grad_()}
    assert_finite(d2o.loss(NegativeLogps(**leaves), divergence=None), leaves)


def test_registry_entry():
    from ._helpers import check_entry

    check_entry(
        "d2o", defaults={"beta": 0.1, "alpha": 0.1}, data="negatives", needs_reference=True, divergences={"reverse_kl"},
        default_divergence="reverse_kl",
    )
