"""kto: lambda_y (1 - sigmoid(beta * (+-(h - z0)))), z0 = max(0, mean KL log-ratio of mismatched pairs), detached.

Checked against a numpy re-derivation (value and gradient, float64) and against TRL 1.16's KTOTrainer on one batch.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from alignctl.objectives import kto
from alignctl.objectives.base import BinaryLogps

from ._helpers import EXTREMES, LOW_PRECISION, check_entry, div, grads, np_, sigmoid

LABELS = [True, False, True, True, False, False, True]


def _binary(seed: int, scale: float = 2.0, kl_shift: float = 0.5, labels=LABELS, dtype=torch.float64):
    """Random rows (leaves requiring grad) with mismatched-pair log-probs whose mean log-ratio is about kl_shift."""
    g = torch.Generator().manual_seed(seed)
    n = len(labels)
    ref = -torch.rand(n, generator=g, dtype=torch.float64) * 30 - 5
    ref_kl = -torch.rand(n, generator=g, dtype=torch.float64) * 30 - 5
    leaves = {
        "policy_logps": ref + torch.randn(n, generator=g, dtype=torch.float64) * scale,
        "ref_logps": ref,
        "policy_kl_logps": ref_kl + kl_shift + torch.randn(n, generator=g, dtype=torch.float64) * 0.3,
        "ref_kl_logps": ref_kl,
    }
    leaves = {k: v.to(dtype).requires_grad_() for k, v in leaves.items()}
    return BinaryLogps(labels=torch.tensor(labels), **leaves), leaves


def _numpy_kto(leaves, labels, beta, wd, wu, z0=None):
    """Loss, d loss / d policy_logps and z0, by hand."""
    h = np_(leaves["policy_logps"]) - np_(leaves["ref_logps"])
    if z0 is None:
        z0 = max(0.0, float(np.mean(np_(leaves["policy_kl_logps"]) - np_(leaves["ref_kl_logps"]))))
    y = np.asarray(labels)
    s_d = sigmoid(beta * (h - z0))  # value of a desirable row
    s_u = sigmoid(beta * (z0 - h))  # value of an undesirable row
    loss = np.where(y, wd * (1.0 - s_d), wu * (1.0 - s_u))
    grad = np.where(y, -wd * beta * s_d * (1.0 - s_d), wu * beta * s_u * (1.0 - s_u))
    return loss, grad, z0, beta * h


@pytest.mark.parametrize("kl_shift", [0.5, -0.5], ids=["z0>0", "clamped"])
def test_value_gradient_rewards_and_z0(kl_shift):
    beta, wd, wu = 0.3, 1.0, 1.0
    b, leaves = _binary(seed=1, kl_shift=kl_shift)
    out = kto.loss(b, divergence=div("reverse_kl"), beta=beta, desirable_weight=wd, undesirable_weight=wu)
    loss, grad, z0, rewards = _numpy_kto(leaves, LABELS, beta, wd, wu)
    assert (z0 > 0.2) if kl_shift > 0 else (z0 == 0.0)
    np.testing.assert_allclose(np_(out.losses), loss, rtol=1e-12)
    np.testing.assert_allclose(float(out.kl), z0, rtol=1e-12, atol=0)
    np.testing.assert_allclose(np_(out.rewards), rewards, rtol=1e-12)
    g = grads(out.losses, leaves)
    np.testing.assert_allclose(np_(g["policy_logps"]), grad, rtol=1e-12)
    np.testing.assert_allclose(np_(g["ref_logps"]), -grad, rtol=1e-12)
    # z0 is detached: nothing flows into the mismatched pairs
    assert g["policy_kl_logps"] is None and g["ref_kl_logps"] is None
    assert not out.kl.requires_grad and not out.rewards.requires_grad


def test_given_reference_point_is_used_as_is():
    beta = 0.2
    b, leaves = _binary(seed=2)
    z0 = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    given = BinaryLogps(b.policy_logps, b.ref_logps, b.labels, kl=z0)
    out = kto.loss(given, divergence=None, beta=beta)
    loss, grad, _, _ = _numpy_kto(leaves, LABELS, beta, 1.0, 1.0, z0=1.7)
    np.testing.assert_allclose(np_(out.losses), loss, rtol=1e-12)
    np.testing.assert_allclose(np_(grads(out.losses, {"policy_logps": leaves["policy_logps"]})["policy_logps"]), grad,
                               rtol=1e-12)  # fmt: skip
    assert float(out.kl) == 1.7 and not out.kl.requires_grad
    # the same z0 estimated from mismatched pairs gives the same losses
    estimated = _binary(seed=2)[0]
    shift = 1.7 - (estimated.policy_kl_logps - estimated.ref_kl_logps).mean().item()
    same = BinaryLogps(b.policy_logps, b.ref_logps, b.labels, policy_kl_logps=estimated.policy_kl_logps.detach() + shift,
                       ref_kl_logps=estimated.ref_kl_logps.detach())  # fmt: skip
    torch.testing.assert_close(kto.loss(same, divergence=None, beta=beta).losses, out.losses, rtol=1e-12, atol=1e-14)


def test_without_a_reference_point_it_refuses():
    b, _ = _binary(seed=3)
    with pytest.raises(ValueError, match="reference point"):
        kto.loss(BinaryLogps(b.policy_logps, b.ref_logps, b.labels), divergence=None)


def test_weights_scale_their_own_rows_only():
    b, leaves = _binary(seed=4)
    base = kto.loss(b, divergence=None, beta=0.5).losses
    weighted = kto.loss(b, divergence=None, beta=0.5, desirable_weight=1.33, undesirable_weight=0.4).losses
    y = torch.tensor(LABELS)
    torch.testing.assert_close(weighted[y], 1.33 * base[y], rtol=1e-12, atol=0)
    torch.testing.assert_close(weighted[~y], 0.4 * base[~y], rtol=1e-12, atol=0)
    _, grad, _, _ = _numpy_kto(leaves, LABELS, 0.5, 1.33, 0.4)
    out = kto.loss(b, divergence=None, beta=0.5, desirable_weight=1.33, undesirable_weight=0.4)
    np.testing.assert_allclose(np_(grads(out.losses, leaves)["policy_logps"]), grad, rtol=1e-12)


def test_half_at_the_reference_point_and_directions():
    """At h = z0 every row's loss is lambda/2; raising h lowers a desirable row's loss and raises an undesirable one's."""
    h = torch.linspace(-5, 5, 21, dtype=torch.float64)
    zeros = torch.zeros_like(h)
    for label, sign in ((True, -1), (False, 1)):
        labels = torch.full_like(h, label, dtype=torch.bool)
        out = kto.loss(BinaryLogps(h, zeros, labels, kl=torch.tensor(0.0)), divergence=None, beta=0.3,
                       desirable_weight=2.0, undesirable_weight=3.0).losses  # fmt: skip
        assert (torch.sign(out.diff()) == sign).all()
        assert out[10].item() == pytest.approx((2.0 if label else 3.0) / 2, abs=1e-15)


