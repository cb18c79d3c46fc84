"""Benchmarks through lm-evaluation-harness (lm-eval 0.4.13): the policy and the reference on the same lm-eval tasks,
side by side (the alignment tax).

- :func:`check_tasks` runs before any model loads: every name in ``eval.lm_eval.tasks`` is a task, group or tag that
  lm-eval knows (its own task YAMLs plus those under ``eval.lm_eval.include_path``), and, while the hub is off
  (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) or unreachable (no TCP connection to ``HF_ENDPOINT``, asked only
  when a task would download), every task under it reads local data or data already in the HF cache. A failure
  is one line (:class:`~alignctl.errors.UsageError`).
- :func:`run_lm_eval` evaluates an already-loaded model with ``lm_eval.simple_evaluate`` (``HFLM(pretrained=<model>,
  tokenizer=<tokenizer>)``), seeded, without samples, hub logging or progress output, and returns
  ``{task: {metric: value}}`` with readable metric names (``"acc,none"`` -> ``"acc"``, ``"acc_stderr,none"`` ->
  ``"acc_stderr"``, ``"exact_match,strict-match"`` -> ``"exact_match/strict-match"``).

How lm-eval finds data, and what the offline check relies on (read from lm-eval 0.4.13's source):

- ``TaskManager(include_path=...)`` indexes every ``*.yaml`` under lm-eval's ``tasks/`` folder (about 14.7k names,
  ~8 s on 2 cores) and then under ``include_path`` (later folders win on a name clash); a folder that does not exist
  is indexed as empty, silently, so :func:`check_tasks` checks it first. A request whose names are all tasks
  under ``include_path`` skips lm-eval's own folder (same tasks, seconds less); the index is kept per process.
- A task's data is ``datasets.load_dataset(dataset_path, name=dataset_name, **dataset_kwargs)``. ``dataset_kwargs:
  {data_files: ...}`` of a file builder (``dataset_path: json``, ``csv``, ``parquet``...) are resolved by
  ``datasets``, against the working directory, not against the YAML's folder: a relative path works only from
  where it was written for, so the check says which file is missing and where it looked.
- ``custom_dataset: !function ...`` and Python-class tasks build their data in code: trusted when the YAML is the
  user's (under ``include_path``), counted as needing the hub when it is one of lm-eval's own.
- A hub dataset still loads offline when ``datasets`` has it cached (``$HF_DATASETS_CACHE/<org>___<name>`` or the
  hub cache's ``datasets--<org>--<name>``); the check accepts those folders and otherwise says to define a local
  task. Online, a hub dataset passes the check (lm-eval downloads it).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import glob
import logging
import math
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignctl.data.tasks.tiny_lm import preserved_rng
from alignctl.errors import UsageError
from alignctl.models.files import quiet

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TASKS_FIELD = "eval.lm_eval.tasks"
INCLUDE_FIELD = "eval.lm_eval.include_path"
DEFAULT_SEED = 1234  # lm-eval's default numpy/torch/fewshot seed (its Python `random` seed defaults to 0)
LOCAL_TASK_HINT = (
    f"define a local task instead: a task YAML with dataset_path: json and dataset_kwargs: {{data_files: {{test: "
    f"<absolute path of a .jsonl>}}}} in a folder given as {INCLUDE_FIELD}=<folder of task YAMLs>"
)
# datasets' packaged builders: their files come from dataset_kwargs.data_files / data_dir, not from a hub repository
FILE_BUILDERS = frozenset(
    {"json", "csv", "parquet", "text", "arrow", "pandas", "xml", "webdataset", "imagefolder", "audiofolder",
     "videofolder"}
)  # fmt: skip
_TRUE = {"1", "ON", "YES", "TRUE"}  # how huggingface_hub and datasets read their *_OFFLINE variables
_HUB_TIMEOUT_S = 5.0  # a connection to the hub's endpoint that takes longer counts as none
_MAX_DEPTH = 16  # groups nest a few levels (mmlu -> mmlu_stem -> tasks); deeper means a cycle


# ---------------------------------------------------------------------------------------------------------------
# Checking the task list (before any model loads)


def check_tasks(tasks: Sequence[str], include_path: str | None) -> None:
    """Every name is an lm-eval task, group or tag, and (while offline) none needs the hub; else one-line
    UsageError naming ``eval.lm_eval.tasks`` or ``eval.lm_eval.include_path``. Loads no model and no data."""
    if isinstance(tasks, str) or not tasks or not all(isinstance(t, str) and t for t in tasks):
        raise UsageError(
            f"{TASKS_FIELD}={_show(tasks)} must be a non-empty list of lm-eval task names, e.g. "
            f"{TASKS_FIELD}=[arc_easy,hellaswag]"
        )
    root = _include_root(include_path)
    index = _lookup(root, tuple(tasks))
    for name in tasks:
        if name not in index:
            raise UsageError(_unknown_message(name, sorted(index), root))
    offline = _offline()
    for name in tasks:
        for leaf, cfg, yaml_path in _leaves(index, name, {}, 0):
            where = f"task {leaf!r}" + (f" (of {name!r})" if leaf != name else "")
            own = root is not None and yaml_path is not None and _is_under(yaml_path, root)
            problem = _local_problem(cfg)
            if problem is not None:
                raise UsageError(f"{TASKS_FIELD}: {where} cannot load its data: {problem}")
            hub = _hub_source(cfg, own)
            if hub is None or _cached(cfg.get("dataset_path")):
                continue
            if offline:
                raise UsageError(
                    f"{TASKS_FIELD}: {where} needs the network ({hub}, not in the local HF cache) and the hub is "
                    f"off (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE); {LOCAL_TASK_HINT}"
                )
            unreachable = _unreachable(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
            if unreachable is not None:
                raise UsageError(
                    f"{TASKS_FIELD}: {where} needs the network ({hub}, not in the local HF cache) and {unreachable}; "
                    f"{LOCAL_TASK_HINT}"
                )


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def _include_root(include_path: str | None) -> Path | None:
    if include_path in (None, ""):
        return None
    root = Path(str(include_path)).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.is_file() else "does not exist"
        raise UsageError(f"{INCLUDE_FIELD}={include_path} {what}; give a folder of lm-eval task YAMLs")
    return root.resolve()


def _unknown_message(name: str, known: Sequence[str], root: Path | None) -> str:
    close = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
    searched = "lm-eval's tasks" + (f" and {INCLUDE_FIELD}={root}" if root is not None else "")
    hint = f"close matches: {', '.join(close)}" if close else "`lm-eval ls tasks` lists the names"
    return (
        f"{TASKS_FIELD}: no task, group or tag named {name!r} in {searched}; {hint} "
        f"(your own task YAMLs: {INCLUDE_FIELD}=<folder>)"
    )


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().upper() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


@functools.cache
def _unreachable(endpoint: str) -> str | None:
    """Why the hub at `endpoint` cannot be reached (one phrase), or None when a TCP connection to it opens. Asked
    only for a task that would download, once per endpoint and process: without it, a machine with no network would
    train first and fail at the benchmark, or hang in lm-eval's retries."""
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=_HUB_TIMEOUT_S).close()
    except OSError as e:
        return f"the hub cannot be reached ({endpoint}: {e.strerror or type(e).__name__})"
    return None


