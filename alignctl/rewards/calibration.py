"""InfAlign / CTRL (Balashankar et al. 2024, arXiv 2412.19792): calibrate any reward against the reference model's
samples for the same prompt, then transform it for the inference-time procedure the policy is aligned for.

    C(x, y) = P_{y' ~ pi_ref(.|x)}[r(x, y') <= r(x, y)]     estimated from m reference samples per prompt (ties: below)
    identity: Phi(C) = C      bon: Phi(C) = exp(t C)      worst_of_n: Phi(C) = -exp(-t C)

The policy then maximises E[Phi(C)] - beta KL with any online objective (grpo, disco, fdpg), or offline objectives
rank sampled pairs/candidates by it (alignctl.data.sampled). Eval keeps reporting the RAW reward.

Readings taken (the spec leaves them open):
- Ties: mid-rank, C = P[r' < r] + P[r' = r] / 2. For a continuous reward (sentiment, a reward model) ties have
  probability 0 and this is the spec's P[r' <= r]; for a discrete one (exact_match) it keeps the two properties the
  paper's argument needs: C is uniform-like under pi_ref (E[C] = 1/2 exactly), and a correct answer still beats a
  wrong one on prompts pi_ref never solves (with P[r' <= r] both would get C = 1, and GRPO no signal).
- t: the paper's t values could not be read here (the stored copies of its body reach only the abstract and
  introduction), so none is quoted from it. `default_t` follows the paper's own model-free analysis instead: under
  pi_ref a calibrated reward is uniform on [0, 1] whatever the model and reward, so the KL-regularised optimum
  pi ∝ pi_ref exp(Phi(C)/beta) has a closed-form best-of-N (worst-of-N) win rate against pi_ref's best-of-N
  (worst-of-N) for each (t, beta) (`win_rate`, exponential integrals and one quadrature). `default_t(transform, N)`
  is the argmax of that win rate at KL(pi || pi_ref) = 0.5 nats over the grid t = 0.5, 1, 1.5, ..., 250, computed
  on first use (~20 ms) and cached, not tabulated by hand:
      N           1    2    3    4     5     6     7    8    12     16
      bon         0.5  4.5  8.5  12.5  17.5  22.5  28   34   64     104
      worst_of_n  0.5  3.5  7    9.5   12.5  15    17.5 20   30.5   41
  N above 16 takes N = 16's t (not its own argmax: bon's keeps growing, 396.5 at N = 32, and worst-of-N win rates
  are already 0.99987 at N = 16). N = 1 is the standard win rate, which falls with t: the grid's argmax is its edge,
  0.5, and the limit t -> 0 is the identity transform, the paper's optimum there (reward.transform=identity). The
  best t rises with the KL budget (bon, N = 4: 10.6, 12.6, 17.3 at 0.25, 0.5, 1 nat). Until this was computed, a
  hand-made table gave bon 4, 12, 25, 50 for N = 2, 4, 8, >= 16 and worst_of_n 4, 10, 16 for N = 2, 4, >= 8 (N
  between tabulated ones took the smaller one's t), which was not the argmax it was said to be (bon N = 8: 25,
  where 34 wins; worst_of_n N = 8: 16, where 20 wins); a run saved with reward.n and no reward.t gets the computed t
  when resumed (pass reward.t=<the old t> to continue it as it was). Set reward.t to choose another t.

The reference samples: `calibration_samples` completions per prompt from the run's reference model at temperature 1
and the dataset's completion length, seeded by (seed, prompt) alone and drawn inside `torch.random.fork_rng`, so a
prompt's scores never depend on batch order or on when it is first seen, and the training RNG is left untouched (a
resumed run gets the same numbers). They are drawn when a prompt is first scored and kept sorted in memory.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
from typing import Callable

from alignctl.lazy import torch
from alignctl.rewards.base import TRANSFORMS, Reward

# InfAlign's model-free analysis, the source of the default t (module docstring): win rates are compared at
# KL(pi || pi_ref) = KL_BUDGET nats, over t = T_STEP, 2 T_STEP, ..., T_MAX; reward.n above N_MAX takes N_MAX's t
# (T_MAX is well above N_MAX's argmax, 104 for bon).
KL_BUDGET = 0.5
T_STEP = 0.5
T_MAX = 250.0
N_MAX = 16
# win rates closer than this are a tie (the quadrature's error is ~1e-14): the smaller t is taken
WIN_RATE_TIE = 1e-12


def calibrated(reference_scores: list[float], reward: float) -> float:
    """The mid-rank quantile of `reward` among the sorted reference scores, P[r' < reward] + P[r' = reward] / 2,
    in [0, 1] and non-decreasing in `reward`."""
    below = bisect.bisect_left(reference_scores, reward)
    at_or_below = bisect.bisect_right(reference_scores, reward)
    return (below + at_or_below) / (2 * len(reference_scores))


def transformed(c: float, transform: str, t: float | None) -> float:
    """Phi(c): c (identity), exp(t c) (bon) or -exp(-t c) (worst_of_n)."""
    if transform == "identity":
        return c
    if transform == "bon":
        return math.exp(t * c)
    if transform == "worst_of_n":
        return -math.exp(-t * c)
    raise ValueError(f"transform={transform!r} is not one of {', '.join(TRANSFORMS)}")


def win_rate(transform: str, n: int, t: float, kl: float = KL_BUDGET) -> float:
    """InfAlign's closed form: the best-of-n (bon) or worst-of-n (worst_of_n) win rate against pi_ref's own
    best-of-n (worst-of-n) of the policy pi ∝ pi_ref exp(Phi(C) / beta), beta set so that KL(pi || pi_ref) = kl,
    where C is uniform on [0, 1] under pi_ref (a calibrated reward, whatever the model and reward).

    bon, Phi = exp(tC): pi has density w(c) = exp(lam e^{tc}) / Z on [0, 1] (lam = 1 / beta), whose CDF is
    F(c) = (Ei(lam e^{tc}) - Ei(lam)) / (t Z), Z = (Ei(lam e^t) - Ei(lam)) / t, and KL = (e^{lam e^t} - e^{lam}) / (t Z)
    - log Z; the win rate P[max of n from pi > max of n uniform] = 1 - int_0^1 n c^{n-1} F(c)^n dc.
    worst_of_n, Phi = -exp(-tC): w(c) = exp(-lam e^{-tc}) / Z, F(c) = (E1(lam e^{-tc}) - E1(lam)) / (t Z),
    Z = (E1(lam e^{-t}) - E1(lam)) / t, KL = (e^{-lam} - e^{-lam e^{-t}}) / (t Z) - log Z; the win rate
    P[min of n from pi > min of n uniform] = 1 - int_0^1 n (1 - c)^{n-1} (1 - (1 - F(c))^n) dc.
    lam is solved for (Brent, on log lam) and the integral is adaptive quadrature (QUADPACK), both to ~1e-13.
    """
    # scipy: the reward registry imports this module, and a bad command line must fail before heavy imports
    from scipy import integrate, optimize, special

    if transform not in ("bon", "worst_of_n"):
        raise ValueError(f"transform={transform!r}: the win rate is defined for bon and worst_of_n")
    if not (n >= 1 and 0.1 <= t <= 2 * T_MAX and 0 < kl <= 2):  # where the bracket below holds the solution
        raise ValueError(f"win_rate needs n >= 1, 0.1 <= t <= {2 * T_MAX:g} and 0 < kl <= 2; got n={n}, t={t}, kl={kl}")
    sign = 1.0 if transform == "bon" else -1.0
    # x(c) = lam e^{sign t c} = exp(log_lam + sign t c), dx = sign t x dc: the integral of exp(sign x(c)) dc is
    # g(x(c)) / t with g = Ei (bon) or E1 (worst_of_n)
    g = special.expi if transform == "bon" else special.exp1

    def x(log_lam: float, c: float) -> float:
        return math.exp(log_lam + sign * t * c)

    def normaliser(log_lam: float) -> float:  # Z
        return (g(x(log_lam, 1.0)) - g(x(log_lam, 0.0))) / t

    def excess_kl(log_lam: float) -> float:
        z = normaliser(log_lam)
        ends = math.exp(sign * x(log_lam, 1.0)) - math.exp(sign * x(log_lam, 0.0))
        return sign * ends / (t * z) - math.log(z) - kl

    # bracket: the largest x at most 1e-9 (pi about uniform, KL ~ 0) to 300 (for t >= 0.1: KL > 2; e^x finite)
    lo, hi = (math.log(1e-9) - t, math.log(300.0) - t) if sign > 0 else (math.log(1e-9), math.log(300.0) + t)
    log_lam = optimize.brentq(excess_kl, lo, hi, xtol=1e-14, rtol=1e-15, maxiter=500)
    z, start = normaliser(log_lam), g(x(log_lam, 0.0))

    def cdf(c: float) -> float:
        return min(max((g(x(log_lam, c)) - start) / (t * z), 0.0), 1.0)

    def integrand(c: float) -> float:
        if transform == "bon":
            return n * c ** (n - 1) * cdf(c) ** n
        return n * (1 - c) ** (n - 1) * (1 - (1 - cdf(c)) ** n)

    value, _ = integrate.quad(integrand, 0.0, 1.0, epsabs=1e-14, epsrel=1e-12, limit=200)
    return 1.0 - value


def default_t(transform: str, n: int) -> float:
    """The t of the grid T_STEP, 2 T_STEP, ..., T_MAX whose policy has the highest `win_rate` for best/worst-of-n
    at KL_BUDGET (ties within WIN_RATE_TIE: the smaller t); n above N_MAX takes N_MAX's t. Computed on first use
    (~20 ms) and cached."""
    if transform not in ("bon", "worst_of_n"):
        raise ValueError(f"transform={transform!r} has no t; default_t is for bon and worst_of_n")
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    return _grid_argmax(transform, min(n, N_MAX))


@functools.cache
def _grid_argmax(transform: str, n: int) -> float:
    """A bounded Brent search for the continuous maximum over [T_STEP, T_MAX], then the best of the three grid
    points around it: the grid's argmax, since the win rate is unimodal in t (a scan of the whole grid for every
    n <= N_MAX, both transforms, found the same t and a strict rise then fall)."""
    # scipy: see win_rate
    from scipy import optimize

    found = optimize.minimize_scalar(lambda t: -win_rate(transform, n, t), bounds=(T_STEP, T_MAX), method="bounded",
                                     options={"xatol": 1e-3})  # fmt: skip
    nearest = round(found.x / T_STEP)
    grid = [k * T_STEP for k in range(nearest - 1, nearest + 2) if T_STEP <= k * T_STEP <= T_MAX]
    rates = {t: win_rate(transform, n, t) for t in grid}
    best = max(rates.values())
    return min(t for t, rate in rates.items() if rate >= best - WIN_RATE_TIE)


def prompt_seed(seed: int, prompt: str) -> int:
    """A 31-bit seed from (seed, prompt) only: the prompt's reference samples never depend on batch order."""
    digest = hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31 - 1)


