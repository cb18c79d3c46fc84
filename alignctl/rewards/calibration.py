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
- t: the paper's body could not be retrieved here (the search tool returns only its abstract), so no t is quoted
  from it. `DEFAULT_T` follows the paper's own argument instead: under pi_ref a calibrated reward is uniform on
  [0, 1] whatever the model and reward, so the KL-regularised optimum pi ∝ pi_ref exp(Phi(C)/beta) has a closed-form
  best-of-N (worst-of-N) win rate against pi_ref's best-of-N (worst-of-N) for each (t, beta). Per N, the table holds
  the t on the grid {1..10, 12..20 by 2, 25, 30, 40, 50} whose policy wins most often at KL(pi || pi_ref) = 0.5 nats
  (numerically, a 20k-point grid on [0, 1]): bon 4, 12, 25, 50 for N = 2, 4, 8, 16 (t = 50 is the grid's edge from
  N = 16 on); worst_of_n 4, 10, 16 for N = 2, 4, 8 (win rates saturate beyond). The best t rises with the KL
  budget (bon, N = 4: 12 at 0.25-0.5 nats, 18 at 1 nat). N = 1 is the standard win rate, for which the paper's
  identity transform of C is the optimum; t = 1 there. Set reward.t to choose another.

The reference samples: `calibration_samples` completions per prompt from the run's reference model at temperature 1
and the dataset's completion length, seeded by (seed, prompt) alone and drawn inside `torch.random.fork_rng`, so a
prompt's scores never depend on batch order or on when it is first seen, and the training RNG is left untouched (a
resumed run gets the same numbers). They are drawn when a prompt is first scored and kept sorted in memory.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from typing import Callable

from alignctl.lazy import torch
from alignctl.rewards.base import TRANSFORMS, Reward

# N -> t of Phi = exp(t C) (bon) / -exp(-t C) (worst_of_n); see the module docstring for how they were derived.
DEFAULT_T = {
    "bon": {1: 1.0, 2: 4.0, 4: 12.0, 8: 25.0, 16: 50.0},
    "worst_of_n": {1: 1.0, 2: 4.0, 4: 10.0, 8: 16.0},
}


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


def default_t(transform: str, n: int) -> float:
    """The tabulated t for best/worst-of-`n` (the nearest tabulated N at or below n; 1 for n = 1)."""
    table = DEFAULT_T[transform]
    return table[max(k for k in table if k <= n)]


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
