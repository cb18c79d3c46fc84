"""What every reward option shares: the function type and its registry entry.

A reward option is a module with an `ENTRY: RewardEntry` (registered in alignctl.rewards.registry) and a YAML in
conf/reward/. `build(cfg.reward, context)` returns the scoring function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

Reward = Callable[[list[str], list[str]], list[float]]  # (prompts, completions) -> one score per completion


@dataclass
class RewardContext:
    """What a reward may need from the run beyond its own config."""

    device: str = "cpu"  # where model-based rewards run (the policy's device)
    # prompt -> its reference answer (verifiable tasks: toy_arith, gsm8k), or None where the dataset has none
    answers: Callable[[str], str | None] | None = None


@dataclass
class RewardConfig:
    """Fields of rewards with no options of their own (sentiment, exact_match)."""

    name: str = "sentiment"


@dataclass(frozen=True)
class RewardEntry:
    name: str
    schema: type  # the config dataclass
    description: str
    build: Callable[[Any, RewardContext], Reward]
    binary: bool = False  # scores are 1 (correct) / 0: pass@k is defined, pair building keeps correct samples
    recipe: Callable[[Any], dict[str, Any]] = field(default=lambda cfg: {"name": cfg.name})  # for cache keys
