"""InfAlign/CTRL reward calibration (alignctl.rewards.calibration): the quantile against a hand count, its range and
monotonicity, the transforms' closed forms, the default t as the grid argmax of the closed-form win rate (checked by
another route), per-prompt seeding and the config's one-line refusals."""

import math
import random

import pytest

from alignctl.config import compose
from alignctl.errors import UsageError
from alignctl.rewards import calibration as cal


def hand_quantile(reference, r):
    """Mid-rank by explicit counting: (#below + #equal / 2) / m."""
    below = sum(1 for x in reference if x < r)
    equal = sum(1 for x in reference if x == r)
    return (below + 0.5 * equal) / len(reference)


def test_calibrated_matches_a_hand_count_with_and_without_ties():
    rng = random.Random(0)
    for m in (1, 2, 5, 16):
        continuous = sorted(rng.uniform(-1, 1) for _ in range(m))
        discrete = sorted(float(rng.randint(0, 2)) for _ in range(m))  # many ties
        for reference in (continuous, discrete):
            for r in [*reference, -2.0, 2.0, 0.0, 1.0, *(rng.uniform(-1.5, 1.5) for _ in range(20))]:
                assert cal.calibrated(reference, r) == pytest.approx(hand_quantile(reference, r), abs=1e-15)


def test_calibrated_lies_in_0_1_and_is_monotone_in_the_reward():
    rng = random.Random(1)
    reference = sorted(rng.gauss(0, 1) for _ in range(16))
    rewards = sorted(rng.gauss(0, 2) for _ in range(500)) + [-math.inf, math.inf]
    rewards.sort()
    values = [cal.calibrated(reference, r) for r in rewards]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[0] == 0.0 and values[-1] == 1.0
    # continuous scores: the spec's P[r' <= r] exactly (no ties), strictly between the reference scores
    for r in rewards[1:-1]:
        if r not in reference:
            assert cal.calibrated(reference, r) == sum(x <= r for x in reference) / 16


def test_ties_are_mid_rank_so_a_binary_reward_keeps_its_signal():
    never_solved, always_solved = [0.0] * 8, [1.0] * 8
    assert cal.calibrated(never_solved, 1.0) == 1.0 and cal.calibrated(never_solved, 0.0) == 0.5
    assert cal.calibrated(always_solved, 1.0) == 0.5 and cal.calibrated(always_solved, 0.0) == 0.0
    # under the reference itself the mean calibrated score is 1/2 (uniform-like), ties or not
    reference = sorted([0.0] * 5 + [1.0] * 3)
    assert sum(cal.calibrated(reference, r) for r in reference) / 8 == pytest.approx(0.5)


@pytest.mark.parametrize("t", [0.5, 4.0, 12.0])
def test_transforms_closed_forms_and_order(t):
    cs = [i / 10 for i in range(11)]
    for c in cs:
        assert cal.transformed(c, "identity", None) == c
        assert cal.transformed(c, "bon", t) == pytest.approx(math.e ** (t * c), rel=1e-14)
        assert cal.transformed(c, "worst_of_n", t) == pytest.approx(-(math.e ** (-t * c)), rel=1e-14)
    for kind in cal.TRANSFORMS:  # every transform keeps the order of C (strictly increasing)
        values = [cal.transformed(c, kind, t) for c in cs]
        assert all(a < b for a, b in zip(values, values[1:]))
    # bon is convex (rewards the top quantiles most), worst_of_n concave (punishes the bottom ones most)
    bon, won = [cal.transformed(c, "bon", t) for c in cs], [cal.transformed(c, "worst_of_n", t) for c in cs]
    assert all(b - a < c - b for a, b, c in zip(bon, bon[1:], bon[2:]))
    assert all(b - a > c - b for a, b, c in zip(won, won[1:], won[2:]))


# The computed t (module docstring's table): a change here changes what calibrated runs optimise and their cache keys.
DOCUMENTED_T = {
    "bon": {1: 0.5, 2: 4.5, 3: 8.5, 4: 12.5, 5: 17.5, 6: 22.5, 7: 28.0, 8: 34.0, 12: 64.0, 16: 104.0},
    "worst_of_n": {1: 0.5, 2: 3.5, 3: 7.0, 4: 9.5, 5: 12.5, 6: 15.0, 7: 17.5, 8: 20.0, 12: 30.5, 16: 41.0},
}


