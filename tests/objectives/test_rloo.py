"""RLOO (objectives.rloo): leave-one-out advantages and the loss against an independent numpy re-derivation (value and
gradient) and against TRL 1.16's own RLOOTrainer._compute_loss on one batch."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from alignctl.divergences import NAMES, get
from alignctl.objectives import rloo
from alignctl.objectives.rloo import RlooLogps

K = 4  # completions per prompt
G = 3  # prompts


def batch(seed=0, *, ratio_scale=0.3, rewards=None, dtype=torch.float64, clip=(0.2, 0.28)) -> RlooLogps:
    """G groups of K completions (contiguous, as TRL lays them out), T = 6 tokens, a ragged mask (one completion has
    no real token), pi_old away from pi_theta so the ratio and the clip matter."""
    g = torch.Generator().manual_seed(seed)
    b, t = G * K, 6
    policy = -3 * torch.rand(b, t, generator=g, dtype=dtype)
    old = policy + ratio_scale * torch.randn(b, t, generator=g, dtype=dtype)
    ref = policy + 0.5 * torch.randn(b, t, generator=g, dtype=dtype)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[5] = 0
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    if rewards is None:
        rewards = torch.randint(0, 3, (b,), generator=g).to(dtype)
    group_ids = torch.arange(b) // K
    return RlooLogps(policy.requires_grad_(True), old, mask, rewards, group_ids, ref_logps=ref,
                     clip_low=clip[0], clip_high=clip[1])  # fmt: skip


# ---- the re-derivation: plain numpy, loops over groups ----------------------------------------------------------


def np_advantages(s: RlooLogps, coef: float, kl: bool, normalize: bool) -> np.ndarray:
    r = s.rewards.numpy().astype(np.float64).copy()
    m = s.mask.numpy()
    if kl:  # the paper's R(x, y) = r(x, y) - beta log(pi(y|x) / pi_ref(y|x)), log-probs of pi_old
        r = r - coef * ((s.old_logps.numpy() - s.ref_logps.numpy()) * m).sum(1)
    a = np.full_like(r, np.nan)
    ids = s.group_ids.numpy()
    for i in range(len(r)):
        others = [r[j] for j in range(len(r)) if ids[j] == ids[i] and j != i and not np.isnan(r[j])]
        if not np.isnan(r[i]) and others:
            a[i] = r[i] - np.mean(others)
    if normalize:
        a = (a - np.nanmean(a)) / (np.nanstd(a, ddof=1) + 1e-4)
    return np.nan_to_num(a, nan=0.0)


def np_loss_and_grad(s: RlooLogps, adv: np.ndarray) -> tuple[float, np.ndarray]:
    p, o, m = s.policy_logps.detach().numpy(), s.old_logps.numpy(), s.mask.numpy()
    rho = np.exp((p * m).sum(1) - (o * m).sum(1))
    lo, hi = 1 - s.clip_low, 1 + s.clip_high
    unclipped, clipped = rho * adv, np.clip(rho, lo, hi) * adv
    value = float(np.mean(-np.minimum(unclipped, clipped)))
    # d/dl_t of -min(rho A, clip(rho) A) / B: -A rho m_t / B where the unclipped branch is the min (or rho inside
    # the range), 0 where the clipped constant is
    live = (unclipped <= clipped) | ((rho >= lo) & (rho <= hi))
    grad = -(np.where(live, adv * rho, 0.0))[:, None] * m / len(adv)
    return value, grad


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("divergence", ["reverse_kl", "forward_kl", "js", "none"])
def test_advantages_loss_and_gradient_match_a_numpy_re_derivation(divergence, normalize):
    s = batch()
    d = None if divergence == "none" else get(divergence)
    out = rloo.loss(s, divergence=d, divergence_coef=0.3, normalize_advantages=normalize)
    adv = np_advantages(s, 0.3, kl=divergence == "reverse_kl", normalize=normalize)
    got = rloo.advantages(s, divergence=d, divergence_coef=0.3, normalize_advantages=normalize).advantages
    np.testing.assert_allclose(got.numpy(), adv, rtol=1e-12, atol=1e-12)
    value, grad = np_loss_and_grad(s, adv)
    assert out.loss.item() == pytest.approx(value, rel=1e-12)
    out.loss.backward()
    np.testing.assert_allclose(s.policy_logps.grad.numpy(), grad, rtol=1e-10, atol=1e-14)
    clipped = out.stats["clip_ratio"].item()
    assert 0.0 < clipped < 1.0  # the batch exercises both branches


def test_leave_one_out_is_k_over_k_minus_1_times_the_centred_reward():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0], dtype=torch.float64)
    ids = torch.tensor([7, 7, 7, 7, 3, 3])
    a = rloo.leave_one_out(r, ids)
    np.testing.assert_allclose(a[:4].numpy(), 4 / 3 * (r[:4] - r[:4].mean()).numpy(), rtol=1e-12)
    assert (a[4:] == 0).all()  # equal rewards: no signal


def test_unscorable_completions_leave_their_siblings_baselines_and_get_zero_advantage():
    rewards = torch.tensor([1.0, float("nan"), 0.0, 3.0, 2.0, float("nan"), float("nan"), float("nan"), 5.0] + [1.0] * 3,
                           dtype=torch.float64)  # fmt: skip
    s = batch(rewards=rewards)
    got = rloo.advantages(s, divergence=None, divergence_coef=0.0, normalize_advantages=False).advantages
    np.testing.assert_allclose(got.numpy(), np_advantages(s, 0.0, kl=False, normalize=False), atol=1e-12)
    assert got[0].item() == pytest.approx(1.0 - 1.5) and got[1].item() == 0.0  # baseline over the 2 scored siblings
    assert got[4].item() == 0.0  # the only scored completion of its group: no baseline, no signal
    assert got[8].item() == pytest.approx(5.0 - 1.0)


def test_at_the_first_update_the_gradient_is_reinforce_with_the_leave_one_out_baseline():
    s = batch(ratio_scale=0.0)  # pi_old = pi_theta: ratio 1, no clip
    out = rloo.loss(s, divergence=get("reverse_kl"), divergence_coef=0.1)
    out.loss.backward()
    adv = np_advantages(s, 0.1, kl=True, normalize=False)
    assert out.loss.item() == pytest.approx(-adv.mean(), abs=1e-12)
    np.testing.assert_allclose(s.policy_logps.grad.numpy(), -adv[:, None] * s.mask.numpy() / len(adv), rtol=1e-12)
    assert out.stats["clip_ratio"].item() == 0.0


def test_reverse_kl_needs_reference_logps_and_float32_stays_finite():
    s = batch()
    with pytest.raises(ValueError, match="needs ref_logps"):
        rloo.loss(RlooLogps(s.policy_logps, s.old_logps, s.mask, s.rewards, s.group_ids), divergence=get("reverse_kl"))
    f = batch(dtype=torch.float32)
    out = rloo.loss(f, divergence=get("reverse_kl"))
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


# ---- against TRL's own code -----------------------------------------------------------------------------------


class _Accelerator:
    """What TRL's _compute_loss asks of its accelerator, on one process."""

    def reduce(self, x, reduction="sum"):
        return x

    def gather(self, x):
        return x

    def gather_for_metrics(self, x):
        return x


