"""Reward options by name: option name == module name == registry key == conf/reward/<name>.yaml."""

from __future__ import annotations

from typing import Any

from alignctl.rewards import classifier, exact_match, function, sentiment
from alignctl.rewards.base import Reward, RewardContext, RewardEntry

REGISTRY: dict[str, RewardEntry] = {m.ENTRY.name: m.ENTRY for m in (sentiment, exact_match, classifier, function)}


def get(name: str) -> RewardEntry:
    """The entry of reward option ``name``; a KeyError naming the valid options otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown reward {name!r}; choose one of: {', '.join(REGISTRY)}") from None


def build(cfg_reward: Any, context: RewardContext | None = None) -> Reward:
    """The scoring function of a composed ``cfg.reward`` (loads models, imports user code: call it before
    training, once)."""
    return get(cfg_reward.name).build(cfg_reward, context if context is not None else RewardContext())
