"""DisCO (spec section 7) against an independent numpy re-derivation (never alignctl's own helpers for expectations).

L = -(1/N_q) sum_q J_q + (beta/2) [D - delta]_+^2, D = token mean of (old - policy); groups that are all-correct or
all-wrong have no J_q but count in N_q.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignctl.divergences import get
from alignctl.objectives import disco
from alignctl.objectives.base import GroupLogps

# Non-contiguous, large ids; 13 is all-correct and 5 all-wrong (no J_q, still in N_q).
GROUPS = {907: [1, 0, 1, 0], 13: [1, 1, 1], 2**40: [0, 1, 0], 5: [0, 0, 0, 0], 77: [1, 0]}
T = 7


def make_batch(seed: int = 0, shift: float = 0.2) -> dict[str, np.ndarray]:
    """Shuffled rows, ragged mask, garbage in padding; policy = old - shift + noise, so D ~ shift."""
    rng = np.random.default_rng(seed)
    gids = np.array([g for g, rs in GROUPS.items() for _ in rs], dtype=np.int64)
    rewards = np.array([r for rs in GROUPS.values() for r in rs], dtype=np.float64)
    perm = rng.permutation(len(gids))
    gids, rewards = gids[perm], rewards[perm]
    b = len(gids)
    mask = np.arange(T)[None, :] < rng.integers(1, T + 1, b)[:, None]
    old = -rng.exponential(1.5, (b, T))
    policy = old - shift + rng.normal(0.0, 0.3, (b, T))
    policy[~mask], old[~mask] = 5.0, 0.0  # padding must not leak into scores, D or gradients
    return dict(policy=policy, old=old, mask=mask, rewards=rewards, gids=gids)


def ref_disco(policy, old, mask, rewards, gids, *, score="logL", dro=True, tau=None, delta=1e-4,
              constraint_weight=1e3, positive_threshold=0.5, ratio=None):
    """The spec's formula, written out in numpy float64; `ratio` ([B, T] or [B, 1]), vLLM's importance ratio,
    weighs each token's term of s(o) as TRL's GRPO weighs its per-token loss."""
    tau = {"logL": 10.0, "Lratio": 1.0}[score] if tau is None else tau
    m = mask.astype(np.float64)
    per_token = policy if score == "logL" else np.exp(policy - old)
    per_token = per_token if ratio is None else per_token * ratio
    s = (per_token * m).sum(1) / m.sum(1)
    groups = sorted(set(gids.tolist()))
    js = []
    for g in groups:
        pos = s[(gids == g) & (rewards > positive_threshold)]
        neg = s[(gids == g) & (rewards <= positive_threshold)]
        if len(pos) and len(neg):
            neg_term = tau * math.log(np.mean(np.exp(neg / tau))) if dro else neg.mean()
            js.append(pos.mean() - neg_term)
    objective = sum(js) / len(groups)
    d = ((old - policy) * m).sum() / m.sum()
    penalty = constraint_weight / 2 * max(d - delta, 0.0) ** 2
    return -objective + penalty, dict(objective=objective, kept=len(js) / len(groups), d=d, penalty=penalty)


def to_stats(batch, dtype=torch.float64, ratio=None):
    policy = torch.tensor(batch["policy"], dtype=dtype, requires_grad=True)
    weights = None if ratio is None else torch.tensor(ratio, dtype=torch.float32)
    return GroupLogps(policy, torch.tensor(batch["old"], dtype=dtype), torch.tensor(batch["mask"]),
                      torch.tensor(batch["rewards"], dtype=torch.float32), torch.tensor(batch["gids"]),
                      sampling_weights=weights), policy


def run(batch, dtype=torch.float64, ratio=None, **kw):
    stats, policy = to_stats(batch, dtype, ratio)
    out = disco.loss(stats, divergence=None, **kw)
    out.loss.backward()
    return out, policy.grad


def fd_grad(batch, eps=1e-6, **kw):
    """Central finite differences of ref_disco w.r.t. the policy log-probs (float64)."""
    p = batch["policy"]
    g = np.zeros_like(p)
    for idx in np.ndindex(p.shape):
        hi, lo = p.copy(), p.copy()
        hi[idx] += eps
        lo[idx] -= eps
        g[idx] = (ref_disco(hi, **{k: v for k, v in batch.items() if k != "policy"}, **kw)[0]
                  - ref_disco(lo, **{k: v for k, v in batch.items() if k != "policy"}, **kw)[0]) / (2 * eps)
    return g


@pytest.mark.parametrize("tau", [None, 2.5])
@pytest.mark.parametrize("dro", [True, False])
@pytest.mark.parametrize("score", ["logL", "Lratio"])
def test_value_matches_numpy_rederivation(score, dro, tau):
    batch = make_batch(seed=1)
    out, _ = run(batch, score=score, dro=dro, tau=tau)
    expected, parts = ref_disco(**batch, score=score, dro=dro, tau=tau)
    assert parts["penalty"] > 1.0  # the squared hinge is really active here
    assert out.loss.dtype == torch.float64  # float64 stays float64
    assert out.loss.item() == pytest.approx(expected, rel=1e-10)
    assert out.stats["penalty"].item() == pytest.approx(parts["penalty"], rel=1e-10)
    assert out.stats["kl_old"].item() == pytest.approx(parts["d"], rel=1e-10)


@pytest.mark.parametrize("shift", [0.2, -0.2], ids=["penalty_active", "penalty_inactive"])
@pytest.mark.parametrize("dro", [True, False], ids=["dro", "disco_b"])
@pytest.mark.parametrize("score", ["logL", "Lratio"])
def test_gradient_matches_finite_differences(score, dro, shift):
    batch = make_batch(seed=2, shift=shift)
    _, grad = run(batch, score=score, dro=dro)
    assert (ref_disco(**batch)[1]["penalty"] > 0) == (shift > 0)
    expected = fd_grad(batch, score=score, dro=dro)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert (grad.numpy()[~batch["mask"]] == 0).all()


@pytest.mark.parametrize("per", ["token", "completion"])
@pytest.mark.parametrize("score", ["logL", "Lratio"])
def test_vllm_importance_ratio_weighs_each_token_term(score, per):
    """Rollouts sampled by vLLM: TRL's truncated ratio pi_old / pi_vllm multiplies each token's term (value and
    gradient against the re-derivation); a ratio of ones is the plain loss."""
    batch = make_batch(seed=3)
    rng = np.random.default_rng(4)
    # float32-exact values, as the tensor the trainer receives holds them
    ratio = rng.uniform(0.2, 2.0, (len(batch["gids"]), T if per == "token" else 1)).astype(np.float32).astype(np.float64)
    out, grad = run(batch, score=score, ratio=ratio)
    assert out.loss.item() == pytest.approx(ref_disco(**batch, score=score, ratio=ratio)[0], rel=1e-10)
    assert out.loss.item() != pytest.approx(ref_disco(**batch, score=score)[0], rel=1e-3)  # the ratio mattered
    np.testing.assert_allclose(grad.numpy(), fd_grad(batch, score=score, ratio=ratio), rtol=1e-6, atol=1e-7)
    ones, plain = run(batch, score=score, ratio=np.ones_like(ratio)), run(batch, score=score)
    assert ones[0].loss.item() == plain[0].loss.item() and torch.equal(ones[1], plain[1])


def test_at_pi_old_lratio_is_one_and_disco_b_gradients_agree():
    """Spec 7 test 1: s_Lratio = 1 and grad Lratio = grad logL at pi_theta = pi_old."""
    batch = make_batch(seed=3)
    batch["policy"] = batch["old"].copy()
    assert (disco.completion_scores(to_stats(batch)[0], "Lratio") == 1.0).all()
    _, g_ratio = run(batch, score="Lratio", dro=False)
    _, g_logl = run(batch, score="logL", dro=False)
    assert g_logl.abs().max() > 0
    np.testing.assert_allclose(g_ratio.numpy(), g_logl.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shift", [5e-5, 0.0, -0.2], ids=["0<D<delta", "D=0", "D<0"])
def test_penalty_is_zero_with_no_gradient_inside_the_trust_region(shift):
    """Spec 7 test 2: [D - delta]_+ = 0 -> penalty 0 and the constraint adds no gradient."""
    batch = make_batch(seed=4, shift=0.0)
    batch["policy"] = np.where(batch["mask"], batch["old"] - shift, batch["policy"])  # D = shift (up to rounding)
    out, grad = run(batch)
    _, grad_free = run(batch, constraint_weight=0.0)
    assert out.stats["kl_old"].item() <= 1e-4
    assert out.stats["penalty"].item() == 0.0
    np.testing.assert_array_equal(grad.numpy(), grad_free.numpy())


def test_dro_negative_term_bounds_and_limits():
    """Spec 7 test 3: tau log mean exp(s/tau) >= mean s, = for equal s, -> mean s as tau -> inf."""
    rng = np.random.default_rng(5)
    for _ in range(20):
        s = rng.normal(0.0, 2.0, rng.integers(1, 6))
        t = torch.tensor(s)
        for tau in (0.3, 1.0, 10.0):
            dro = disco.negative_term(t, dro=True, tau=tau).item()
            assert dro == pytest.approx(tau * math.log(np.mean(np.exp(s / tau))), rel=1e-12)
            assert dro >= s.mean() - 1e-12
        assert disco.negative_term(t, dro=False, tau=1.0).item() == pytest.approx(s.mean(), rel=1e-12)
        assert disco.negative_term(t, dro=True, tau=1e6).item() == pytest.approx(s.mean(), abs=1e-5)
    equal = torch.full((4,), -1.7, dtype=torch.float64)
    assert disco.negative_term(equal, dro=True, tau=0.5).item() == pytest.approx(-1.7, abs=1e-12)


def test_stats_kept_groups_objective_and_positive_threshold():
    batch = make_batch(seed=6)
    out, _ = run(batch)
    _, parts = ref_disco(**batch)
    assert out.stats["kept_groups"].item() == pytest.approx(3 / 5)  # 13 and 5 are dropped
    assert out.stats["objective"].item() == pytest.approx(parts["objective"], rel=1e-10)
    # rewards in [-1, 1]: positives at 0.25 or 1.0, negatives at -1 or -0.2; 0.25 flips sides at threshold 0.5
    batch["rewards"] = np.where(batch["rewards"] > 0, np.resize([0.25, 1.0], len(batch["rewards"])),
                                np.resize([-1.0, -0.2], len(batch["rewards"])))
    at_zero, at_half = ref_disco(**batch, positive_threshold=0.0)[0], ref_disco(**batch, positive_threshold=0.5)[0]
    assert at_zero != pytest.approx(at_half)
    assert run(batch, positive_threshold=0.0)[0].loss.item() == pytest.approx(at_zero, rel=1e-10)
    assert run(batch)[0].loss.item() == pytest.approx(at_half, rel=1e-10)
    # a reward exactly at the threshold is a negative (positives are reward > threshold)
    batch["rewards"][batch["rewards"] == -0.2] = 0.0
    assert run(batch, positive_threshold=0.0)[0].loss.item() == pytest.approx(
        ref_disco(**batch, positive_threshold=0.0)[0], rel=1e-10)


def test_errors():
    stats = to_stats(make_batch())[0]
    for bad in (get("reverse_kl"), "reverse_kl"):
        with pytest.raises(ValueError, match="divergence"):
            disco.loss(stats, divergence=bad)
    with pytest.raises(ValueError, match=r"logL.*Lratio"):
        disco.loss(stats, divergence=None, score="ratio")


@pytest.mark.parametrize("score", ["logL", "Lratio"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs_are_computed_in_float32(dtype, score):
    """Compared with the reference on the same rounded inputs, so only the compute precision is tested."""
    batch = make_batch(seed=8, shift=-0.2)
    batch.update({k: torch.tensor(batch[k]).to(dtype).double().numpy() for k in ("policy", "old")})
    out, _ = run(batch, dtype=dtype, score=score)
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(ref_disco(**batch, score=score)[0], rel=1e-5)


@pytest.mark.parametrize("dro", [True, False])
@pytest.mark.parametrize("score", ["logL", "Lratio"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extreme_logps_stay_finite_in_low_precision(dtype, score, dro):
    """Log-probs of -1000 on either side (ratios from e^-999.5 to e^10); math runs in float32."""
    old = np.array([[-1000, -1000, -0.5], [-1000, -0.5, -1000], [-0.5, -1000, -1000], [-1000, -1000, -1000.0]])
    policy = np.array([[-1000, -1000, -1000], [-990, -0.5, -1000], [-1000, -1000, -995], [-1000, -1000, -1000.0]])
    batch = dict(policy=policy, old=old, mask=np.ones((4, 3), bool), rewards=np.array([1.0, 0, 0, 1]),
                 gids=np.array([1, 1, 2, 2]))
    out, grad = run(batch, dtype=dtype, score=score, dro=dro)
    assert out.loss.dtype == torch.float32
    assert torch.isfinite(out.loss) and all(torch.isfinite(v) for v in out.stats.values())
    assert torch.isfinite(grad.float()).all() and grad.float().abs().sum() > 0


@pytest.mark.parametrize("shift", [0.2, -0.2], ids=["penalty_active", "penalty_inactive"])
def test_all_groups_dropped_leaves_only_the_penalty(shift):
    batch = make_batch(seed=7, shift=shift)
    batch["rewards"] = (batch["gids"] % 2).astype(np.float64)  # each group all-correct or all-wrong
    out, grad = run(batch)
    _, parts = ref_disco(**batch)
    assert out.stats["objective"].item() == 0.0 and out.stats["kept_groups"].item() == 0.0
    assert out.loss.item() == pytest.approx(parts["penalty"], rel=1e-10, abs=1e-15)
    # d/dpolicy of (beta/2)[D - delta]_+^2 = -beta [D - delta]_+ / n_tokens on real tokens
    m = batch["mask"].astype(np.float64)
    expected = -1e3 * max(parts["d"] - 1e-4, 0.0) * m / m.sum()
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-10, atol=1e-15)


def test_registry_entry():
    from ._helpers import check_entry

    check_entry(
        "disco", defaults={"score": "logL", "dro": True, "tau": None, "delta": 1e-4, "constraint_weight": 1e3, "positive_threshold": 0.5}, data="groups", needs_reference=False, divergences=set(),
        default_divergence="none",
    )
