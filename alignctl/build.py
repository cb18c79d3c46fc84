"""RunConfig -> the things a run needs (base model, data, reward, objective): plain lookups by config name."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from alignctl import objectives
from alignctl.config import RunConfig
from alignctl.divergences import Divergence
from alignctl.objectives.base import Objective

Reward = Callable[[list[str], list[str]], list[float]]


def base_model_dir(cfg: RunConfig) -> Path:
    """The SFT/reference model as a plain HF directory (built and cached for the embedded tiny model)."""
    if cfg.model.name == "tiny":
        from alignctl.data.tasks import toy_sentiment

        return toy_sentiment.build_base_model(cfg.dataset, cfg.model)
    raise NotImplementedError(f"model={cfg.model.name}")


def preference_pairs(cfg: RunConfig):
    """A DatasetDict with train/test splits of prompt, chosen, rejected (+ rewards)."""
    if cfg.dataset.name == "toy_sentiment":
        from alignctl.data.tasks import toy_sentiment

        return toy_sentiment.build_pairs(cfg.dataset, cfg.model)
    raise NotImplementedError(f"dataset={cfg.dataset.name}")


def eval_prompts(cfg: RunConfig) -> list[str]:
    if cfg.dataset.name == "toy_sentiment":
        from alignctl.data.tasks import toy_sentiment

        return toy_sentiment.eval_prompts(cfg.dataset)
    raise NotImplementedError(f"dataset={cfg.dataset.name}")


def reward(cfg: RunConfig) -> Reward:
    if cfg.reward.name == "sentiment":
        from alignctl.rewards.sentiment import sentiment

        return sentiment
    raise NotImplementedError(f"reward={cfg.reward.name}")


def objective(cfg: RunConfig) -> tuple[Objective, Divergence | None]:
    return objectives.get(cfg.objective.name), cfg.divergence.build()
