"""What every reward option shares: the function type and its registry entry.

A reward option is a module with an `ENTRY: RewardEntry` (registered in alignctl.rewards.registry) and a YAML in
conf/reward/. `build(cfg.reward, context)` returns the scoring function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from alignctl.errors import UsageError

Reward = Callable[[list[str], list[str]], list[float]]  # (prompts, completions) -> one score per completion
TRANSFORMS = ("identity", "bon", "worst_of_n")  # reward.transform (InfAlign's, alignctl.rewards.calibration)


@dataclass
class RewardContext:
    """What a reward may need from the run beyond its own config."""

    device: str = "cpu"  # where model-based rewards run (the policy's device)
    # prompt -> its reference answer (verifiable tasks: toy_arith, gsm8k), or None where the dataset has none
    answers: Callable[[str], str | None] | None = None


@dataclass
class RewardConfig:
    """Fields of rewards with no options of their own (sentiment, exact_match), and the InfAlign/CTRL options every
    reward has (alignctl.rewards.calibration): what training and pair building optimise, never what eval reports."""

    name: str = "sentiment"
    calibrate: bool = False  # score = the raw score's quantile among calibration_samples reference samples, in [0, 1]
    transform: str = "identity"  # identity | bon: exp(t C) | worst_of_n: -exp(-t C) (needs calibrate=true)
    t: float | None = None  # the transform's t; null: the argmax t for n of the closed-form win rate (calibration.default_t)
    n: int | None = None  # the N of the best/worst-of-N aligned for (sets a null t)
    calibration_samples: int = 16  # m: reference samples per prompt

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise UsageError(f"reward.transform={self.transform} is not valid; choose one of: {', '.join(TRANSFORMS)}")
        if self.transform != "identity" and not self.calibrate:
            raise UsageError(
                f"reward.transform={self.transform} acts on a calibrated reward in [0, 1]; set reward.calibrate=true "
                "(or reward.transform=identity)"
            )
        if self.transform == "identity" and (self.t is not None or self.n is not None):
            which = "reward.t" if self.t is not None else "reward.n"
            raise UsageError(f"{which} is only read by reward.transform=bon or worst_of_n, not identity; unset it")
        if self.transform != "identity" and self.t is None and self.n is None:
            raise UsageError(
                f"reward.transform={self.transform} needs the N of the best/worst-of-N it aligns for, reward.n=<N> (t "
                "from its table), or reward.t=<t>"
            )
        if self.t is not None and not (math.isfinite(self.t) and self.t > 0):
            raise UsageError(f"reward.t={self.t} is out of range; it must be a finite number > 0 (or null)")
        if self.n is not None and self.n < 1:
            raise UsageError(f"reward.n={self.n} is out of range; it must be >= 1 (or null)")
        if self.calibration_samples < 1:
            raise UsageError(f"reward.calibration_samples={self.calibration_samples} is out of range; it must be >= 1")


@dataclass(frozen=True)
class RewardEntry:
    name: str
    schema: type  # the config dataclass
    description: str
    build: Callable[[Any, RewardContext], Reward]
    binary: bool = False  # scores are 1 (correct) / 0: pass@k is defined, pair building keeps correct samples
    # Scores any prompt and completion, so every dataset accepts it unless the dataset lists its own rewards
    # (DatasetEntry.rewards); False: it needs what only some datasets have (exact_match: reference answers).
    scores_any_text: bool = True
    recipe: Callable[[Any], dict[str, Any]] = field(default=lambda cfg: {"name": cfg.name})  # for cache keys
