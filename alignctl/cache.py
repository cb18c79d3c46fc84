"""Content-addressed build cache for locally built artifacts (tiny models, generated datasets).

An artifact is a directory ``<root>/<kind>/<key>/`` where ``key`` is a short sha256 of the canonical JSON of
its recipe plus :data:`CODE_VERSION`. ``<root>`` is ``$ALIGNCTL_CACHE_DIR`` when set, else the platform user
cache dir (``$XDG_CACHE_HOME`` is honoured on Linux) joined with ``alignctl``.

Builds are atomic and happen once: under a file lock, ``build`` fills a fresh temp directory that is a sibling
of the final one, the recipe is written into it as ``recipe.json`` and a manifest of every file as
``manifest.json``, and the directory is renamed into place. The final path therefore exists only when complete;
a crashed build leaves at most a hidden ``.<key>.tmp-*`` directory, removed by the next build of the same key.

Nothing lost, nothing silent: every use checks the entry against its manifest (:func:`verify`: sizes every
time, sha256 once per process and file version). A corrupt entry (a file missing, added, truncated or changed)
is rebuilt under the lock with one line on stderr naming it and its first bad file; concurrent users wait for
that one rebuild. Nothing is written into an entry after it is built, and a valid entry is used without taking
the lock, so a read-only cache works; building into one fails with one line (:class:`UsageError`).

Entries built before manifests existed (``recipe.json`` without ``"cache_format"``) are adopted, not rebuilt:
the atomic rename made them complete when built, a rebuild can cost hours of sampling on a large model and,
on another device, give other rows than earlier runs used. They are adopted only after a structural check of
every file (JSON parses; a safetensors file's size matches its header; an Arrow file reads whole), which
catches the truncated and emptied files seen in the wild; one that fails it is rebuilt like any corrupt entry.
Adopting deletes the ``cache-*.arrow`` files ``datasets`` had written beside a split's data (map caches, not
part of the artifact) and writes the manifest; in a read-only cache a legacy entry that passes the check is
used as it is.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import platformdirs
from filelock import FileLock

from alignctl.errors import UsageError

# Bump when a builder's output changes for the same recipe (new grammar, new training code...): every key
# changes, so stale artifacts are never reused.
CODE_VERSION = "1"
ENV_VAR = "ALIGNCTL_CACHE_DIR"
RECIPE_FILE = "recipe.json"
MANIFEST_FILE = "manifest.json"  # {"version": 1, "files": {relative path: {"size": bytes, "sha256": hex}}}
CACHE_FORMAT = 2  # in recipe.json: 2 = the entry has a manifest; absent = built before manifests (legacy)
INFO_FILE = "build_info.json"  # written by a builder beside its artifact: sizes, timings, statistics, versions
BUILD_LIBRARIES = ("torch", "transformers", "trl", "tokenizers", "datasets")
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
_DIGESTS: dict[tuple[str, int, int, int], str] = {}  # (path, size, mtime_ns, inode) -> sha256, per process


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


def cached(kind: str, recipe: dict[str, Any], build: Callable[[Path], None], ranks_may_build: bool = False) -> Path:
    """Return the directory of the artifact described by ``recipe``, calling ``build(tmp_dir)`` if absent or
    corrupt.

    In a rank of a multi-process run a missing entry is an error unless ``ranks_may_build``: a build that trains
    or saves with transformers (a base model, sampled data) would start the ranks' process group from one rank
    while the others wait for its lock (a deadlock), and save_pretrained writes nothing on a rank other than 0;
    ``alignctl train distributed=...`` builds every such entry before it starts the ranks.

    ``build`` receives an empty directory and must write the whole artifact into it. It is called at most once
    per recipe across concurrent threads and processes sharing the cache root; if it raises, nothing is left
    visible and the exception propagates. A valid entry is returned without taking the lock (the cache may be
    read-only); a build that cannot write the cache raises :class:`UsageError`.
    """
    final = cached_path(kind, recipe)
    problem = verify(final) if final.is_dir() else None
    if final.is_dir() and problem is None:
        return final
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not ranks_may_build:
        raise UsageError(
            f"the cache has no {kind} entry for this run yet ({final}), and the ranks of a multi-process run cannot "
            "build it; start the run with alignctl train distributed=... (which builds it first), or train it once "
            "on one process"
        )
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        # thread_local=False: the lock object is per call anyway; flock conflicts across threads and processes.
        lock = FileLock(str(final.parent / f"{final.name}.lock"), thread_local=False)
        lock.acquire()
    except OSError as e:
        if e.errno not in _NOT_WRITABLE:
            raise
        if problem is not None and _legacy(final):
            problem = _structural_problem(final)
            if problem is None:
                return final  # built before manifests and whole: used as it is (adopted once the cache is writable)
        raise _not_writable(e, kind, final, problem) from None
    try:
        return _build_locked(kind, recipe, build, final)
    finally:
        lock.release()


def _build_locked(kind: str, recipe: dict[str, Any], build: Callable[[Path], None], final: Path) -> Path:
    if final.is_dir():
        problem = verify(final)  # someone else may have (re)built it while we waited
        if problem is None:
            return final
        if _legacy(final):
            problem = _structural_problem(final)
            if problem is None:
                try:
                    _adopt(final)
                except OSError as e:  # a read-only entry in a writable cache: used as it is
                    if e.errno not in _NOT_WRITABLE:
                        raise
                return final
        aside = final.parent / f".{final.name}.tmp-corrupt-{uuid.uuid4().hex[:8]}"  # removed just below
        _guard(os.replace, final, aside, kind=kind, final=final, problem=problem)
        print(f"alignctl: cache entry {final} is corrupt ({problem}); rebuilding it", file=sys.stderr)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):  # a killed build's, or the corrupt entry; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(_guard(tempfile.mkdtemp, prefix=f".{final.name}.tmp-", dir=final.parent, kind=kind, final=final))
    try:
        build(tmp)
        recipe_json = json.dumps(
            {"kind": kind, "code_version": CODE_VERSION, "cache_format": CACHE_FORMAT, "recipe": recipe},
            sort_keys=True,
            indent=2,
        )
        (tmp / RECIPE_FILE).write_text(recipe_json + "\n", encoding="utf-8")
        _write_manifest(tmp)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _guard(fn: Callable[..., Any], *args: Any, kind: str, final: Path, problem: str | None = None, **kw: Any) -> Any:
    """``fn(*args, **kw)``, a permission error turned into the one-line :class:`UsageError`."""
    try:
        return fn(*args, **kw)
    except OSError as e:
        if e.errno not in _NOT_WRITABLE:
            raise
        raise _not_writable(e, kind, final, problem) from None


def _not_writable(e: OSError, kind: str, final: Path, problem: str | None) -> UsageError:
    where = Path(e.filename).parent if e.filename else final.parent
    hint = f"set {ENV_VAR} (or XDG_CACHE_HOME) to a writable directory"
    if problem is not None:
        return UsageError(
            f"cache entry {final} is corrupt ({problem}) and the cache is not writable ({where}: {e.strerror}); "
            f"{hint} to rebuild it there"
        )
    return UsageError(
        f"cannot build the {kind} artifact: the cache directory {where} is not writable ({e.strerror}); {hint}"
    )


# --- manifest -------------------------------------------------------------------------------------------------
def _files(entry: Path) -> dict[str, os.stat_result]:
    """Every file under ``entry`` (but the manifest) by relative POSIX path, with its stat."""
    found = {}
    for dirpath, _, names in os.walk(entry):
        for name in names:
            path = os.path.join(dirpath, name)
            rel = Path(os.path.relpath(path, entry)).as_posix()
            if rel != MANIFEST_FILE:
                found[rel] = os.stat(path)
    return found


def _sha256(path: Path, st: os.stat_result) -> str:
    """The file's sha256, memoised per process by (path, size, mtime, inode): a run hashes each file once."""
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def _write_manifest(entry: Path) -> None:
    files = {rel: {"size": st.st_size, "sha256": _sha256(entry / rel, st)} for rel, st in sorted(_files(entry).items())}
    text = json.dumps({"version": 1, "files": files}, indent=2, sort_keys=True)
    (entry / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")


def verify(entry: Path) -> str | None:
    """None when ``entry`` matches its manifest, else its first problem as ``"<file>: <what>"``: a missing or
    unreadable manifest, a missing file or one of another size, a file not in the manifest, then a sha256 that
    differs."""
    try:
        expected = json.loads((entry / MANIFEST_FILE).read_text(encoding="utf-8"))["files"]
        sizes = {rel: int(f["size"]) for rel, f in expected.items()}
    except FileNotFoundError:
        return f"{MANIFEST_FILE}: missing"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{MANIFEST_FILE}: unreadable"
    try:
        present = _files(entry)
    except OSError as e:
        return f"{Path(e.filename or entry).name}: {e.strerror}"
    for rel in sorted(sizes):
        if rel not in present:
            return f"{rel}: missing"
        if present[rel].st_size != sizes[rel]:
            return f"{rel}: size {present[rel].st_size} != {sizes[rel]}"
    extra = sorted(set(present) - set(sizes))
    if extra:
        return f"{extra[0]}: not in the manifest"
    for rel in sorted(sizes):
        try:
            if _sha256(entry / rel, present[rel]) != expected[rel].get("sha256"):
                return f"{rel}: sha256 differs from the manifest"
        except OSError as e:
            return f"{rel}: {e.strerror}"
    return None


# --- entries built before manifests ---------------------------------------------------------------------------
def _legacy(entry: Path) -> bool:
    """Built before manifests: no manifest, and a recipe.json without ``cache_format``."""
    if (entry / MANIFEST_FILE).exists():
        return False
    try:
        recipe = json.loads((entry / RECIPE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(recipe, dict) and "cache_format" not in recipe


def _structural_problem(entry: Path) -> str | None:
    """None when every file of ``entry`` is whole as far as its format tells (JSON parses; a safetensors file is
    as long as its header says; an Arrow stream reads to its end), else ``"<file>: <what>"``."""
    strays = _stray_map_caches(entry)
    for rel, st in sorted(_files(entry).items()):
        path = entry / rel
        if path in strays:
            continue
        try:
            if rel.endswith(".json"):
                json.loads(path.read_text(encoding="utf-8"))
            elif rel.endswith(".safetensors"):
                with open(path, "rb") as f:
                    n = int.from_bytes(f.read(8), "little")
                    header = json.loads(f.read(n))
                end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
                if st.st_size != 8 + n + end:
                    return f"{rel}: size {st.st_size} != {8 + n + end}"
            elif rel.endswith(".arrow"):
                import pyarrow as pa

                with pa.memory_map(str(path)) as source:
                    pa.ipc.open_stream(source).read_all()
        except Exception as e:  # any failure to parse is the problem we look for
            return f"{rel}: unreadable ({type(e).__name__})"
    return None


def _stray_map_caches(entry: Path) -> set[Path]:
    """The ``cache-*.arrow`` files ``datasets`` wrote beside a saved split's data (a split's ``state.json`` lists
    its own data files): map caches of a memory-mapped split, not part of the artifact."""
    strays = set()
    for state in entry.rglob("state.json"):
        try:
            listed = {f["filename"] for f in json.loads(state.read_text(encoding="utf-8"))["_data_files"]}
        except (OSError, ValueError, KeyError, TypeError):
            continue  # the structural check reports an unreadable state.json
        strays |= {p for p in state.parent.glob("cache-*.arrow") if p.name not in listed}
    return strays


def _adopt(entry: Path) -> None:
    """Delete the stray map caches, then write the manifest."""
    for stray in _stray_map_caches(entry):
        stray.unlink()
    _write_manifest(entry)


def write_info(path: Path, info: dict[str, Any]) -> None:
    """An artifact's build_info.json: `info` plus the versions of the libraries that built it."""
    from importlib import metadata

    versions = {name: metadata.version(name) for name in BUILD_LIBRARIES}
    text = json.dumps({**info, "versions": versions}, indent=2, sort_keys=True)
    (path / INFO_FILE).write_text(text + "\n", encoding="utf-8")