class CalibratedReward:
    """A (prompts, completions) -> Phi(C) reward: the raw reward calibrated per prompt against `sample_reference`'s
    completions (drawn once per prompt, scored by the raw reward, kept sorted)."""

    def __init__(
        self,
        raw: Reward,
        sample_reference: Callable[[str, int], list[str]],  # (prompt, seed) -> m reference completions
        *,
        seed: int,
        transform: str = "identity",
        t: float | None = None,
    ) -> None:
        if transform not in TRANSFORMS:
            raise ValueError(f"transform={transform!r} is not one of {', '.join(TRANSFORMS)}")
        if transform != "identity" and not (t is not None and t > 0):
            raise ValueError(f"transform={transform} needs t > 0, got {t}")
        self.raw, self.sample_reference, self.seed = raw, sample_reference, seed
        self.transform, self.t = transform, t
        self.reference_scores: dict[str, list[float]] = {}

    def scores_for(self, prompts: list[str]) -> list[list[float]]:
        """The sorted reference scores of each prompt, drawing and scoring those of new prompts (one raw-reward
        call for all of them)."""
        new = [p for p in dict.fromkeys(prompts) if p not in self.reference_scores]
        if new:
            drawn = {p: self.sample_reference(p, prompt_seed(self.seed, p)) for p in new}
            flat_prompts = [p for p in new for _ in drawn[p]]
            flat = [float(r) for r in self.raw(flat_prompts, [c for p in new for c in drawn[p]])]
            at = 0
            for p in new:
                m = len(drawn[p])
                self.reference_scores[p] = sorted(flat[at : at + m])
                at += m
        return [self.reference_scores[p] for p in prompts]

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        rewards = [float(r) for r in self.raw(prompts, completions)]
        references = self.scores_for(prompts)
        return [transformed(calibrated(ref, r), self.transform, self.t) for ref, r in zip(references, rewards)]


def reference_sampler(model, tokenizer, *, m: int, max_new_tokens: int) -> Callable[[str, int], list[str]]:
    """(prompt, seed) -> m completions of `model` at temperature 1 (ancestral), drawn with their own seed inside
    fork_rng: the caller's RNG state (a training run's) is the same afterwards."""
    from alignctl.models.sampling import sample  # transformers: the reward registry imports this module

    def draw(prompt: str, seed: int) -> list[str]:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
            got = sample(model, tokenizer, [prompt], n=m, max_new_tokens=max_new_tokens, temperature=1.0, seed=seed,
                         batch_size=m)  # fmt: skip
        return got.completions

    return draw
