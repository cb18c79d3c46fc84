"""Hugging Face model directories on disk: content fingerprints (what cache keys name), saving, and quiet
library calls around loading and saving."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from alignctl.errors import UsageError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence transformers/TRL/datasets logs, progress bars and warnings inside the block, then restore them."""
    import datasets
    import transformers

    tf_level = transformers.logging.get_verbosity()
    ds_level = datasets.logging.get_verbosity()
    ds_bars = datasets.is_progress_bar_enabled()
    trl_logger = logging.getLogger("trl")
    trl_level = trl_logger.level
    tf_bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    trl_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.logging.set_verbosity(tf_level)
        if tf_bars:
            transformers.utils.logging.enable_progress_bar()
        datasets.logging.set_verbosity(ds_level)
        if ds_bars:
            datasets.enable_progress_bars()
        trl_logger.setLevel(trl_level)


def save_hf_dir(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> None:
    """The ordinary hub layout: config.json, model.safetensors, generation_config.json, tokenizer files."""
    with quiet():
        model.save_pretrained(path)  # safetensors is the only format in transformers 5
        tokenizer.save_pretrained(path)
    if not (path / "config.json").is_file():  # transformers writes nothing on a rank other than 0 of a process group
        raise RuntimeError(f"save_pretrained wrote no model into {path} (rank {os.environ.get('RANK')} of a started "
                           "process group?); build before the group starts")


# Files of an HF model directory that change what it samples: config, generation defaults, tokenizer, weights.
_MODEL_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "chat_template.jinja", "chat_template.json", "vocab.json", "vocab.txt", "merges.txt",
    "tokenizer.model", "spiece.model",
)  # fmt: skip
_CHUNK = 16 * 2**20  # bytes read at a time while hashing weights


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 (hex) of what makes an HF model directory sample what it samples: ``config.json``, the generation
    and tokenizer files present (``generation_config.json``, ``tokenizer.json``, ``tokenizer_config.json``,
    ``special_tokens_map.json``, vocab/merges files, chat templates) and the weights (every ``*.safetensors``
    file, sharded or not; ``pytorch_model*.bin`` where there is no safetensors file). Each file's name, size
    and bytes are hashed in name order, read in 16 MiB chunks (a 7B model's 14 GB take ~20-30 s). Other files
    (README, build_info.json, trainer state) do not count. Memoized per process on the files' (size, mtime),
    so a cache hit costs a ``stat``.

    A hub id (``org/name``) that is not a local directory means its snapshot in the local HF cache (what
    ``from_pretrained`` loads offline). Raises :class:`~alignctl.errors.UsageError` when the directory has no
    config.json or no weight files, or the hub id is not in the local cache."""
    root = _local_dir(model_dir)
    if not (root / "config.json").is_file():
        raise UsageError(f"model directory {str(model_dir)!r} has no config.json (not an HF model directory)")
    weights = sorted(root.glob("*.safetensors")) or sorted(root.glob("pytorch_model*.bin"))
    if not weights:
        raise UsageError(f"model directory {str(model_dir)!r} has no *.safetensors (or pytorch_model*.bin) weights")
    files = sorted([root / n for n in _MODEL_FILES if (root / n).is_file()] + weights, key=lambda p: p.name)
    stats = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _fingerprint(str(root), stats)


def _local_dir(model_dir: str | Path) -> Path:
    path = Path(model_dir).expanduser()
    if path.is_dir() or path.is_absolute() or str(model_dir).count("/") != 1:
        return path.resolve()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(model_dir), local_files_only=True))
    except Exception as err:  # not cached (offline), or not a valid id
        raise UsageError(f"model {str(model_dir)!r} is neither a local directory nor in the local HF cache") from err


@functools.lru_cache(maxsize=64)
def _fingerprint(root: str, stats: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, size, _ in stats:
        h.update(f"{name}\0{size}\0".encode())
        with open(Path(root) / name, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()
