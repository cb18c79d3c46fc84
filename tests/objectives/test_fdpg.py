"""f-DPG (spec section 9) against independent numpy re-derivations from the paper's formulas (t = pi_theta Z / P)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from alignctl.objectives import fdpg
from alignctl.objectives.fdpg import TargetLogps

from ._helpers import DIV_IDS, DIVERGENCES, LOW_PRECISION, div

BETA = 0.7
# non-contiguous, interleaved, large (56-bit, like prompt_id) ids; the last group holds one completion
IDS = [2**55 + 11, 42, 2**55 + 11, 987654321987, 42, 2**55 + 11, 987654321987, 42, 5]


def paper_reward(name: str, log_t: np.ndarray, alpha: float | None) -> np.ndarray:
    """R = -f'(t) with the paper's (unstandardised) generators."""
    t = np.exp(log_t)
    if name == "reverse_kl":
        return -1.0 - np.log(t)
    if name == "forward_kl":
        return 1.0 / t
    if name == "js":
        return np.log((1.0 + 1.0 / t) / 2.0)
    return -(1.0 - t ** (-alpha)) / alpha


def f_std(name: str, u: np.ndarray, alpha: float | None) -> np.ndarray:
    """Standardised generators (f(1) = f'(1) = 0), from the table in alignctl/divergences.py."""
    if name == "reverse_kl":
        return u * np.log(u) - u + 1.0
    if name == "forward_kl":
        return u - 1.0 - np.log(u)
    if name == "js":
        return u * np.log(u) - (u + 1.0) * np.log((u + 1.0) / 2.0)
    return (u ** (1.0 - alpha) - (1.0 - alpha) * u - alpha) / (alpha * (alpha - 1.0))


def group_mean_np(values: np.ndarray, ids) -> np.ndarray:
    return np.array([values[[j for j, k in enumerate(ids) if k == key]].mean() for key in ids])


def random_batch(seed: int = 0, T: int = 7):
    """Ragged float64 batch as numpy arrays; padded positions hold garbage that masking must drop."""
    rng = np.random.default_rng(seed)
    B = len(IDS)
    mask = np.arange(T)[None, :] < rng.integers(1, T + 1, B)[:, None]
    policy = -rng.uniform(0.1, 3.0, (B, T))
    old = policy + rng.normal(0, 0.3, (B, T))  # old != policy: IS weights != 1
    ref = policy + rng.normal(0, 0.6, (B, T))
    for x in (policy, old, ref):
        x[~mask] = rng.uniform(-300, 300, (~mask).sum())
    z_of = {k: rng.normal(2.0, 1.0) for k in IDS}  # log Z is per prompt
    return dict(policy=policy, old=old, ref=ref, mask=mask, rewards=rng.normal(0, 1.5, B),
                log_z=np.array([z_of[k] for k in IDS]))  # fmt: skip


def to_stats(d: dict, dtype=torch.float64, log_z_dtype=None) -> tuple[TargetLogps, torch.Tensor]:
    policy = torch.tensor(d["policy"], dtype=dtype, requires_grad=True)
    stats = TargetLogps(
        policy_logps=policy,
        old_logps=torch.tensor(d["old"], dtype=dtype),
        mask=torch.tensor(d["mask"]),
        rewards=torch.tensor(d["rewards"], dtype=dtype),
        group_ids=torch.tensor(d.get("ids", IDS), dtype=torch.long),
        ref_logps=torch.tensor(d["ref"], dtype=dtype),
        log_z=torch.tensor(d["log_z"], dtype=log_z_dtype or dtype),
    )
    return stats, policy


def expected(d: dict, name: str, alpha: float | None, beta: float = BETA):
    """Per-completion log t, R (paper), w and A = w (R - group mean R), from the paper's formulas."""
    m = d["mask"]
    seq = {k: (d[k] * m).sum(1) for k in ("policy", "old", "ref")}
    log_t = seq["policy"] + d["log_z"] - seq["ref"] - d["rewards"] / beta
    R = paper_reward(name, log_t, alpha)
    w = np.exp(seq["policy"] - seq["old"])
    A = w * (R - group_mean_np(R, d.get("ids", IDS)))
    return log_t, R, w, A, seq


# --- 1. advantages and gradient --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, alpha", DIVERGENCES, ids=DIV_IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_is_importance_weighted_paper_advantage_per_token(name, alpha, seed):
    """d loss / d policy[i, t] = -A_i mask[i, t] / (real tokens): the paper's R up to a constant per divergence,
    which the per-group baseline removes."""
    d = random_batch(seed)
    stats, policy = to_stats(d)
    out = fdpg.loss(stats, divergence=div(name, alpha), beta=BETA)
    out.loss.backward()
    _, _, _, A, seq = expected(d, name, alpha)
    n_tokens = d["mask"].sum()
    np.testing.assert_allclose(policy.grad.numpy(), -A[:, None] * d["mask"] / n_tokens, rtol=1e-9, atol=1e-14)
    # the value is the divergence estimate (checked against numpy below), not the gradient term's
    assert out.loss.item() == pytest.approx(out.stats["divergence_to_target"].item(), rel=1e-12)
    assert A[-1] == 0.0 and np.abs(A).max() > 1e-3  # the lone completion has no signal; the others do


@pytest.mark.parametrize("per", ["token", "completion"])
@pytest.mark.parametrize("name, alpha", DIVERGENCES, ids=DIV_IDS)
def test_vllm_importance_ratio_weighs_each_token_of_the_gradient(name, alpha, per):
    """Rollouts sampled by vLLM: TRL's truncated ratio r = pi_old / pi_vllm multiplies each token's gradient term,
    d loss / d policy[i, t] = -A_i r_it mask[i, t] / (real tokens); the value (the divergence estimate) and a ratio of
    ones leave everything as without one."""
    d = random_batch(3)
    ratio = np.random.default_rng(5).uniform(0.2, 2.0, (len(IDS), 7 if per == "token" else 1))
    stats, policy = to_stats(d)
    out = fdpg.loss(dataclasses.replace(stats, sampling_weights=torch.tensor(ratio)), divergence=div(name, alpha),
                    beta=BETA)  # fmt: skip
    out.loss.backward()
    _, _, _, A, _ = expected(d, name, alpha)
    np.testing.assert_allclose(policy.grad.numpy(), -A[:, None] * ratio * d["mask"] / d["mask"].sum(), rtol=1e-9,
                               atol=1e-14)  # fmt: skip
    plain_stats, plain_policy = to_stats(d)
    ones_stats, ones_policy = to_stats(d)
    plain = fdpg.loss(plain_stats, divergence=div(name, alpha), beta=BETA)
    ones = fdpg.loss(dataclasses.replace(ones_stats, sampling_weights=torch.ones(len(IDS), 1, dtype=torch.float64)),
                     divergence=div(name, alpha), beta=BETA)  # fmt: skip
    plain.loss.backward()
    ones.loss.backward()
    assert out.loss.item() == plain.loss.item() == ones.loss.item()
    torch.testing.assert_close(ones_policy.grad, plain_policy.grad, rtol=1e-12, atol=1e-16)


# --- 2. spec test 1: reverse KL, q = pi_theta ------------------------------------------------------------------
def test_reverse_kl_on_policy_is_kl_regularised_reinforce():
    """R = r/beta + log a - log pi_theta + const per prompt, so A = that signal minus its group mean."""
    d = random_batch(2)
    d["old"] = d["policy"].copy()
    stats, policy = to_stats(d)
    fdpg.loss(stats, divergence=div("reverse_kl"), beta=BETA).loss.backward()
    m = d["mask"]
    signal = d["rewards"] / BETA + (d["ref"] * m).sum(1) - (d["policy"] * m).sum(1)
    A = signal - group_mean_np(signal, IDS)
    np.testing.assert_allclose(policy.grad.numpy(), -A[:, None] * m / m.sum(), rtol=1e-9, atol=1e-14)


# --- 3. spec test 2: pi_theta = p ------------------------------------------------------------------------------
@pytest.mark.parametrize("name, alpha", DIVERGENCES, ids=DIV_IDS)
def test_policy_equal_to_target_gives_constant_reward_and_zero_gradient(name, alpha):
    d = random_batch(3)
    m = d["mask"]
    # move each sequence's last real token so that sum(policy) = sum(ref) + r/beta - log Z exactly
    target = (d["ref"] * m).sum(1) + d["rewards"] / BETA - d["log_z"]
    last = m.sum(1) - 1
    rows = np.arange(len(IDS))
    d["policy"][rows, last] += target - (d["policy"] * m).sum(1)
    stats, policy = to_stats(d)  # old != policy: the weights must not matter
    out = fdpg.loss(stats, divergence=div(name, alpha), beta=BETA)
    out.loss.backward()
    assert np.abs(policy.grad.numpy()).max() < 1e-12
    assert out.stats["divergence_to_target"].item() == pytest.approx(0.0, abs=1e-12)  # f(1) = 0


# --- 4. logged statistics --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, alpha", DIVERGENCES, ids=DIV_IDS)
def test_stats_are_weights_log_z_standardised_reward_and_divergence_estimate(name, alpha):
    d = random_batch(4)
    out = fdpg.loss(to_stats(d)[0], divergence=div(name, alpha), beta=BETA)
    log_t, R, w, _, _ = expected(d, name, alpha)
    t = np.exp(log_t)
    s = {k: v.item() for k, v in out.stats.items()}
    assert s["is_weight"] == pytest.approx(w.mean(), rel=1e-12)
    assert s["log_z"] == pytest.approx(d["log_z"].mean(), rel=1e-12)
    # standardised R = paper R - paper R at t = 1
    assert s["pseudo_reward"] == pytest.approx((R - paper_reward(name, np.zeros(1), alpha)).mean(), rel=1e-9)
    assert s["divergence_to_target"] == pytest.approx((w * f_std(name, t, alpha) / t).mean(), rel=1e-9)


# A small categorical "sequence space": 5 one-token completions; q is the sampling policy pi_old.
A0 = np.array([0.4, 0.25, 0.15, 0.12, 0.08])  # a = pi_0
Q = np.array([0.1, 0.3, 0.25, 0.15, 0.2])
PI = np.array([0.2, 0.2, 0.3, 0.2, 0.1])
REWARD = np.array([1.0, 0.0, 2.0, -1.0, 0.5])
N = 100_000
MC_BETA = 0.5


def samples(seed: int, policy=Q, log_z: float = 0.0) -> TargetLogps:
    """N completions y ~ q as [N, 1] token tensors; one prompt."""
    y = np.random.default_rng(seed).choice(5, size=N, p=Q)
    col = lambda p: torch.tensor(np.log(p)[y][:, None])  # noqa: E731
    return TargetLogps(
        policy_logps=col(policy), old_logps=col(Q), mask=torch.ones(N, 1, dtype=torch.long),
        rewards=torch.tensor(REWARD[y]), group_ids=torch.zeros(N, dtype=torch.long), ref_logps=col(A0),
        log_z=torch.full((N,), log_z, dtype=torch.float64),
    )  # fmt: skip


# --- 5. importance estimate of the partition function ----------------------------------------------------------
def test_log_importance_partition_is_log_a_plus_r_over_beta_minus_log_q():
    d = random_batch(5)
    got = fdpg.log_importance_partition(to_stats(d)[0], beta=BETA)
    m = d["mask"]
    np.testing.assert_allclose(got.numpy(), ((d["ref"] - d["old"]) * m).sum(1) + d["rewards"] / BETA, rtol=1e-12)


def test_mean_importance_weight_over_proposal_samples_approaches_exact_partition():
    P = A0 * np.exp(REWARD / MC_BETA)
    Z = P.sum()
    sd = np.sqrt(((P**2) / Q).sum() - Z**2)  # std of P/q under q
    est = fdpg.log_importance_partition(samples(0), beta=MC_BETA).exp().mean().item()
    assert abs(est - Z) < 5 * sd / np.sqrt(N)


@pytest.mark.parametrize("name, alpha", DIVERGENCES, ids=DIV_IDS)
def test_divergence_estimate_approaches_exact_df_to_target(name, alpha):
    """E_q[w f(t) / t] = D_f(pi_theta || p) = sum_y p f(pi_theta / p), with the exact log Z."""
    P = A0 * np.exp(REWARD / MC_BETA)
    p = P / P.sum()
    exact = (p * f_std(name, PI / p, alpha)).sum()
    g = p / Q * f_std(name, PI / p, alpha)  # the estimator's integrand under q
    sd = np.sqrt((Q * g**2).sum() - exact**2)
    out = fdpg.loss(samples(1, PI, np.log(P.sum())), divergence=div(name, alpha), beta=MC_BETA)
    assert abs(out.stats["divergence_to_target"].item() - exact) < 5 * sd / np.sqrt(N)


# --- 6. errors -------------------------------------------------------------------------------------------------
def test_missing_divergence_reference_or_partition_is_an_error():
    stats = to_stats(random_batch(6))[0]
    for bad in (None, "js"):
        with pytest.raises(ValueError, match="divergence"):
            fdpg.loss(stats, divergence=bad)
    for field in ("ref_logps", "log_z"):
        with pytest.raises(ValueError, match="ref_logps"):
            fdpg.loss(TargetLogps(**{**vars(stats), field: None}), divergence=div("js"))


# --- 7. robustness ---------------------------------------------------------------------------------------------
def extreme_batch(dtype, z_dtype, name, alpha):
    """Policy and reference token log-probs in {0, -1, -1000}; old = policy (first update) or 0.5 off; a padded
    token of +-1000; log Z as low-precision as the inputs, or float64 as RunningPartition returns it."""
    E = (0.0, -1.0, -1000.0)
    combos = list(itertools.product(E, E, (0.0, 0.5)))
    n = len(combos)
    pol = np.array([[c[0], c[0], 1000.0] for c in combos])
    d = dict(policy=pol, old=pol + np.array([[c[2], 0.0, -1000.0] for c in combos]),
             ref=np.array([[c[1], c[1], -1000.0] for c in combos]), mask=np.array([[1, 1, 0]] * n),
             rewards=np.tile([-3.0, 3.0], n)[:n], log_z=np.tile([0.0, 40.0, -40.0], n)[:n],
             ids=[2**55 * (i % 3) + 7 for i in range(n)])  # fmt: skip
    stats, policy = to_stats(d, dtype, dtype if z_dtype == "same" else z_dtype)
    out = fdpg.loss(stats, divergence=div(name, alpha))
    out.loss.backward()
    return out, policy


def extreme(fn):
    fn = pytest.mark.parametrize("name, alpha", DIVERGENCES, ids=DIV_IDS)(fn)
    fn = pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)(fn)
    return pytest.mark.parametrize("z_dtype", ["same", torch.float64], ids=["logz_same", "logz_float64"])(fn)


