"""Reward options by name: option name == module name == registry key == conf/reward/<name>.yaml."""

from __future__ import annotations

from typing import Any

from alignctl.registry import discover, lookup
from alignctl.rewards.base import Reward, RewardContext, RewardEntry

# every module of alignctl.rewards that defines ENTRY (base and registry define none)
REGISTRY: dict[str, RewardEntry] = discover(("alignctl.rewards",), "ENTRY", RewardEntry)


def get(name: str) -> RewardEntry:
    """The entry of reward option ``name``; a KeyError naming the valid options otherwise."""
    return lookup(REGISTRY, name, "reward")


def any_text() -> tuple[str, ...]:
    """The rewards that score any text: what a dataset accepts unless it lists its own."""
    return tuple(name for name, entry in REGISTRY.items() if entry.scores_any_text)


def build(cfg_reward: Any, context: RewardContext | None = None) -> Reward:
    """The scoring function of a composed ``cfg.reward`` (loads models, imports user code: call it before
    training, once)."""
    return get(cfg_reward.name).build(cfg_reward, context if context is not None else RewardContext())
