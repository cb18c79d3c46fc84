"""A run directory and its lifecycle: claimed by one process at a time (an O_EXCL claim file, flock-ed while a
process uses it), planned (fresh, resume from a checkpoint, evaluate only, or already finished), resumed only with
the config it was trained with, and stopped by SIGINT/SIGTERM without a traceback.

Which folders are alignctl's, and what alignctl may remove from them. A folder is an alignctl run directory when it
holds a run's record (an alignctl run.json or config.yaml: every run writes run.json first, and runs from before claim
files have them too), or nothing but alignctl's bookkeeping (its claim file, Hydra's job log and .hydra/), e.g. when
empty. Training claims no other folder: one holding anything else is refused before alignctl writes anything there, so
a claim file exists only in a folder that held nothing but alignctl's files when it was claimed. The claim file alone
is no proof (older versions created it in any folder). In a run directory, alignctl's files are the names of
OWN_ENTRIES; anything else is the user's, and alignctl never removes it: train.overwrite=true and a train.resume=auto
restart refuse (exit 2, naming it) rather than clear a run directory that holds something else, and remove nothing.
`alignctl eval` never writes into another run's directory, nor over an eval.json of another model
(check_eval_out_dir)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import signal
import stat
import threading
import time
from collections.abc import Iterable
from fnmatch import fnmatchcase
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
# train.rounds > 1 (iterative DPO): rounds/round-<k>/ holds round k's checkpoints while it trains and, for every round
# but the last (whose model is the run's model/), the model it ended with (the next round starts from it).
ROUNDS = "rounds"
# What a run leaves in its directory; any of them (without a claim file: a run from before claims) means "taken".
RESULTS = (RESOLVED_CONFIG, RUN_RECORD, "metrics.jsonl", CHECKPOINTS, "model", "eval.json", ROUNDS)
HYDRA_JOB_LOG = "launch.log"  # Hydra's job log, <hydra.job.name>.log: the job is alignctl.run.launch's _hydra_entry
# What alignctl writes into a directory before (or while) claiming it, whether or not a run follows.
BOOKKEEPING = (CLAIM_FILE, HYDRA_JOB_LOG, ".hydra", RUN_RECORD + ".partial")
# Everything alignctl writes into a run directory (names, or fnmatch patterns): the only entries it ever removes there
# (train.overwrite=true, a train.resume=auto restart, a new run that failed before its first step). Names kept as
# literals: the modules that write them import torch, and this one is imported before any heavy library loads
# (tests/e2e/test_run_dir_ownership.py checks that a run with every writer on leaves nothing else; the unit test
# tests/run/test_rundir_ownership.py checks the names imported from their writers).
OWN_ENTRIES = (
    *BOOKKEEPING, *RESULTS,
    "curve.jsonl",  # eval.every_steps (alignctl.eval.curve.CURVE_FILE)
    "eval_samples.jsonl", "reliability.json", "reliability.png",  # evaluate_and_report (alignctl.run.evaluate)
    "alpaca_eval", "arena_hard",  # eval.export's folders (alignctl.run.evaluate.export_completions)
    "wandb",  # tracking=wandb: wandb.init(dir=<run dir>)
    "error.log",  # the traceback of a run that failed in alignctl's or a library's code (alignctl.run.train.ERROR_LOG)
    # `alignctl report <run dir>` (out= defaults to it): alignctl.report.tables.report and report.plots.write_figures
    "report.md", "report.csv", "frontier*.png", "length*.png", "diversity*.png", "pass_at_k*.png", "reliability*.png",
    "matched_kl*.png",  # the report's equal-KL comparison (alignctl.report.matched_kl)
    "mechanisms*.png",  # the report's curve quantities over steps (alignctl.report.plots.mechanisms)
)  # fmt: skip
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
    train.resume (continue it) or train.overwrite (replace it); one a live process uses is always an error; a folder
    that is not alignctl's (module docstring) is an error, and is left as it was (no claim file, no job log).
    dir_key: the override that names the directory (hydra.sweep.dir for a sweep's job), for the messages."""
    if auto_named and train.resume == "true":
        raise UsageError(
            f"train.resume=true continues an existing run directory: name it with {dir_key}=<dir>"
        )
    candidate, n = path, 1
    while True:
        claim, foreign = _claim_if_alignctls(candidate)
        if claim is not None and claim.fresh:
            return claim
        if auto_named:
            if claim is not None:
                claim.release(keep=False)
            else:
                _drop_empty_job_logs(candidate)
            n += 1
            candidate = path.with_name(f"{path.name}-{n}")
            continue
        if claim is None:
            _drop_empty_job_logs(candidate)  # Hydra opened it there before this job ran
            raise UsageError(
                f"{path} is not an alignctl run directory and is not empty: it holds {describe_entries(foreign)}; "
                f"train into a new or empty folder (another {dir_key}=<dir>)"
            )
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