@extreme
def test_extreme_log_probs_keep_gradients_finite(name, alpha, dtype, z_dtype):
    _, policy = extreme_batch(dtype, z_dtype, name, alpha)
    assert torch.isfinite(policy.grad).all() and policy.grad.abs().sum() > 0
    assert (policy.grad[:, 2] == 0).all()  # padded token


@extreme
def test_extreme_log_probs_keep_loss_and_stats_finite(name, alpha, dtype, z_dtype):
    """A pseudo-reward at its e^80 ceiling times a sequence log-prob of -2000 would overflow float32: the loss's
    value must stay finite (it is logged, and divergences.py promises finite losses for log-ratios of any size)."""
    out, _ = extreme_batch(dtype, z_dtype, name, alpha)
    assert torch.isfinite(out.loss), out.loss
    assert all(torch.isfinite(v) for v in out.stats.values()), out.stats


@pytest.mark.parametrize("name, alpha", DIVERGENCES, ids=DIV_IDS)
@pytest.mark.parametrize("centre", [10.0, 17.0, 25.0])
def test_advantages_keep_their_precision_in_float32_where_pseudo_rewards_sit_on_their_constant(name, alpha, centre):
    """Every sample of a group at log t ~ 10-25 (1/t << 1): forward_kl's 1/t - 1, js's -log 2 - logsigmoid and
    alpha's (t^-a - 1)/a sit on their constants, which R - B must not go through in float32. Reference: R - B in
    float64 from the pseudo-rewards themselves (exact enough there: float64 keeps 1/t beside 1 up to log t ~ 36)."""
    log_t = centre + torch.tensor([0.0, 0.3, -0.2, 0.7, 0.1, -0.5], dtype=torch.float64)
    ids = torch.tensor([0, 0, 0, 1, 1, 1])
    d = div(name, alpha)
    r = fdpg.pseudo_rewards(d, log_t)
    expected = (r - fdpg.group_mean(r, ids)).numpy()
    got = fdpg.centered_pseudo_rewards(d, log_t.float(), ids).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3 * np.abs(expected).max())
    assert np.abs(got).max() > 0


def test_registry_entry():
    from alignctl.divergences import NAMES

    from ._helpers import check_entry

    check_entry(
        "fdpg", defaults={"beta": 0.1}, data="groups", needs_reference=True, divergences=set(NAMES),
        default_divergence="js",
    )


@pytest.mark.parametrize("name, alpha", DIVERGENCES, ids=DIV_IDS)
def test_f_prime_varying_is_f_prime_less_its_ceiling(name, alpha):
    h = torch.linspace(-5.0, 5.0, 11, dtype=torch.float64)
    d = div(name, alpha)
    ceiling = {"reverse_kl": 0.0, "forward_kl": 1.0, "js": np.log(2.0), "alpha": 1.0 / (alpha or 1.0)}[name]
    np.testing.assert_allclose((d.f_prime(h) - d.f_prime_varying(h)).numpy(), ceiling, rtol=1e-12, atol=1e-12)
