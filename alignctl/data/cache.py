"""Content-addressed build cache for locally built artifacts (tiny models, generated datasets).

An artifact is a directory ``<root>/<kind>/<key>/`` where ``key`` is a short sha256 of the canonical JSON of
its recipe plus :data:`CODE_VERSION`. ``<root>`` is ``$ALIGNCTL_CACHE_DIR`` when set, else the platform user
cache dir (``$XDG_CACHE_HOME`` is honoured on Linux) joined with ``alignctl``.

Builds are atomic and happen once: under a file lock, ``build`` fills a fresh temp directory that is a sibling
of the final one, the recipe is written into it as ``recipe.json``, and the directory is renamed into place.
The final path therefore exists only when complete; a crashed build leaves at most a hidden ``.<key>.tmp-*``
directory, removed by the next build of the same key.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import platformdirs
from filelock import FileLock

# Bump when a builder's output changes for the same recipe (new grammar, new training code...): every key
# changes, so stale artifacts are never reused.
CODE_VERSION = "1"
ENV_VAR = "ALIGNCTL_CACHE_DIR"
RECIPE_FILE = "recipe.json"
INFO_FILE = "build_info.json"  # written by a builder beside its artifact: sizes, timings, statistics, versions
BUILD_LIBRARIES = ("torch", "transformers", "trl", "tokenizers", "datasets")


def cache_root() -> Path:
    """``$ALIGNCTL_CACHE_DIR`` or ``<user cache dir>/alignctl``."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    return platformdirs.user_cache_path() / "alignctl"


def canonical_json(recipe: dict[str, Any]) -> str:
    """Key-sorted, whitespace-free JSON: equal recipes give equal strings (raises on non-JSON values)."""
    return json.dumps(recipe, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def recipe_hash(recipe: dict[str, Any]) -> str:
    """Short (16 hex) sha256 of the canonical recipe and the code version."""
    payload = canonical_json({"code_version": CODE_VERSION, "recipe": recipe})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def cached_path(kind: str, recipe: dict[str, Any]) -> Path:
    """Where the artifact for ``recipe`` lives (whether or not it is built yet)."""
    if not kind or "/" in kind or "\\" in kind or kind.startswith("."):
        raise ValueError(f"cache kind must be a plain directory name, got {kind!r}")
    return cache_root() / kind / recipe_hash(recipe)


def cached(kind: str, recipe: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """Return the directory of the artifact described by ``recipe``, calling ``build(tmp_dir)`` if absent.

    ``build`` receives an empty directory and must write the whole artifact into it. It is called at most once
    per recipe across concurrent threads and processes sharing the cache root; if it raises, nothing is left
    visible and the exception propagates.
    """
    final = cached_path(kind, recipe)
    if final.is_dir():  # the rename is atomic, so an existing final dir is complete
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # thread_local=False: the lock object is per call anyway; flock conflicts across threads and processes.
    with FileLock(str(final.parent / f"{final.name}.lock"), thread_local=False):
        if final.is_dir():  # built by someone else while we waited
            return final
        for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a killed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            build(tmp)
            recipe_json = json.dumps(
                {"kind": kind, "code_version": CODE_VERSION, "recipe": recipe}, sort_keys=True, indent=2
            )
            (tmp / RECIPE_FILE).write_text(recipe_json + "\n", encoding="utf-8")
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def write_info(path: Path, info: dict[str, Any]) -> None:
    """An artifact's build_info.json: `info` plus the versions of the libraries that built it."""
    from importlib import metadata

    versions = {name: metadata.version(name) for name in BUILD_LIBRARIES}
    text = json.dumps({**info, "versions": versions}, indent=2, sort_keys=True)
    (path / INFO_FILE).write_text(text + "\n", encoding="utf-8")
