"""Run directory names that say what distinguishes a run: <objective>-<divergence> and then the overrides that set
it apart (runs/20261201-101500-fdpo-js-alpha0.3-seed2, a sweep's jobs 0-fdpo-alpha0.3, 1-fdpo-alpha0.5)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import PurePath

MAX_LENGTH = 120  # of the label after the timestamp; longer labels are cut and end in a hash of the whole
# Keys that never tell two runs' results apart: how a run is resumed, threaded, tracked or launched (a key ending in
# "." stands for every key under it).
NOT_DISTINGUISHING = (
    "train.resume", "train.overwrite", "train.num_threads", "tracking", "launcher", "launcher.", "distributed",
    "distributed.", "comparison.",
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def run_name(objective: str, divergence: str, overrides: Iterable[str], exclude: Iterable[str] = ()) -> str:
    """'<objective>-<divergence>[-<part>...]', one part per override (in the order given) except objective=,
    divergence=, hydra.*, NOT_DISTINGUISHING and `exclude`: a group's option as its name (toy_arith), a key as its
    last component and value (beta0.3, seed2; a flag as itself or no_<flag>), a path as its file or folder name (pairs.jsonl -> pairs)."""
    skipped = {*NOT_DISTINGUISHING, *exclude, "objective", "divergence"}
    parts = [objective, divergence]
    for override in overrides:
        key, _, value = str(override).lstrip("+~").partition("=")
        prefixes = ("hydra.", "hydra/", *(k for k in NOT_DISTINGUISHING if k.endswith(".")))
        if key in skipped or key.startswith(prefixes):
            continue
        part = _part(key, value)
        if part not in parts:  # e.g. an experiment arm named after the divergence it chooses
            parts.append(part)
    label = _safe("-".join(p for p in parts if p))
    if len(label) <= MAX_LENGTH:
        return label
    digest = hashlib.sha256(label.encode()).hexdigest()[:8]
    return f"{label[: MAX_LENGTH - 9].rstrip('-._')}-{digest}"


def _part(key: str, value: str) -> str:
    value = value.strip("'\"")
    if "/" in value or "\\" in value:  # a path: its last component, without a file suffix
        path = PurePath(value.rstrip("/\\"))
        value = path.stem if path.suffix and len(path.suffix) <= 8 else path.name
    if "." not in key:  # a group's option (also a nested group's: +arm/fdpo_divergences=alpha0.3 -> alpha0.3)
        return value
    leaf = key.replace("/", ".").rsplit(".", 1)[-1]
    if value.lower() in ("true", "false"):  # eval.enabled=false -> no_enabled, model.gradient_checkpointing=true
        return leaf if value.lower() == "true" else f"no_{leaf}"
    return value if leaf in ("path", "name") else f"{leaf}{value}"


def _safe(text: str) -> str:
    """Only characters every filesystem and shell takes without quoting."""
    return _UNSAFE.sub("_", text).strip("_")