def _is_under(path: Path | str, root: Path) -> bool:
    return Path(path).resolve().is_relative_to(root)


@functools.cache
def _index(root: Path | None, defaults: bool) -> Any:
    """lm-eval's TaskManager over its own YAMLs (``defaults``) and ``root``; built once per process."""
    # lm-eval (and the `datasets` it imports) is heavy: imported on first use
    from lm_eval.tasks import TaskManager

    with _quiet_lm_eval():
        return TaskManager(include_path=str(root) if root is not None else None, include_defaults=defaults)


def _all_local(root: Path | None, tasks: tuple[str, ...]) -> bool:
    """Every name is a task (not a group or tag, which may name lm-eval's own tasks) of the user's folder."""
    if root is None:
        return False
    entries = [_index(root, False).task_index.get(t) for t in tasks]
    return all(e is not None and e.kind.name in ("TASK", "PY_TASK") for e in entries)


def _lookup(root: Path | None, tasks: tuple[str, ...]) -> dict[str, Any]:
    """name -> lm-eval index entry, the user's folder winning a clash (as in lm-eval's TaskManager); lm-eval's own
    ~14.7k names are only indexed when a name is not a task of the user's folder."""
    if _all_local(root, tasks):
        return _index(root, False).task_index
    index = dict(_index(None, True).task_index)
    if root is not None:
        index.update(_index(root, False).task_index)
    return index


def _task_manager(root: Path | None, tasks: tuple[str, ...]) -> Any:
    """The TaskManager lm-eval runs the tasks with: the user's folder alone when every name is a task there."""
    if _all_local(root, tasks):
        return _index(root, False)
    return _index(root, True)


def _leaves(index: dict[str, Any], name: str, overrides: dict[str, Any], depth: int) -> Iterator[tuple[str, dict, Any]]:
    """(leaf task name, its config with the group's overrides, its YAML path or None) for a task/group/tag name,
    following lm-eval's TaskFactory: a group's ``task:`` list holds names, ``{task: name, ...overrides}``, inline
    ``{group: ...}`` subgroups and inline task configs. An index entry (``TaskManager.task_index``'s values) has
    ``kind`` (TASK, PY_TASK, GROUP or TAG), ``cfg`` (the YAML with includes merged, ``!function`` left as a path),
    ``yaml_path`` and ``tags`` (a tag's tasks)."""
    if depth > _MAX_DEPTH:
        return
    entry = index[name]
    if entry.kind.name == "TAG":
        for task in sorted(entry.tags):
            if task in index:
                yield from _leaves(index, task, overrides, depth + 1)
    elif entry.kind.name == "GROUP":
        yield from _members(index, name, entry.cfg or {}, overrides, entry.yaml_path, depth)
    else:
        yield name, {**(entry.cfg or {}), **overrides}, entry.yaml_path