def test_default_t_is_the_documented_table_on_the_grid_and_rises_with_n():
    for kind, table in DOCUMENTED_T.items():
        assert {n: cal.default_t(kind, n) for n in table} == table
        ts = [cal.default_t(kind, n) for n in range(1, cal.N_MAX + 1)]
        assert all(a < b for a, b in zip(ts, ts[1:]))  # larger N: a sharper transform
        assert all(t / cal.T_STEP == round(t / cal.T_STEP) and cal.T_STEP <= t < cal.T_MAX for t in ts)
        assert cal.default_t(kind, cal.N_MAX + 1) == cal.default_t(kind, 1000) == cal.default_t(kind, cal.N_MAX)
    for bad in (("identity", 4), ("bon", 0)):
        with pytest.raises(ValueError):
            cal.default_t(*bad)


def discretised_win_rates(kind, n, ts, kl=0.5, m=100_000):
    """The same win rate by another route: pi_ref's C as m equal atoms at the midpoints of [0, 1], each t's
    transform mapped affinely onto [0, 1] (the same tilted policy for another beta), the tilt's log-lambda bisected
    in numpy until KL = kl, and the best-of-n (worst-of-n) win against the continuous uniform's summed atom by atom."""
    import numpy as np

    c = (np.arange(m) + 0.5) / m
    t = np.asarray(ts, dtype=np.float64)[:, None]
    phi = np.expm1(t * c) / np.expm1(t) if kind == "bon" else np.expm1(-t * c) / np.expm1(-t)
    lo, hi = np.full_like(t, -5.0), 0.5 * t + 10.0  # worst_of_n needs lambda ~ e^{0.4 t}

    def log_weights(log_lam):
        z = np.exp(log_lam) * phi
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    for _ in range(100):
        mid = (lo + hi) / 2
        logw = log_weights(mid)
        too_far = (np.exp(logw) * (logw + math.log(m))).sum(1, keepdims=True) > kl
        hi, lo = np.where(too_far, mid, hi), np.where(too_far, lo, mid)
    w = np.exp(log_weights((lo + hi) / 2))
    cdf = np.clip(np.cumsum(w, 1), 0.0, 1.0)
    below = np.clip(cdf - w, 0.0, 1.0)
    if kind == "bon":  # P[the policy's max is atom i] * P[max of n uniform < c_i]
        return ((cdf**n - below**n) * c**n).sum(1)
    return (((1 - below) ** n - (1 - cdf) ** n) * (1 - (1 - c) ** n)).sum(1)  # min of n uniform < c_i


@pytest.mark.parametrize("kind, n", [("bon", 2), ("bon", 4), ("bon", 8), ("bon", 16), ("worst_of_n", 2),
                                     ("worst_of_n", 4), ("worst_of_n", 8)])  # fmt: skip
def test_each_default_t_is_the_grid_argmax_of_the_win_rate(kind, n):
    """The claim the docstring makes, checked by the discretised route: the tabulated t beats its two grid
    neighbours and points far off (half and twice it); the closed form agrees with the route everywhere."""
    t = cal.default_t(kind, n)
    ts = [t - cal.T_STEP, t, t + cal.T_STEP, t / 2, 2 * t]
    # the atoms' error grows like (t / m)^2: 400k atoms keep it under 1e-8 at t = 104 (bon, N = 16)
    rates = discretised_win_rates(kind, n, ts, m=400_000 if t > 50 else 100_000)
    assert rates[1] == rates.max()
    assert rates[1] - max(rates[0], rates[2]) > 1e-9  # the margin it wins by, far above both routes' disagreement
    for x, rate in zip(ts, rates):
        assert cal.win_rate(kind, n, x) == pytest.approx(rate, abs=2e-8)


def test_the_hand_made_table_it_replaces_was_not_the_argmax():
    """bon 4, 25 for N = 2, 8 and worst_of_n 16 for N = 8 (and the rest) each lose to the computed t."""
    old = {"bon": {2: 4.0, 4: 12.0, 8: 25.0, 16: 50.0}, "worst_of_n": {2: 4.0, 4: 10.0, 8: 16.0}}
    for kind, table in old.items():
        for n, t in table.items():
            assert cal.win_rate(kind, n, cal.default_t(kind, n)) > cal.win_rate(kind, n, t)
    # the argmax per N is what the issue found on a coarser grid: bon N = 8 between 30 and 40, worst_of_n N = 8 at 20
    assert 30 < cal.default_t("bon", 8) < 40 and cal.default_t("worst_of_n", 8) == 20.0


