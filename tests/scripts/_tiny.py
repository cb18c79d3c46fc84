"""Shared by the scripts' smoke tests: load a script from scripts/ as a module (its `main(argv)` is called in this
process, as tests/trainers/test_bench_dpo_step.py and tests/eval/test_bench_eval.py do), tiny task sizes, and the
parsing of the tables the scripts print."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import types
from pathlib import Path

from tests import forked

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"

# The embedded toy_sentiment task at the e2e tests' sizes (tests/e2e/test_train_eval.py): small enough to build in
# seconds, large enough that the tiny model's samples give preference pairs.
TINY = [
    "dataset.corpus_size=2000", "dataset.num_train_prompts=24", "dataset.num_test_prompts=8",
    "dataset.max_new_tokens=16", "model.hidden_size=64", "model.num_layers=2", "model.num_heads=2",
    "model.intermediate_size=128", "model.max_position_embeddings=64", "model.pretrain_steps=120",
    "model.pretrain_batch_size=16", "model.pretrain_lr=0.01", "train.batch_size=4", "train.logging_steps=1",
    "train.num_threads=1", "train.save_steps=0", "eval.num_prompts=4", "eval.samples_per_prompt=2",
    "eval.max_new_tokens=8",
]  # fmt: skip


def load_script(name: str):
    """The script as a module whose `alignctl` subprocesses are forks of this process (tests/forked.py): the same
    commands, without each paying the seconds of importing the training stack again."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    if isinstance(getattr(module, "subprocess", None), types.ModuleType):
        module.subprocess = types.SimpleNamespace(**{**vars(subprocess), "run": forked.run, "Popen": forked.Popen})
    return module


def number(text: str) -> float:
    """A printed number (1.23, 4.5e-07, 0.69x, 12%), parsed; fails the test on anything else."""
    value = float(text.rstrip("x%"))
    assert math.isfinite(value), text
    return value


def table_after(lines: list[str], header_start: str, n_rows: int) -> tuple[list[str], list[list[str]]]:
    """The whitespace-split header starting with `header_start` and the n_rows lines under it."""
    at = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    return lines[at].split(), [line.split() for line in lines[at + 1 : at + 1 + n_rows]]