def test_only_reverse_kl_is_accepted():
    b, _ = _binary(seed=5)
    torch.testing.assert_close(kto.loss(b, divergence=None).losses, kto.loss(b, divergence=div("reverse_kl")).losses,
                               rtol=0, atol=0)  # fmt: skip
    for name, alpha in (("js", None), ("forward_kl", None), ("alpha", 0.5)):
        with pytest.raises(ValueError, match="not accepted by objective=kto"):
            kto.loss(b, divergence=div(name, alpha))


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_finite_at_extreme_log_ratios(dtype):
    h = torch.tensor(EXTREMES * 2, dtype=torch.float64)
    labels = torch.tensor([True] * len(EXTREMES) + [False] * len(EXTREMES))
    ref = torch.full_like(h, -10.0)
    leaves = {"policy_logps": (ref + h).to(dtype).requires_grad_(), "ref_logps": ref.to(dtype).requires_grad_()}
    kl = {"policy_kl_logps": (ref + torch.tensor(EXTREMES * 2)).to(dtype), "ref_kl_logps": ref.to(dtype)}
    out = kto.loss(BinaryLogps(labels=labels, **leaves, **kl), divergence=None, beta=0.1)
    assert out.losses.dtype == torch.float32
    assert torch.isfinite(out.losses).all() and torch.isfinite(out.rewards).all() and torch.isfinite(out.kl)
    g = grads(out.losses, leaves)
    assert all(torch.isfinite(v).all() for v in g.values())