def test_for_one_sample_the_win_rate_falls_with_t_towards_the_identity_transform():
    """N = 1 is the standard win rate: no t beats the identity transform (the t -> 0 limit), so the grid's argmax
    is its edge."""
    for kind in ("bon", "worst_of_n"):
        identity = discretised_win_rates(kind, 1, [1e-6])[0]  # the tilt of C itself, to 1e-6
        rates = [cal.win_rate(kind, 1, t) for t in (0.1, 0.5, 1.0, 4.0)]
        assert identity > rates[0] > rates[1] > rates[2] > rates[3]
        assert cal.default_t(kind, 1) == cal.T_STEP


def test_win_rate_refuses_what_it_cannot_solve():
    for args in (("identity", 2, 1.0), ("bon", 0, 1.0), ("bon", 2, 0.01), ("worst_of_n", 2, 2 * cal.T_MAX + 1)):
        with pytest.raises(ValueError):
            cal.win_rate(*args)


def test_best_of_4_t_wins_more_than_identity_in_the_uniform_model():
    """The table's reading, re-derived by a different route: Monte Carlo over C ~ U[0, 1] (pi_ref's calibrated
    reward) tilted by exp(Phi(C) / beta), each beta set so KL = 0.5 nats; best-of-4 of the tilted policy vs best-of-4
    of U[0, 1]. The tabulated t must beat the identity transform (the plain calibrated reward)."""
    import torch

    u = (torch.arange(200_000, dtype=torch.float64) + 0.5) / 200_000

    def win_rate(phi):
        lo, hi = 1e-4, 1e4  # bisect log beta for KL = 0.5
        for _ in range(80):
            beta = math.sqrt(lo * hi)
            w = torch.softmax(phi(u) / beta, 0)
            kl = float((w * torch.log(w * len(u))).sum())
            lo, hi = (beta, hi) if kl > 0.5 else (lo, beta)
        cdf = torch.cumsum(w, 0)
        return float((w * 4 * cdf**3 * u**4).sum())  # P[max of 4 tilted > max of 4 uniform] = E[F_max(V)]

    t = cal.default_t("bon", 4)
    assert win_rate(lambda c: torch.exp(t * c)) > win_rate(lambda c: c) + 0.03


class Counting:
    """A raw reward (the completion's length) that records what it scored, and a reference sampler whose
    completions are a pure function of (prompt, seed) so batch-order independence is visible."""

    def __init__(self):
        self.seen_seeds = {}

    def reward(self, prompts, completions):
        return [float(len(c)) for c in completions]

    def sampler(self, prompt, seed):
        self.seen_seeds.setdefault(prompt, set()).add(seed)
        rng = random.Random(seed)
        return ["x" * rng.randint(0, 9) for _ in range(6)]


def test_reference_scores_depend_on_the_prompt_alone_not_batch_order():
    prompts = [f"prompt {i}" for i in range(7)]
    a, b = Counting(), Counting()
    forward = cal.CalibratedReward(a.reward, a.sampler, seed=3)
    backward = cal.CalibratedReward(b.reward, b.sampler, seed=3)
    forward(prompts, ["xxx"] * 7)
    for p in reversed(prompts):  # one at a time, the other order
        backward([p], ["xxx"])
    assert forward.reference_scores == backward.reference_scores
    assert all(len(s) == 1 for s in a.seen_seeds.values())  # drawn once per prompt
    forward(prompts, ["xxxx"] * 7)
    assert all(len(s) == 1 for s in a.seen_seeds.values())  # kept, not redrawn
    other = cal.CalibratedReward(a.reward, Counting().sampler, seed=4)
    other(prompts, ["xxx"] * 7)
    assert other.reference_scores != forward.reference_scores  # the run's seed matters
    assert cal.prompt_seed(3, "a") == cal.prompt_seed(3, "a") != cal.prompt_seed(3, "b")


