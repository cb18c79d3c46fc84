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
    if cfg.model.name != "tiny":
        raise NotImplementedError(f"model={cfg.model.name}")
    if cfg.dataset.name == "toy_arith":
        from alignctl.data.tasks import toy_arith

        return toy_arith.build_base_model(cfg.dataset, cfg.model)
    from alignctl.data.tasks import toy_sentiment

    return toy_sentiment.build_base_model(cfg.dataset, cfg.model)


def preference_pairs(cfg: RunConfig):
    """A DatasetDict with train/test splits of prompt, chosen, rejected (+ rewards)."""
    if cfg.dataset.name == "toy_sentiment":
        from alignctl.data.tasks import toy_sentiment

        return toy_sentiment.build_pairs(cfg.dataset, cfg.model)
    raise NotImplementedError(f"dataset={cfg.dataset.name}")


def candidates(cfg: RunConfig):
    """A DatasetDict with train/test splits of prompt, completions (K, best first), rewards (data kind "candidates")."""
    if cfg.dataset.name == "toy_sentiment":
        from alignctl.data.tasks import toy_sentiment

        return toy_sentiment.build_candidates(cfg.dataset, cfg.model)
    raise NotImplementedError(f"dataset={cfg.dataset.name}")


def negatives(cfg: RunConfig):
    """A DatasetDict with train/test splits of prompt, negative, samples (K self-samples; data kind "negatives")."""
    if cfg.dataset.name == "toy_sentiment":
        from alignctl.data.tasks import toy_sentiment

        return toy_sentiment.build_negatives(cfg.dataset, cfg.model)
    raise NotImplementedError(f"dataset={cfg.dataset.name}")


def prompt_groups(cfg: RunConfig):
    """A DatasetDict with a train split of prompts (one column, "prompt") to sample groups for (data kind "groups");
    the completions come from the policy online and are scored by `reward(cfg)`."""
    from datasets import Dataset, DatasetDict

    if cfg.dataset.name == "toy_arith":
        from alignctl.data.tasks import toy_arith

        train = toy_arith.prompts(cfg.dataset, "train")
    elif cfg.dataset.name == "toy_sentiment":
        from alignctl.data.tasks import toy_sentiment

        train = toy_sentiment.train_prompts(cfg.dataset)
    else:
        raise NotImplementedError(f"dataset={cfg.dataset.name}")
    return DatasetDict({"train": Dataset.from_dict({"prompt": train})})


DATASETS = {  # by Objective.data
    "pairs": preference_pairs, "candidates": candidates, "negatives": negatives, "groups": prompt_groups,
}


def training_data(cfg: RunConfig, entry: Objective):
    """The train split of the objective's data kind, with its `label_noise` data option (if any) applied."""
    if entry.data not in DATASETS:
        raise NotImplementedError(f"objective={entry.name} needs {entry.data} data, which no builder makes yet")
    train = DATASETS[entry.data](cfg)["train"]
    share = cfg.objective.label_noise if "label_noise" in dict(entry.data_options) else 0.0
    return flip_labels(train, share, cfg.train.seed) if share else train


def flip_labels(dataset, share: float, seed: int):
    """Label noise: round(share * N) rows, drawn with `seed`, get their preference reversed. Pairs swap chosen and
    rejected (and their rewards); candidates keep their completions but reverse their rewards, i.e. the labels."""
    import random

    flipped = set(random.Random(seed).sample(range(len(dataset)), round(share * len(dataset))))
    columns = set(dataset.column_names)
    if "rewards" not in columns and not {"chosen", "rejected"} <= columns:
        raise ValueError(f"label noise needs pairs or ranked candidates, not columns {sorted(columns)}")

    def flip(row: dict, index: int) -> dict:
        if index not in flipped:
            return row
        if "rewards" in columns:
            return {**row, "rewards": row["rewards"][::-1]}
        swapped = {"chosen": row["rejected"], "rejected": row["chosen"]}
        if {"chosen_reward", "rejected_reward"} <= columns:
            swapped |= {"chosen_reward": row["rejected_reward"], "rejected_reward": row["chosen_reward"]}
        return {**row, **swapped}

    return dataset.map(flip, with_indices=True, keep_in_memory=True, desc="Flipping labels")


def eval_prompts(cfg: RunConfig, split: str = "test") -> list[str]:
    """Held-out prompts: "test" (every dataset) or "ood" (datasets with an out-of-distribution split: toy_arith)."""
    if cfg.dataset.name == "toy_arith":
        from alignctl.data.tasks import toy_arith

        return toy_arith.prompts(cfg.dataset, split)
    if split != "test":
        raise ValueError(f"dataset={cfg.dataset.name} has no {split!r} split")
    if cfg.dataset.name == "toy_sentiment":
        from alignctl.data.tasks import toy_sentiment

        return toy_sentiment.eval_prompts(cfg.dataset)
    raise NotImplementedError(f"dataset={cfg.dataset.name}")


def reward(cfg: RunConfig) -> Reward:
    if cfg.reward.name == "sentiment":
        from alignctl.rewards.sentiment import sentiment

        return sentiment
    if cfg.reward.name == "exact_match":
        from alignctl.rewards.exact_match import exact_match

        return exact_match
    raise NotImplementedError(f"reward={cfg.reward.name}")


def has_ood_split(cfg: RunConfig) -> bool:
    return cfg.dataset.name == "toy_arith"


def has_pairs(cfg: RunConfig) -> bool:
    from alignctl.config import DATASET_DATA

    return "pairs" in DATASET_DATA.get(cfg.dataset.name, ())


def objective(cfg: RunConfig) -> tuple[Objective, Divergence | None]:
    return objectives.get(cfg.objective.name), cfg.divergence.build()