def trl_rloo_loss(s: RlooLogps, advantages: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """TRL 1.16's RLOOTrainer._compute_loss itself, on a stand-in trainer that hands it `s.policy_logps` as the
    model's per-token log-probs and reads what the method reads: the batch TRL's _generate_and_score_completions
    returns (ids, masks, old_logps = the masked sum of pi_old's, the advantages), the clip range and the metric lists."""
    from trl import RLOOTrainer

    policy = s.policy_logps

    def per_token(model, input_ids, attention_mask, logits_to_keep, **kwargs):
        assert logits_to_keep == policy.shape[1] and input_ids.shape[1] == 2 + logits_to_keep
        return policy, torch.zeros_like(policy), None

    trainer = SimpleNamespace(
        _get_per_token_logps_and_entropies=per_token, aux_loss_enabled=False, epsilon_low=s.clip_low,
        epsilon_high=s.clip_high, model=SimpleNamespace(training=True), accelerator=_Accelerator(),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )  # fmt: skip
    b, t = policy.shape
    inputs = {
        "prompt_ids": torch.ones(b, 2, dtype=torch.long), "prompt_mask": torch.ones(b, 2, dtype=torch.long),
        "completion_ids": torch.ones(b, t, dtype=torch.long), "completion_mask": s.mask,
        "old_logps": (s.old_logps * s.mask).sum(1), "advantages": advantages,
    }  # fmt: skip
    return RLOOTrainer._compute_loss(trainer, None, inputs), trainer._metrics["train"]


@pytest.mark.parametrize("divergence", ["reverse_kl", "none"])
def test_loss_and_gradient_are_trls_rloo_loss(divergence):
    d = None if divergence == "none" else get(divergence)
    mine = batch(seed=3)
    theirs = batch(seed=3)
    out = rloo.loss(mine, divergence=d, divergence_coef=0.2)
    # TRL's advantages (TRL's formula, re-derived above: tests/trainers/test_rloo.py compares them with the
    # advantages TRL's _generate_and_score_completions computes on a generated batch)
    adv = torch.tensor(np_advantages(theirs, 0.2, kl=d is not None, normalize=False))
    trl_loss, metrics = trl_rloo_loss(theirs, adv)
    assert out.loss.item() == pytest.approx(trl_loss.item(), rel=1e-12)
    out.loss.backward()
    trl_loss.backward()
    torch.testing.assert_close(mine.policy_logps.grad, theirs.policy_logps.grad, rtol=1e-12, atol=1e-15)
    assert out.stats["clip_ratio"].item() == pytest.approx(metrics["clip_ratio/region_mean"][0])


def test_registry_entry():
    from ._helpers import check_entry

    check_entry(
        "rloo", defaults={"divergence_coef": 0.05, "normalize_advantages": False}, data="groups",
        needs_reference=False, divergences={*NAMES, "none"}, default_divergence="reverse_kl",
    )  # fmt: skip
    from alignctl.objectives import get as get_objective

    entry = get_objective("rloo")
    assert entry.reads_groups and entry.reference_with == ("reverse_kl",)


def test_trls_defaults_are_the_objectives():
    from trl import RLOOConfig

    args = RLOOConfig(output_dir="/tmp/unused", use_cpu=True, report_to=[])
    assert (args.beta, args.normalize_advantages, args.epsilon) == (0.05, False, 0.2)