def _members(index: dict[str, Any], group: str, cfg: dict, overrides: dict, yaml_path: Any, depth: int) -> Iterator:
    from lm_eval.config.group import GroupConfig  # lm-eval is heavy: imported on first use

    group_fields = set(GroupConfig.__dataclass_fields__)
    inherited = {**{k: v for k, v in cfg.items() if k not in group_fields}, **overrides}
    members = cfg.get("task") or []
    for item in members if isinstance(members, list) else [members]:
        if isinstance(item, str):
            if item in index:
                yield from _leaves(index, item, inherited, depth + 1)
            else:  # lm-eval builds it from the overrides alone
                yield f"{group}::{item}", {**inherited, "task": item}, yaml_path
        elif isinstance(item, dict) and "group" in item:
            own = {k: v for k, v in item.items() if k != "group"}
            if item["group"] in index:
                yield from _leaves(index, item["group"], {**inherited, **own}, depth + 1)
            else:
                yield from _members(index, f"{group}::{item['group']}", item, inherited, yaml_path, depth + 1)
        elif isinstance(item, dict) and "task" in item:
            merged = {**inherited, **item}
            if isinstance(item["task"], str) and item["task"] in index:
                yield from _leaves(index, item["task"], merged, depth + 1)
            else:
                yield f"{group}::{item['task']}", merged, yaml_path


def _task_data_files(cfg: dict) -> list[tuple[str, str]]:
    """(split or "", file/pattern) for every entry of ``dataset_kwargs.data_files`` and ``data_dir``."""
    kwargs = cfg.get("dataset_kwargs") or {}
    if not isinstance(kwargs, dict):
        return []
    files = kwargs.get("data_files")
    out: list[tuple[str, str]] = []
    if isinstance(files, dict):
        for split, value in files.items():
            out += [(str(split), str(v)) for v in (value if isinstance(value, list) else [value])]
    elif isinstance(files, list):
        out += [("", str(v)) for v in files]
    elif files is not None:
        out.append(("", str(files)))
    if kwargs.get("data_dir"):
        out.append(("data_dir", str(kwargs["data_dir"])))
    return out


def _is_url(value: str) -> bool:
    return "://" in value


def _local_problem(cfg: dict) -> str | None:
    """Why local data named by the config cannot be read (online or not), or None."""
    path = cfg.get("dataset_path")
    if cfg.get("custom_dataset") or not isinstance(path, str):
        return None
    entries = _task_data_files(cfg)
    if path in FILE_BUILDERS:
        if not entries:
            return f"dataset_path: {path} needs dataset_kwargs: {{data_files: ...}} (the local files to read)"
        base = None  # datasets resolves them against the working directory
    elif Path(path).is_dir():
        base = Path(path)  # a local dataset folder: its data_files are inside it
    else:
        return None  # a hub dataset (its data_files are paths inside the repository) or a local data file
    for split, value in entries:
        if _is_url(value):
            continue
        full = value if base is None or Path(value).is_absolute() else str(base / value)
        if glob.glob(full) if any(c in full for c in "*?[") else Path(full).exists():
            continue
        name = "data_dir=" if split == "data_dir" else f"data_files {split + '=' if split else ''}"
        where = ""
        if not Path(value).is_absolute():
            where = (
                f" (datasets resolves a relative path against the working directory {Path.cwd()}, not the "
                "YAML's folder)"
                if base is None
                else f" (inside dataset_path={path})"
            )
        return f"{name}{value} does not exist{where}"
    return None


def _hub_source(cfg: dict, own: bool) -> str | None:
    """What the task downloads (a short description), or None when its data is local."""
    if cfg.get("custom_dataset"):
        return None if own else f"custom_dataset {Path(str(cfg['custom_dataset'])).name} fetches its data"
    path = cfg.get("dataset_path")
    if not isinstance(path, str):
        if "class" in cfg and not own:
            return f"Python task {Path(str(cfg['class'])).name} fetches its data"
        return None
    if path in FILE_BUILDERS or Path(path).exists():
        urls = [v for _, v in _task_data_files(cfg) if _is_url(v)]
        return f"data_files {urls[0]}" if urls else None
    return f"dataset_path={path} is a hub dataset"


