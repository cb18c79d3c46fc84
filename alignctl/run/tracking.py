"""Experiment tracking: a W&B run (offline unless WANDB_MODE says otherwise) or a null tracker, same methods.

One run directory is one W&B run, also across resumes: the run id is kept in the run directory (run.json) and a
resumed run continues it. W&B's step is the trainer's global step, so a run resumed from checkpoint-N rewinds the W&B
run to step N (`resume_from`, which offline mode records as a branch point for `wandb sync`) and the history holds
every step once, even when the killed process had logged steps past its last checkpoint. (`resume="allow"` alone,
offline, starts the new file at step 0 with no rewind point.) Rows reach the offline file within
TRANSACTION_LOG_FLUSH_S; a process killed (-9) within that time of a checkpoint loses the rows W&B had not flushed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from transformers.integrations import WandbCallback
from transformers.integrations.integration_utils import rewrite_logs

TRANSACTION_LOG_FLUSH_S = 1.0  # wandb>=0.31's x_transaction_log_flush_interval, where it exists
# What transformers' Trainer logs once, at the end of training (not a step): W&B keeps these in the run summary.
SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos")


def is_final_summary(logs: dict[str, Any]) -> bool:
    """Whether `logs` is Trainer's end-of-training summary rather than a step's metrics."""
    return "train_runtime" in logs


class NullTracker:
    report_to: list[str] = []
    run_id: str | None = None

    def attach(self, trainer, step_offset: int = 0, final: bool = True) -> None:
        pass

    def summary(self, metrics: dict[str, Any], prefix: str = "eval/") -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class StepWandbCallback(WandbCallback):
    """transformers' WandbCallback with W&B's step = the trainer's global step (what a resumed run rewinds to), and
    Trainer's end-of-training summary in the run summary only (the stock callback also logs it as one more history
    row for the last step). A run stopped before max_steps (a signal) has no end-of-training summary.
    train.rounds > 1: each round's Trainer counts from 0; W&B's step is the run's, `step_offset` + the round's, and
    only the last round (`final`) has the run's summary."""

    def __init__(self, step_offset: int = 0, final: bool = True) -> None:
        super().__init__()
        self.step_offset, self.final = step_offset, final

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if self._wandb is None or not logs:
            return
        if not self._initialized:
            self.setup(args, state, model)
        if not state.is_world_process_zero:
            return
        if is_final_summary(logs):
            if state.global_step >= state.max_steps and self.final:
                self._wandb.run.summary.update({k: v for k, v in logs.items() if k in SUMMARY_KEYS})
            return
        # same flow as WandbCallback.on_log (rewrite_logs: loss -> train/loss ...), with the step given and the row
        # committed now (W&B otherwise holds a step's row open until the next step: a killed run would lose it)
        step = self.step_offset + state.global_step
        self._wandb.log({**rewrite_logs(logs), "train/global_step": step}, step=step, commit=True)


class WandbTracker(NullTracker):
    """Owns the W&B run; the trainer's StepWandbCallback (attach) finds it already open and logs into it."""

    report_to = ["wandb"]

    def __init__(
        self,
        run_dir: Path,
        config: dict[str, Any],
        tags: list[str],
        run_id: str | None,
        resume_step: int | None,
        group: str | None = None,
    ) -> None:
        os.environ.setdefault("WANDB_MODE", "offline")  # never touch the network unless the user asks
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self._wandb = wandb
        settings = {}
        if "x_transaction_log_flush_interval" in getattr(wandb.Settings, "model_fields", {}):
            # rows reach the run's .wandb file within a second (default 15 s): what a killed run keeps
            settings["x_transaction_log_flush_interval"] = TRANSACTION_LOG_FLUSH_S
        common = dict(
            settings=wandb.Settings(**settings),
            project=os.environ.get("WANDB_PROJECT", "alignctl"),
            dir=str(run_dir),
            name=run_dir.name,
            config=config,
            tags=tags,
            group=group,  # a sweep's runs, together in W&B's UI
            reinit="finish_previous",  # a multirun sweep runs its jobs in one process
        )
        if run_id is None:
            self.run = wandb.init(**common)
        elif resume_step is None:  # nothing trained in this process (evaluation only): add to the same run
            self.run = wandb.init(id=run_id, resume="allow", **common)
        else:
            try:  # rewind: history after the checkpoint's step (logged by the killed process) is replaced
                self.run = wandb.init(resume_from=f"{run_id}?_step={resume_step}", **common)
            except Exception as e:  # noqa: BLE001 - a server without rewind: continue the run, W&B drops old steps
                print(f"alignctl: W&B cannot rewind run {run_id} ({e}); resuming it instead", file=sys.stderr)
                self.run = wandb.init(id=run_id, resume="allow", **common)
        self.run_id = self.run.id

    def attach(self, trainer, step_offset: int = 0, final: bool = True) -> None:
        """Swap the trainer's stock WandbCallback (report_to=["wandb"]) for StepWandbCallback, last in line so it
        sees what earlier callbacks (MetricsFile's whole-run train_loss) wrote into the logs."""
        trainer.remove_callback(WandbCallback)
        trainer.add_callback(StepWandbCallback(step_offset, final))

    def summary(self, metrics: dict[str, Any], prefix: str = "eval/") -> None:
        self.run.summary.update({f"{prefix}{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def start(
    kind: str,
    run_dir: Path,
    config: dict[str, Any],
    tags: list[str],
    run_id: str | None = None,
    resume_step: int | None = None,
    group: str | None = None,
) -> NullTracker:
    """The run's tracker. run_id: the W&B run this run directory started (continued, not replaced); resume_step: the
    checkpoint's global step when resuming training from it; group: the W&B group (sweep_group)."""
    return WandbTracker(run_dir, config, tags, run_id, resume_step, group) if kind == "wandb" else NullTracker()


def sweep_group(run_dir: Path) -> str | None:
    """The W&B group of a sweep's job: its sweep directory's name (the parent of its run directory); None for a
    single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return run_dir.resolve().parent.name
    return None
