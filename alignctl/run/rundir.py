"""A run directory and its lifecycle: claimed by one process at a time (an O_EXCL claim file, flock-ed while a
process uses it), planned (fresh, resume from a checkpoint, evaluate only, or already finished), resumed only with
the config it was trained with, and stopped by SIGINT/SIGTERM without a traceback."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from alignctl.config import schema as config
from alignctl.config.compose import RESOLVED_CONFIG
from alignctl.errors import UsageError

try:
    import fcntl
except ImportError:  # not POSIX: run directories are claimed (O_EXCL) but not locked against concurrent resumes
    fcntl = None



class Interrupted(BaseException):
    """SIGINT/SIGTERM where alignctl stops at once (a BaseException: no `except Exception` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def stop_on_signals() -> dict[int, Any]:
    """SIGINT/SIGTERM raise Interrupted (one line and exit 128 + signal, not a traceback); the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}


# ---------------------------------------------------------------------------------------------------------------
# Run directories: claimed by one process at a time, resumed only with the config they were trained with.

RUN_RECORD = "run.json"  # provenance and where the run stands: {"status": running|interrupted|trained|finished, ...}
CLAIM_FILE = ".alignctl-claim"  # created O_EXCL by the run that owns the directory; flock-ed while a process uses it
CHECKPOINTS = "checkpoints"
# What a run leaves in its directory; any of them (without a claim file: a run from before claims) means "taken".
RESULTS = (RESOLVED_CONFIG, RUN_RECORD, "metrics.jsonl", CHECKPOINTS, "model", "eval.json")
# Keys a resumed run may change: how long it trains, how many threads, how it is evaluated, tracked and launched (a
# key ending in "." stands for every key under it).
CHANGEABLE_ON_RESUME = (
    "train.resume", "train.overwrite", "train.max_steps", "train.num_threads", "tracking", "eval.", "launcher.",
    "distributed.",
)


class RunClaim:
    """This process's hold on a run directory: its claim file, open and flock-ed (the lock goes when the process
    ends, however it ends). fresh: the directory holds no run's results and no live process uses it."""

    def __init__(self, path: Path, fd: int, created: bool, locked: bool) -> None:
        self.path, self.fd, self.created, self.locked = path, fd, created, locked
        self.fresh = locked and not any((path / name).exists() for name in RESULTS)

    def describe(self) -> None:
        """Who holds the directory (named in the message a second process gets)."""
        info = {"pid": os.getpid(), "host": platform.node(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, (json.dumps(info) + "\n").encode(), 0)

    def holder(self) -> str:
        try:
            info = json.loads(os.pread(self.fd, 4096, 0) or b"{}")
            return f" (pid {info['pid']} on {info['host']}, since {info['since']})"
        except (ValueError, KeyError, TypeError):
            return ""

    def release(self, keep: bool) -> None:
        """Let go; keep=False also removes the claim file if this process created it and holds it (it never ran in
        the directory)."""
        if not keep and self.created and self.locked:
            (self.path / CLAIM_FILE).unlink(missing_ok=True)
        os.close(self.fd)


def _try_claim(path: Path) -> RunClaim:
    path.mkdir(parents=True, exist_ok=True)
    marker = path / CLAIM_FILE
    while True:
        try:
            fd, created = os.open(marker, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            try:
                fd, created = os.open(marker, os.O_RDWR), False
            except FileNotFoundError:  # removed by its creator meanwhile
                continue
        if fcntl is None:  # no locks: the creator of the claim file holds it
            return RunClaim(path, fd, created, locked=created)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return RunClaim(path, fd, created, locked=False)
        try:
            if os.stat(marker).st_ino == os.fstat(fd).st_ino:
                return RunClaim(path, fd, created, locked=True)
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a claim file its creator removed meanwhile: claim the path afresh


def claim_run_dir(path: Path, train: config.TrainConfig, auto_named: bool, dir_key: str = "hydra.run.dir") -> RunClaim:
    """Claim the run directory `path` for this process, exclusively. An automatic (${now:}) name another run holds
    is continued as <name>-2, <name>-3, ...; a directory the user named that holds another run is an error unless
    train.resume (continue it) or train.overwrite (replace it); one a live process uses is always an error.
    dir_key: the override that names the directory (hydra.sweep.dir for a sweep's job), for the messages."""
    if auto_named and train.resume == "true":
        raise UsageError(
            f"train.resume=true continues an existing run directory: name it with {dir_key}=<dir>"
        )
    candidate, n = path, 1
    while True:
        claim = _try_claim(candidate)
        if claim.fresh:
            return claim
        if auto_named:
            claim.release(keep=False)
            n += 1
            candidate = path.with_name(f"{path.name}-{n}")
            continue
        if train.resume == "false" and not train.overwrite:
            claim.release(keep=False)
            raise UsageError(
                f"{path} already holds another run; use train.resume=true (continue it), train.overwrite=true "
                f"(replace it), or another {dir_key}"
            )
        if not claim.locked and fcntl is not None:
            holder = claim.holder()
            claim.release(keep=False)
            raise UsageError(
                f"{path} is in use by a running alignctl{holder}; wait for it, or use another {dir_key}"
            )
        return claim


def claim_sweep_dir(path: Path) -> Path:
    """Create a sweep's directory `path`, or <path>-2, -3, ... if another sweep has it (mkdir is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = path.with_name(f"{path.name}-{n}")


def has_training_output(path: Path) -> bool:
    """Whether a run has trained or evaluated anything in `path` (not only written its config and provenance)."""
    return any((path / name).exists() for name in ("metrics.jsonl", CHECKPOINTS, "model", "eval.json"))


def clear_run_dir(path: Path) -> int:
    """Remove everything a previous run left in `path` (its claim file stays: this process holds it)."""
    removed = 0
    for entry in path.iterdir():
        if entry.name == CLAIM_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed += 1
    move_log_files(path, path)  # log files open on removed paths: reopened (recreated) on their next record
    return removed


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What a run does in its directory: fresh (start), resume (from the checkpoint at `step`), evaluate (trained to
    `step` = max_steps; the evaluation is left), finished (at `step`: nothing to do)."""

    action: str
    step: int = 0


def plan_run(cfg: config.RunConfig, run_dir: Path, dir_key: str = "hydra.run.dir") -> RunPlan:
    """The plan for `cfg` in `run_dir` (reads it, changes nothing). Resuming needs the config the directory was
    trained with, up to CHANGEABLE_ON_RESUME and eval.*."""
    mode = cfg.train.resume
    if mode == "false":
        return RunPlan("fresh")
    if not (run_dir / RESOLVED_CONFIG).is_file():
        if mode == "true":
            raise UsageError(f"train.resume=true but {run_dir} holds no run to resume (no {RESOLVED_CONFIG})")
        return RunPlan("fresh")
    _check_same_config(cfg, run_dir, dir_key)
    record = read_run_record(run_dir)
    status, step = record.get("status"), record.get("step")
    checkpoint = last_checkpoint(run_dir)
    reached = max(step or 0, checkpoint[1] if checkpoint else 0)
    if reached > cfg.train.max_steps:
        raise UsageError(
            f"train.max_steps={cfg.train.max_steps} but {run_dir} is already at step {reached}; resume with "
            f"train.max_steps>={reached}"
        )
    model_saved = (run_dir / "model" / "config.json").is_file()
    if model_saved and step == cfg.train.max_steps and status in ("finished", "trained"):
        return RunPlan("finished" if status == "finished" else "evaluate", step)
    if "status" not in record and model_saved and checkpoint and checkpoint[1] == cfg.train.max_steps:
        return RunPlan("finished", checkpoint[1])  # a run from before run.json recorded completion
    if checkpoint is not None:
        return RunPlan("resume", checkpoint[1])
    if mode == "true":
        raise UsageError(f"train.resume=true but {run_dir / CHECKPOINTS} holds no checkpoint to resume from")
    return RunPlan("fresh")  # auto: the run never reached a checkpoint


def read_run_record(run_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads((run_dir / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def last_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    """The newest complete checkpoint (Trainer writes trainer_state.json last) and its step, or None."""
    folder = run_dir / CHECKPOINTS
    found = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        name, _, step = entry.name.rpartition("-")
        if name == "checkpoint" and step.isdigit() and (entry / "trainer_state.json").is_file():
            found.append((int(step), entry))
    if not found:
        return None
    step, path = max(found)
    return path, step


def _check_same_config(cfg: config.RunConfig, run_dir: Path, dir_key: str) -> None:
    path = run_dir / RESOLVED_CONFIG
    try:
        saved = _flatten(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"{path} is unreadable or corrupt ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}); cannot resume from it") from None
    current = _flatten(yaml.safe_load(OmegaConf.to_yaml(OmegaConf.structured(cfg))))
    unset = object()
    prefixes = tuple(k for k in CHANGEABLE_ON_RESUME if k.endswith("."))
    keys = [k for k in dict.fromkeys([*current, *saved]) if not (k in CHANGEABLE_ON_RESUME or k.startswith(prefixes))]
    differ = [
        f"{key} ({_show(saved.get(key, unset), unset)} -> {_show(current.get(key, unset), unset)})"
        for key in keys
        if saved.get(key, unset) != current.get(key, unset)
    ]
    if differ:
        raise UsageError(
            f"train.resume={cfg.train.resume}: {run_dir} was trained with another config: {', '.join(differ)}; a "
            "resumed run may change only train.max_steps, train.num_threads, eval.*, tracking, launcher.* and distributed.* (or "
            f"use train.overwrite=true, or another {dir_key})"
        )


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        nested = isinstance(value, dict) and value
        flat.update(_flatten(value, f"{prefix}{key}.") if nested else {f"{prefix}{key}": value})
    return flat


def _show(value: Any, unset: object) -> str:
    return "unset" if value is unset else json.dumps(value)


def remove_if_only_logs(path: Path) -> None:
    """Remove a directory Hydra made for a run that went elsewhere, if it holds nothing but empty log files."""
    entries = list(path.iterdir()) if path.is_dir() else None
    if entries is None or not all(e.suffix == ".log" and e.is_file() and e.stat().st_size == 0 for e in entries):
        return
    for entry in entries:
        entry.unlink()
    path.rmdir()


def move_log_files(old: Path, new: Path) -> None:
    """Point the log files Hydra opened in `old` (its job log) at `new`; they reopen on their next record."""
    named = logging.Logger.manager.loggerDict.values()
    loggers = [logging.getLogger(), *(lg for lg in named if isinstance(lg, logging.Logger))]
    for handler in {h for lg in loggers for h in lg.handlers if isinstance(h, logging.FileHandler)}:
        current = Path(handler.baseFilename)
        if current.parent == old.resolve() or current.parent == old:
            handler.close()
            handler.baseFilename = str(new.resolve() / current.name)