def _claim_if_alignctls(path: Path) -> tuple[RunClaim | None, list[str]]:
    """The claim of `path`, or None and what it holds that is not alignctl's (see the module docstring). Judged
    before the claim file is created where there is none (nothing is written into a folder that is not alignctl's),
    and again once the claim is held (the folder can no longer change under alignctl)."""
    if path.is_dir() and not (path / CLAIM_FILE).exists():
        foreign = not_a_run(path)
        if foreign:
            return None, foreign
    claim = _try_claim(path)
    if not claim.locked:  # another process uses it: judged by the caller (in use, or another run)
        return claim, []
    foreign = not_a_run(path)
    if foreign:  # a claim file (of a run that never wrote its record, or of an older alignctl) in a folder not ours
        (path / CLAIM_FILE).unlink(missing_ok=True)
        claim.release(keep=True)
        return None, foreign
    return claim, []


def holds_a_run(path: Path) -> bool:
    """Whether `path` holds an alignctl run's record: its run.json (provenance and status) or its resolved config
    (config.yaml with the run's objective and train sections), as every run, also before claim files, writes."""
    record = read_run_record(path)
    if "command" in record or "status" in record:
        return True
    try:
        saved = yaml.safe_load((path / RESOLVED_CONFIG).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(saved, dict) and {"objective", "train"} <= saved.keys()


def is_alignctls(name: str, also: Iterable[str] = ()) -> bool:
    """Whether an entry of a run directory named `name` is one alignctl writes (OWN_ENTRIES, or a name in `also`)."""
    return name in also or any(fnmatchcase(name, pattern) for pattern in OWN_ENTRIES)


def foreign_entries(path: Path) -> list[str]:
    """What `path` holds that alignctl did not write, sorted (names; a folder with a trailing /): in a run directory,
    every entry not on OWN_ENTRIES; in any other folder, everything but alignctl's bookkeeping. [] if no folder."""
    if not path.is_dir():
        return []
    run = holds_a_run(path)
    logs = _job_logs(path)  # Hydra's job log, also under another hydra.job.name
    entries = sorted(path.iterdir(), key=lambda e: e.name)
    return [
        e.name + ("/" if e.is_dir() and not e.is_symlink() else "")
        for e in entries
        if not (is_alignctls(e.name, logs) if run else (e.name in BOOKKEEPING or e.name in logs))
    ]


def not_a_run(path: Path) -> list[str]:
    """What `path` holds that is not alignctl's, where it holds no run ([]: a run directory, or a folder with nothing
    but alignctl's bookkeeping, or no folder): a folder alignctl must not train in."""
    return [] if holds_a_run(path) else foreign_entries(path)


def describe_entries(names: list[str], shown: int = 3) -> str:
    """The first `shown` names of a folder's entries, for a one-line message: "a, b, c and 4 more"."""
    head = ", ".join(names[:shown])
    return f"{head} and {len(names) - shown} more" if len(names) > shown else head


def _job_logs(path: Path) -> set[str]:
    """The names of the log files this process's logging handlers write in `path` (Hydra's job log)."""
    named = logging.Logger.manager.loggerDict.values()
    loggers = [logging.getLogger(), *(lg for lg in named if isinstance(lg, logging.Logger))]
    handlers = {h for lg in loggers for h in lg.handlers if isinstance(h, logging.FileHandler)}
    folder = path.resolve()
    return {Path(h.baseFilename).name for h in handlers if Path(h.baseFilename).parent.resolve() == folder}


def _drop_empty_job_logs(path: Path) -> None:
    """Remove the empty job log Hydra opened in `path` for a job that does not run there (a folder alignctl refused).
    Its handler keeps the open file: a later record goes to the removed file, never recreates it."""
    for name in _job_logs(path):
        log = path / name
        try:
            if stat.S_ISREG(log.lstat().st_mode) and log.stat().st_size == 0:
                log.unlink()
        except FileNotFoundError:
            pass


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
    return any((path / name).exists() for name in ("metrics.jsonl", CHECKPOINTS, "model", "eval.json", ROUNDS))


def clear_run_dir(path: Path, reason: str = "train.overwrite=true", dir_key: str = "hydra.run.dir") -> int:
    """Remove what a previous run left in `path` (its claim file stays: this process holds it); the entries removed.
    Only alignctl's own entries (OWN_ENTRIES) are ever removed, and only when there is nothing else: a run directory
    that also holds the user's files (a note, a folder copied in, or a folder an older alignctl trained in) is
    refused in one line naming them, and nothing is removed; the user moves them out or picks another directory.
    (Removing alignctl's files around them would leave a half run mixed with them.) reason: the option that asked
    for it, and dir_key the override naming the directory, for the message."""
    foreign = foreign_entries(path)
    if foreign:
        raise UsageError(
            f"{reason} would remove the previous run from {path}, but it also holds what alignctl did not write: "
            f"{describe_entries(foreign)}; nothing was removed: move that out of {path}, or use another {dir_key}"
        )
    removed = _remove_own_entries(path, keep=(CLAIM_FILE,))
    move_log_files(path, path)  # log files open on removed paths: reopened (recreated) on their next record
    return removed


def remove_run_dir(path: Path) -> None:
    """Remove a run directory a new run claimed and left before training (bad input found at load): alignctl's own
    entries, then the folder if nothing else is left in it (anything else is the user's and stays)."""
    if not path.is_dir():
        return
    _remove_own_entries(path, keep=())
    try:
        path.rmdir()
    except OSError:  # not empty: what stays is not alignctl's
        pass


def _remove_own_entries(path: Path, keep: tuple[str, ...]) -> int:
    removed = 0
    logs = _job_logs(path)
    for entry in path.iterdir():
        if entry.name in keep or not is_alignctls(entry.name, logs):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


def check_eval_out_dir(out_dir: Path, model_dir: Path) -> None:
    """Refuse (UsageError) an eval of the model in `model_dir` whose results (eval.json, eval_samples.jsonl,
    reliability.*, exports) would replace another model's in `out_dir`:
    - out_dir holds a run (holds_a_run) and model_dir is not that run's own `model`: that run's results are its own;
      a run evaluated into its own directory (`alignctl eval run_dir=R`, and training's own eval) replaces them;
    - out_dir is no run but holds an eval.json that records another model_dir (or none, or cannot be read): another
      evaluation's results; the same model evaluated again into its out_dir replaces them.
    Paths are compared resolved (a relative model_dir recorded in eval.json: from the current directory)."""
    if not out_dir.is_dir():
        return
    model = model_dir.resolve()
    if holds_a_run(out_dir):
        if (out_dir / "model").resolve() != model:
            raise UsageError(
                f"out_dir={out_dir} is another run's directory (its model is {out_dir / 'model'}, not {model_dir}): "
                f"its results are that run's own; give a new or empty out_dir=<dir> (alignctl eval "
                f"run_dir={out_dir} re-evaluates that run)"
            )
        return
    results = out_dir / "eval.json"
    if not results.exists():
        return
    try:
        recorded = json.loads(results.read_text()).get("model_dir")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if not isinstance(recorded, str) or Path(recorded).resolve() != model:
        whose = f"of the model {recorded}" if isinstance(recorded, str) else "alignctl cannot attribute to a model"
        raise UsageError(
            f"out_dir={out_dir} already holds an eval.json {whose}: evaluating {model_dir} there would replace it; "
            "give a new or empty out_dir=<dir>"
        )


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What a run does in its directory: fresh (start), resume (from the checkpoint at `step`), evaluate (trained to
    `step` = max_steps; the evaluation is left), finished (at `step`: nothing to do)."""

    action: str
    step: int = 0


def plan_run(cfg: config.RunConfig, run_dir: Path, dir_key: str = "hydra.run.dir") -> RunPlan:
    """The plan for `cfg` in `run_dir` (reads it, changes nothing). Resuming needs the config the directory was
    trained with, up to CHANGEABLE_ON_RESUME and eval.*. Steps are the run's: with train.rounds > 1 they count on
    across rounds (round k's step s is (k - 1) * train.max_steps + s)."""
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
    total = cfg.train.max_steps * cfg.train.rounds
    if reached > total:
        rounds = f" x train.rounds={cfg.train.rounds}" if cfg.train.rounds > 1 else ""
        raise UsageError(
            f"train.max_steps={cfg.train.max_steps}{rounds} but {run_dir} is already at step {reached}; resume with "
            f"train.max_steps>={reached}"
        )
    model_saved = (run_dir / "model" / "config.json").is_file()
    if model_saved and step == total and status in ("finished", "trained"):
        return RunPlan("finished" if status == "finished" else "evaluate", step)
    if "status" not in record and model_saved and checkpoint and checkpoint[1] == total:
        return RunPlan("finished", checkpoint[1])  # a run from before run.json recorded completion
    if checkpoint is not None:
        return RunPlan("resume", checkpoint[1])
    done = rounds_done(run_dir)
    if done:  # killed between rounds: the next round starts from the last round's model
        return RunPlan("resume", done * cfg.train.max_steps)
    if mode == "true":
        raise UsageError(f"train.resume=true but {run_dir / CHECKPOINTS} holds no checkpoint to resume from")
    return RunPlan("fresh")  # auto: the run never reached a checkpoint


def round_dir(run_dir: Path, number: int) -> Path:
    """Where round `number` (1-based) of a train.rounds > 1 run keeps its checkpoints and its final model."""
    return run_dir / ROUNDS / f"round-{number}"


def rounds_done(run_dir: Path) -> int:
    """How many rounds of a train.rounds > 1 run ended with their model saved (whole: it is written to a temporary
    folder and renamed), counted from round 1; 0 for a run without rounds."""
    done = 0
    while (round_dir(run_dir, done + 1) / "model" / "config.json").is_file():
        done += 1
    return done


def read_run_record(run_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads((run_dir / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def checkpoints_dir(run_dir: Path) -> Path:
    """Where the run's training checkpoints: its checkpoints/, or with train.rounds > 1 its current round's (the first
    whose model is not saved yet)."""
    if (run_dir / ROUNDS).is_dir():
        return round_dir(run_dir, rounds_done(run_dir) + 1) / CHECKPOINTS
    return run_dir / CHECKPOINTS


def last_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    """The newest complete checkpoint and its step (the run's: across rounds with train.rounds > 1), or None. A run
    with rounds checkpoints in its current round's folder: the first round whose model is not saved yet."""
    folder, rounds = checkpoints_dir(run_dir), run_dir / ROUNDS
    found = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        name, _, step = entry.name.rpartition("-")
        if name == "checkpoint" and step.isdigit() and is_complete_checkpoint(entry):
            found.append((int(step), entry))
    if not found:
        return None
    step, path = max(found)
    if rounds.is_dir():  # Trainer counts a round's steps from 0; the rounds before it trained max_steps each
        step += rounds_done(run_dir) * json.loads((path / "trainer_state.json").read_text())["max_steps"]
    return path, step


def is_complete_checkpoint(folder: Path) -> bool:
    """Trainer writes trainer_state.json last, and removes the previous checkpoint only after it: a checkpoint is
    complete when that file is there and whole (a write cut short by a full disk or a kill leaves it absent or
    truncated, which JSON refuses)."""
    try:
        return isinstance(json.loads((folder / "trainer_state.json").read_text()), dict)
    except (OSError, ValueError):
        return False


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
    if cfg.train.rounds > 1 and saved.get("train.max_steps", cfg.train.max_steps) != cfg.train.max_steps:
        differ.append(f"train.max_steps ({saved['train.max_steps']} -> {cfg.train.max_steps}: the steps of each of "
                      f"train.rounds={cfg.train.rounds} rounds cannot change once a round has trained)")
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
