"""How training shows its progress: TRL's live rich panel on a terminal; plain lines where output is piped or logged
(a SLURM log, `| tee`), where a live panel would be dumped frame by frame with its borders cut."""

from __future__ import annotations

import math
import sys
from typing import Any

from rich.console import Console
from transformers import TrainerCallback
from trl.trainer.callbacks import RichProgressCallback

# what each plain line shows first, when logged; then the rest in the order logged
FIRST = ("loss", "grad_norm", "learning_rate", "rewards/margins", "rewards/accuracies", "reward", "kl")


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def plain_line(step: int, max_steps: int, logs: dict[str, Any]) -> str:
    """One line for one logged step: `step 3/200  loss=0.6931  grad_norm=0.92 ...`; the end-of-training summary
    (train_runtime, ...) as `done  train_loss=...`."""
    keys = [k for k in FIRST if k in logs] + [k for k in logs if k not in FIRST]
    fields = "  ".join(f"{k}={_value(logs[k])}" for k in keys if isinstance(logs[k], (int, float, str)))
    head = "done" if "train_runtime" in logs else f"step {step}/{max_steps}"
    return f"{head}  {fields}"


class PlainProgress(TrainerCallback):
    """One line per logged step on stdout (rank 0 only), flushed at once so a log file follows the run."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            print(plain_line(state.global_step, state.max_steps, logs), flush=True)


def progress_callback() -> type[TrainerCallback]:
    """TRL's rich panel where stdout is a terminal (where it draws), else plain lines."""
    return RichProgressCallback if Console(file=sys.stdout).is_terminal else PlainProgress