def test_registry_entry():
    check_entry("kto", defaults={"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0}, data="binary",
                needs_reference=True, divergences={"reverse_kl"}, default_divergence="reverse_kl")  # fmt: skip


# --- TRL's own KTO loss on one batch ----------------------------------------------------------------------------
class _Scores:
    """Stands in for a model under TRL's fused LM head: returns given per-sequence log-probs as one token's."""

    def __init__(self, logps: torch.Tensor, kl_logps: torch.Tensor, kl_input_ids: torch.Tensor) -> None:
        self.logps, self.kl_logps, self.kl_input_ids = logps, kl_logps, kl_input_ids

    def __call__(self, *, input_ids, labels, fused_lm_head, **kwargs):
        assert fused_lm_head and labels.shape == input_ids.shape
        values = self.kl_logps if input_ids is self.kl_input_ids else self.logps
        return SimpleNamespace(log_probs=values[:, None], entropy=torch.zeros_like(values)[:, None],
                               mean_logits=torch.zeros_like(values)[:, None])  # fmt: skip


def test_matches_trl_kto_trainer_on_one_batch():
    """TRL 1.16's KTOTrainer._compute_loss (loss_type="kto", precomputed reference log-probs, KL on): its loss,
    gradient, z0 ("kl") and reward metrics, on an object with the attributes it reads."""
    from trl import KTOTrainer

    beta, wd, wu = 0.25, 1.2, 0.8
    b, leaves = _binary(seed=6)
    n = len(LABELS)
    ids = torch.ones(n, 2, dtype=torch.long)
    batch = {
        "input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": torch.tensor([[0, 1]] * n),
        "KL_input_ids": ids.clone(), "KL_attention_mask": torch.ones_like(ids),
        "KL_completion_mask": torch.tensor([[0, 1]] * n), "label": torch.tensor(LABELS),
        "ref_logps": leaves["ref_logps"].detach(), "ref_KL_logps": leaves["ref_kl_logps"].detach(),
    }  # fmt: skip
    policy = leaves["policy_logps"].detach().clone().requires_grad_()
    model = _Scores(policy, leaves["policy_kl_logps"].detach(), batch["KL_input_ids"])
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x),
        calculate_KL=True, precompute_ref_logps=True, loss_type="kto", beta=beta, desirable_weight=wd,
        undesirable_weight=wu, aux_loss_enabled=False, _metrics={"train": defaultdict(list)}, _total_train_tokens=0,
        _tp_size=1,
    )  # fmt: skip
    trainer._compute_kl_logps = lambda m, x: KTOTrainer._compute_kl_logps(trainer, m, x)
    trl_loss = KTOTrainer._compute_loss(trainer, model, batch, return_outputs=False)
    (trl_grad,) = torch.autograd.grad(trl_loss, policy)

    out = kto.loss(b, divergence=None, beta=beta, desirable_weight=wd, undesirable_weight=wu)
    ours = out.losses.mean()
    assert abs(ours.item() - 0.5 * (wd + wu) / 2) > 0.01  # away from every row's value at h = z0
    torch.testing.assert_close(ours.detach(), trl_loss.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grads(ours, leaves)["policy_logps"], trl_grad, rtol=1e-10, atol=1e-14)
    metrics = trainer._metrics["train"]
    y = torch.tensor(LABELS)
    assert metrics["kl"] == [pytest.approx(out.kl.item(), rel=1e-12)]
    assert metrics["rewards/chosen"] == [pytest.approx(out.rewards[y].mean().item(), rel=1e-12)]
    assert metrics["rewards/rejected"] == [pytest.approx(out.rewards[~y].mean().item(), rel=1e-12)]