def test_calibrated_reward_end_to_end_against_a_hand_count():
    c = Counting()
    reward = cal.CalibratedReward(c.reward, c.sampler, seed=0, transform="bon", t=2.0)
    prompts, completions = ["p", "q", "p"], ["xx", "xxxxxxx", ""]
    got = reward(prompts, completions)
    for p, comp, value in zip(prompts, completions, got):
        reference = [float(len(x)) for x in c.sampler(p, cal.prompt_seed(0, p))]
        assert value == pytest.approx(math.exp(2.0 * hand_quantile(reference, float(len(comp)))))


def test_reference_sampler_leaves_the_callers_rng_alone_and_is_seeded(tmp_path):
    import torch

    from alignctl.data.tasks import tiny_lm
    from alignctl.models.schema import TinyModelConfig
    from tests.rewards.conftest import NO_PAD, _tokenizer

    tokenizer = _tokenizer(NO_PAD, bert=False)  # a word-level vocabulary: nothing to train
    tokenizer.pad_token = tokenizer.eos_token
    model = tiny_lm.build_llama(TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                                                max_position_embeddings=64), tokenizer).eval()  # fmt: skip
    draw = cal.reference_sampler(model, tokenizer, m=4, max_new_tokens=6)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = draw("the cat", 7)
    assert torch.equal(torch.rand(3), expected)  # the training RNG continues as if nothing was drawn
    draw("another prompt", 8)
    assert draw("the cat", 7) == first and len(first) == 4


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["reward.transform=bon"], "reward.transform=bon"),
        (["reward.calibrate=true", "reward.transform=median"], "reward.transform=median"),
        (["reward.calibrate=true", "reward.transform=bon"], "reward.transform=bon needs"),
        (["reward.calibrate=true", "reward.transform=bon", "reward.t=0"], "reward.t=0"),
        (["reward.calibrate=true", "reward.transform=bon", "reward.t=-2"], "reward.t=-2"),
        (["reward.calibrate=true", "reward.t=3"], "reward.t"),
        (["reward.calibrate=true", "reward.transform=worst_of_n", "reward.n=0"], "reward.n=0"),
        (["reward.calibrate=true", "reward.calibration_samples=0"], "reward.calibration_samples=0"),
    ],
)
def test_nonsense_combinations_are_refused_in_one_line(overrides, field):
    with pytest.raises(UsageError) as e:
        compose.compose_one(overrides)
    assert field in str(e.value) and "\n" not in str(e.value)


def test_calibration_options_compose_on_every_reward_schema():
    cfg = compose.compose_one(["reward.calibrate=true", "reward.transform=worst_of_n", "reward.n=4"])
    assert (cfg.reward.calibrate, cfg.reward.transform, cfg.reward.n, cfg.reward.t) == (True, "worst_of_n", 4, None)
    with pytest.raises(UsageError, match="reward.transform=bon"):  # classifier's own checks still run, and ours
        compose.compose_one(["reward=classifier", "reward.path=/nonexistent", "reward.transform=bon"])


def test_a_transform_is_refused_for_disco_which_only_thresholds_the_reward():
    # when the config is composed, before anything builds or loads
    with pytest.raises(UsageError, match="objective=disco") as e:
        compose.compose_one(["objective=disco", "reward.calibrate=true", "reward.transform=bon", "reward.t=2"])
    assert "\n" not in str(e.value)
    compose.compose_one(["objective=disco", "reward.calibrate=true"])  # calibration alone is fine


def test_t_comes_from_reward_t_then_reward_n_never_eval(monkeypatch):
    from alignctl.run import build, sources

    monkeypatch.setattr(sources, "reference_source", lambda cfg: "/reference")  # builds no model
    base = ["reward.calibrate=true", "reward.transform=bon"]
    t = [build.calibration_settings(compose.compose_one(base + o))["t"]
         for o in (["reward.t=3", "reward.n=2"], ["reward.n=2", "eval.best_of_n=8"])]  # fmt: skip
    assert t == [3.0, cal.default_t("bon", 2)]
    # eval.* may change when a run resumes, so it never sets what training optimises: refused when composed
    with pytest.raises(UsageError, match="reward.n=<N>"):
        compose.compose_one([*base, "eval.best_of_n=4"])
    assert build.calibration_settings(compose.compose_one(["reward.calibrate=true"]))["t"] is None