def _cached(dataset_path: Any) -> bool:
    """Whether the hub dataset has a folder in the HF caches (``datasets`` then loads it offline)."""
    if not isinstance(dataset_path, str) or not dataset_path:
        return False
    env = os.environ
    home = Path(env.get("HF_HOME") or Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface")
    hub = Path(env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or home / "hub")
    data = Path(env.get("HF_DATASETS_CACHE") or home / "datasets")
    names = [hub / f"datasets--{dataset_path.replace('/', '--')}"]
    names += [data / dataset_path.replace("/", "___"), data / dataset_path.lower().replace("/", "___")]
    return any(p.is_dir() for p in names)


# ---------------------------------------------------------------------------------------------------------------
# Running


def run_lm_eval(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str],
    include_path: str | None = None,
    limit: float | None = None,
    num_fewshot: int | None = None,
    batch_size: int | str = 1,
    device: str | None = None,
    *,
    seed: int = DEFAULT_SEED,
    bootstrap_iters: int = 100_000,
) -> dict[str, dict[str, float]]:
    """lm-eval's scores of ``model`` on ``tasks``: ``{task or group: {metric: value}}`` (stderr included as
    ``<metric>_stderr`` where lm-eval computes one; "N/A" values are left out).

    limit: docs per task (a count, or a share if < 1), lm-eval's first ones; None for all.
    num_fewshot: overrides each task's default (lm-eval keeps a task's explicit 0).
    device: where the model runs; HFLM uses a passed model where it is, so it is moved there first.
    seed: lm-eval's four seeds (Python random, NumPy, torch, few-shot sampling); the global RNG states are restored
    afterwards, so the caller's sampling does not depend on whether it ran. The model's train/eval mode is restored
    too; the tokenizer is copied (HFLM may set its pad token).
    """
    check_tasks(tasks, include_path)
    # lm-eval pulls in torch, transformers, datasets and accelerate: imported on first use
    import lm_eval
    from datasets.exceptions import DatasetNotFoundError
    from lm_eval.models.huggingface import HFLM

    manager = _task_manager(_include_root(include_path), tuple(tasks))
    was_training = model.training
    if device is not None:
        model.to(device)
    try:
        with preserved_rng(), quiet(), _quiet_lm_eval(), _no_download_count():
            lm = HFLM(pretrained=model, tokenizer=copy.deepcopy(tokenizer), batch_size=batch_size)
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(tasks),
                num_fewshot=num_fewshot,
                limit=limit,
                bootstrap_iters=bootstrap_iters,
                task_manager=manager,
                log_samples=False,
                write_out=False,
                evaluation_tracker=None,  # nothing goes to the hub
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
            )
    except (ConnectionError, DatasetNotFoundError) as e:  # a hub dataset that check_tasks could not rule out
        reason = " ".join(str(e).split())[:300]
        raise UsageError(
            f"{TASKS_FIELD}={_show(tasks)}: lm-eval could not load a task's data ({type(e).__name__}: {reason}); "
            f"{LOCAL_TASK_HINT}"
        ) from None
    finally:
        model.train(was_training)
    return readable_results(out["results"])


def metric_name(key: str) -> str:
    """lm-eval's "<metric>,<filter>" result key -> "<metric>" for the "none" filter, else "<metric>/<filter>"."""
    metric, _, filter_name = key.partition(",")
    return metric if filter_name in ("", "none") else f"{metric}/{filter_name}"


def readable_results(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """lm-eval's ``results["results"]`` -> {task: {readable metric: float}}; keys without a filter part ("alias",
    "name", "sample_len") and values that are not finite-or-NaN numbers ("N/A" stderr) are dropped."""
    out: dict[str, dict[str, float]] = {}
    for task, row in results.items():
        metrics = {}
        for key, value in row.items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isnan(float(value)):
                continue
            metrics[metric_name(key)] = float(value)
        out[task] = metrics
    return out


@contextlib.contextmanager
def _no_download_count() -> Iterator[None]:
    """``datasets`` pings its S3 bucket (an HTTP HEAD, 3 s timeout, errors swallowed) to count each
    ``load_dataset`` of a packaged builder such as ``json``, even for local files, unless offline or
    ``HF_UPDATE_DOWNLOAD_COUNTS`` is false (datasets.load.increase_load_count): off for the block."""
    import datasets  # heavy: imported on first use (lm-eval has imported it by now)

    before = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        yield
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = before


@contextlib.contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """lm-eval's INFO/WARNING lines (seeds, "pre-initialized model", task overrides), its tqdm bars (on
    sys.stderr) and its print()s (batch_size=auto's search, on sys.stdout) off inside the block: both streams point
    at os.devnull (exceptions still propagate and are reported by the caller). A subprocess it starts (``git
    describe`` for the results' git_hash) writes to the process's own file descriptors, not to these."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            yield
    finally:
        logger.setLevel(level)
