"""Experiment tracking: a W&B run (offline unless WANDB_MODE says otherwise) or a null tracker, same methods."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class NullTracker:
    report_to: list[str] = []

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbTracker(NullTracker):
    """Owns the W&B run; TRL's WandbCallback finds it already open and logs training metrics into it."""

    report_to = ["wandb"]

    def __init__(self, run_dir: Path, config: dict[str, Any], tags: list[str]) -> None:
        os.environ.setdefault("WANDB_MODE", "offline")  # never touch the network unless the user asks
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self._wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "alignctl"),
            dir=str(run_dir),
            name=run_dir.name,
            config=config,
            tags=tags,
            reinit="finish_previous",  # a multirun sweep runs its jobs in one process
        )

    def summary(self, metrics: dict[str, Any]) -> None:
        self.run.summary.update({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})

    def finish(self) -> None:
        self.run.finish()


def start(kind: str, run_dir: Path, config: dict[str, Any], tags: list[str]) -> NullTracker:
    return WandbTracker(run_dir, config, tags) if kind == "wandb" else NullTracker()
