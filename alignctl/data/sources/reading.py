"""Reading a dataset option's source, shared by every module of this package: hub id or local file/folder ->
checked splits ("train", "test") of the source's own columns, ready for the option's row conversion.

Where the rows come from (``dataset.path``):

- a local ``.jsonl`` / ``.json`` / ``.parquet`` / ``.csv`` file: one split, named ``dataset.split``;
- a local folder written by ``DatasetDict.save_to_disk`` (its splits) or ``Dataset.save_to_disk`` (one split, named
  ``dataset.split``); any other folder is read as a folder of data files (e.g. a downloaded hub repository);
- otherwise a hub id, read with ``datasets.load_dataset`` (with the option's config name / data dir): from the local
  HF cache when offline. Nothing that is neither local nor loadable stops the run with one line.

The splits: "train" is ``dataset.split``; "test" is ``dataset.test_split`` when the source has it (and it is not
the training split); a source with several splits but not that one is an error (a typo must not quietly become a
cut); otherwise (one-split files, or ``test_split=null``) ``dataset.test_size`` rows are cut off the training split (a share if < 1, a count if >= 1;
drawn with ``dataset.seed``; both parts keep source order). ``dataset.max_rows`` then keeps the first rows of each.

The checks, on every kept row, before any conversion: each required column exists and holds, in every row, what
its kind says (:data:`EXPECTED`). A failure is a :class:`~alignctl.errors.DataError` naming ``dataset.path``, the
column, the row (0-based, in the source split) and what was expected. The checks run on the Arrow columns
(vectorised; a few ms per 100k rows) and Python confirms and describes the first bad row.

Before any of that, a local file is checked for what needs no parser (:func:`check_file`, also run when a run is
validated, before its directory is claimed: :func:`check_local_source`): a supported type, at least one row (not 0
bytes, only whitespace, only a CSV header or ``[]``) and, for the text types, UTF-8 throughout (the first bad byte's
offset and line are named). Text that is not UTF-8 in other sources (a folder's files) is a DataError when decoded.
"""

from __future__ import annotations

import codecs
import functools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignctl.data.base import SourceDatasetConfig
from alignctl.errors import ConfigError, DataError, UsageError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from datasets import Dataset, DatasetDict


# Column kinds and what each must hold in every row.
TEXT = "text"
MESSAGES = "messages"
TEXT_OR_MESSAGES = "text or messages"
NUMBER = "number"
BOOLEAN = "boolean"
BOOLEAN_WORDS = {"true": True, "false": False}  # how a CSV writes booleans (any case): read as the booleans
EXPECTED = {
    TEXT: "a non-empty string",
    MESSAGES: "a non-empty list of {role, content} messages (role a non-empty string, content a string)",
    TEXT_OR_MESSAGES: "a non-empty string or a non-empty list of {role, content} messages with string content",
    NUMBER: "a finite number",
    BOOLEAN: "a boolean (true or false)",
}
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
LOCAL_FORMATS = ".jsonl/.json/.parquet/.csv file or a save_to_disk folder"
MISSING_PATHS = (None, "", "???")

# (batch of columns, the rows' 0-based indices in the source split, the source split's name) -> the converted
# batch (every output column). A bad row is reported with `row_error`.
Prepare = Callable[[dict[str, list], list[int], str], dict[str, list]]


def require_path(cfg: Any) -> None:
    """The user's own-data options have no default path: say what to give. (Their configs already raise a
    ConfigError with this message at compose time; this catches a config built around that check.)"""
    if cfg.path in MISSING_PATHS:
        raise UsageError(missing_path_message(cfg.name))


def missing_path_message(name: str) -> str:
    return f"dataset.path is required for dataset={name}; give a {LOCAL_FORMATS}"


@dataclass
class LocalFileConfig(SourceDatasetConfig):
    """A dataset read from the user's own file or folder (preference_file, prompt_file, binary_file): the path is
    required."""

    path: str | None = None  # required: the file or folder

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.path in (None, ""):
            raise ConfigError(missing_path_message(self.name))


def message_form(value: Any) -> str:
    """How a text column's value is written, for the messages of rows that mix the two."""
    return "a message list" if isinstance(value, list) else "plain text"


def read_source(
    cfg: Any,
    columns: Mapping[str, str],
    *,
    optional: Mapping[str, str] | None = None,
    subset: str | None = None,
    data_dir: str | None = None,
    prepare: Prepare | None = None,
    keep_other_columns: bool = False,
) -> DatasetDict:
    """``cfg`` (a SourceDatasetConfig) -> DatasetDict(train=..., test=...) of checked rows.

    columns: required column -> kind (TEXT, MESSAGES, TEXT_OR_MESSAGES, NUMBER); optional: checked when present.
    subset / data_dir: the hub dataset's config name and data directory (hub ids and data-file folders only).
    prepare: converts the checked rows, batched; its output columns replace the input's. Without it, the splits
    keep the required and present optional columns (and every other column with keep_other_columns).
    """
    from datasets import DatasetDict

    require_path(cfg)
    source = _open(cfg, subset=subset, data_dir=data_dir)
    if cfg.split not in source:
        raise DataError(
            f"dataset.split={cfg.split!r} is not a split of dataset.path={cfg.path}; "
            f"it has: {', '.join(source) or '(none)'}"
        )
    if len(source[cfg.split]) == 0:
        raise DataError(f"dataset.path={cfg.path}: split {cfg.split!r} has no rows; dataset={cfg.name} needs at least "
                        f"one row with {', '.join(columns)}")  # fmt: skip
    for split in dict.fromkeys(s for s in (cfg.split, cfg.test_split) if s in source):
        missing = [c for c in columns if c not in source[split].column_names]
        if missing:
            found = ", ".join(source[split].column_names) or "(none)"
            raise DataError(
                f"dataset.path={cfg.path}: column {missing[0]!r} is missing from split {split!r} (dataset={cfg.name} "
                f"needs {', '.join(columns)}); the columns found are: {found}"
            )
    parts = _select(cfg, source)
    optional = dict(optional or {})
    out = {}
    for part, (split, rows) in parts.items():
        ds = source[split]
        checked = {**columns, **{c: k for c, k in optional.items() if c in ds.column_names}}
        try:
            for column, kind in checked.items():
                check_column(ds, column, kind, rows, where=f"dataset.path={cfg.path}", split=split)
            if not keep_other_columns:
                ds = ds.select_columns(list(checked))
            if len(rows) != len(ds):  # rows are sorted and distinct: as many as the split's means all of them
                ds = ds.select(rows)
            if prepare is not None:
                ds = _apply(ds, prepare, rows, split, part)
        except UnicodeDecodeError as e:  # Arrow keeps a file's bytes as they are; Python decodes them here
            raise DataError(
                f"dataset.path={cfg.path}: split {split!r} holds text that is not UTF-8 ({e.reason}: byte "
                f"0x{e.object[e.start]:02x} of a value); dataset files are read as UTF-8: re-encode it as UTF-8"
            ) from None
        out[part] = ds
    return DatasetDict(out)


# ---------------------------------------------------------------------------------------------------------------
# What a local file holds, known before anything loads

# What each kind of data file holds, for the messages.
FILE_LAYOUTS = {
    ".jsonl": "one JSON object per line",
    ".json": "a JSON list of objects, or one JSON object per line",
    ".csv": "a header line naming the columns, then one row per line",
    ".parquet": "a table with one row per example",
}
_SCAN_CHUNK = 16 * 2**20  # bytes read at a time while checking a text file


def check_local_source(cfg: Any) -> None:
    """What can be known of a dataset option's ``dataset.path`` before anything loads (alignctl.run.launch.validate):
    a path spelled as a local one exists, and a local data file is one of the supported types, not empty and (text
    files) UTF-8 (:func:`check_file`). Hub ids and folders are read when the run loads its data; embedded tasks have
    no path."""
    if not isinstance(cfg, SourceDatasetConfig) or cfg.path in MISSING_PATHS:
        return
    path = _local_path(str(cfg.path))
    if path is not None and path.is_file():
        check_file(cfg, str(cfg.path), path)


def check_file(cfg: Any, value: str, path: Path) -> None:
    """A local data file at ``path`` (``dataset.path=value``) of a supported type holding at least one row, and, for
    the text types, only UTF-8: else one line naming dataset.path, the problem (empty; the first byte that is not
    UTF-8, with its offset and line) and what is expected. Reads the file once per (size, mtime) in this process
    (the loader checks again: a cache hit)."""
    suffix = path.suffix.lower()
    if suffix not in FILE_BUILDERS:
        raise UsageError(
            f"dataset.path={value} is a file of an unsupported type ({path.suffix or 'no suffix'}); "
            f"give a {LOCAL_FORMATS}"
        )
    stat = path.stat()
    problem = _file_problem(str(path.resolve()), suffix, stat.st_size, stat.st_mtime_ns)
    if problem is None:
        return
    kind, detail = problem
    layout = f"a {suffix} file holds {FILE_LAYOUTS[suffix]}"
    if kind == "empty":
        raise DataError(f"dataset.path={value} is empty ({detail}); dataset={cfg.name} needs at least one row: {layout}")
    raise DataError(f"dataset.path={value} is not UTF-8: {detail}; dataset files are read as UTF-8: re-encode it "
                    "(e.g. iconv -f <its encoding> -t utf-8)")  # fmt: skip


@functools.lru_cache(maxsize=64)
def _file_problem(path: str, suffix: str, size: int, mtime_ns: int) -> tuple[str, str] | None:
    """("empty", what it holds) or ("encoding", where the first non-UTF-8 byte is), or None."""
    if size == 0:
        return "empty", "0 bytes"
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except (pa.ArrowException, OSError):  # not a Parquet file: the loader says so, with the reader's words
            return None
        return ("empty", "a Parquet table of 0 rows") if rows == 0 else None
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line, lines_with_text, text = 0, 1, 0, ""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_SCAN_CHUNK)
            try:
                decoded = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                # the decoder holds back at most 3 bytes of a character cut at the chunk's end; e.object is what it
                # was given: those bytes, then this chunk
                held = len(e.object) - len(chunk)
                at = offset - held + e.start
                line += e.object[: e.start].count(b"\n")
                what = f"byte 0x{e.object[e.start]:02x} at offset {at} (line {line}) is not valid UTF-8 ({e.reason})"
                return "encoding", what
            offset += len(chunk)
            line += decoded.count("\n")
            if lines_with_text < 2:
                lines_with_text += sum(1 for text_line in decoded.splitlines() if text_line.strip())
                text = (text + decoded)[:64] if len(text) < 64 else text
            if not chunk:
                break
    if lines_with_text == 0:
        return "empty", "only whitespace"
    if suffix == ".csv" and lines_with_text == 1:
        return "empty", "only a header line"
    if suffix == ".json" and "".join(text.split()) in ("[]", "{}"):
        return "empty", f"only {''.join(text.split())}"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Opening the source


_HUB_HINT = f"give a local {LOCAL_FORMATS}, or load the hub dataset once where there is network (it is then cached)"


def _local_path(value: str) -> Path | None:
    """dataset.path as a local file or folder; None for a hub id; one line for a local path that does not exist."""
    path = Path(value).expanduser()
    if path.exists():
        return path
    if value.startswith((".", "/", "~")) or path.suffix.lower() in FILE_BUILDERS:
        raise UsageError(
            f"dataset.path={value} is neither a local file/folder nor a dataset available offline "
            f"(no such file or folder); {_HUB_HINT}"
        )
    return None


def _open(cfg: Any, *, subset: str | None, data_dir: str | None) -> dict[str, Dataset]:
    """The source's splits, by name."""
    value = str(cfg.path)
    path = _local_path(value)
    if path is not None and path.is_file():
        check_file(cfg, value, path)
        return {cfg.split: _read_file(value, path)}
    if path is not None and path.is_dir():
        return _read_folder(cfg, value, path, subset=subset, data_dir=data_dir)
    hint = _HUB_HINT
    import datasets

    try:
        loaded = datasets.load_dataset(value, name=subset, data_dir=data_dir)
    except (ConnectionError, FileNotFoundError) as e:
        raise UsageError(
            f"dataset.path={value} is neither a local file/folder nor a dataset available offline "
            f"({type(e).__name__}: {_one_line(e)}); {hint}"
        ) from None
    except (ValueError, datasets.exceptions.DatasetsError) as e:  # e.g. an unknown config name
        raise UsageError(f"dataset.path={value} could not be loaded ({type(e).__name__}: {_one_line(e)})") from None
    return dict(loaded)


def _read_file(value: str, path: Path) -> Dataset:
    import datasets
    import pyarrow as pa

    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise UsageError(
            f"dataset.path={value} is a file of an unsupported type ({path.suffix or 'no suffix'}); "
            f"give a {LOCAL_FORMATS}"
        )
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except (datasets.exceptions.DatasetsError, pa.ArrowException, ValueError, OSError) as e:
        raise DataError(f"dataset.path={value} could not be read as a {path.suffix} file: {_one_line(e)}") from None


def _read_folder(cfg: Any, value: str, path: Path, *, subset: str | None, data_dir: str | None) -> dict:
    import datasets

    try:
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            for state in sorted([path / "state.json", *path.glob("*/state.json")]):
                if state.is_file() and json.loads(state.read_text()).get("_data_files") == []:
                    split = f"split {state.parent.name!r}" if state.parent != path else "the dataset"
                    raise DataError(  # datasets cannot read such a split back (an IndexError)
                        f"dataset.path={value}: {split} has no rows (it was saved with none); dataset={cfg.name} "
                        "needs at least one row"
                    )  # fmt: skip
            loaded = datasets.load_from_disk(str(path))
            return {cfg.split: loaded} if isinstance(loaded, datasets.Dataset) else dict(loaded)
        try:  # a downloaded hub repository (its configs named in its README) or a plain folder of data files
            return dict(datasets.load_dataset(str(path), name=subset, data_dir=data_dir))
        except ValueError:
            if subset is None:
                raise
            return dict(datasets.load_dataset(str(path), data_dir=data_dir))  # a plain folder has no configs
    except (datasets.exceptions.DatasetsError, ValueError, OSError) as e:
        raise DataError(
            f"dataset.path={value} is a folder that could not be read as a dataset ({_one_line(e)}); "
            f"give a {LOCAL_FORMATS}"
        ) from None
    except StopIteration:  # datasets' JSON builder reads the first table of each file: an empty file has none
        raise DataError(f"dataset.path={value} is a folder with an empty data file (datasets found no rows to read "
                        "in one); remove it, or give files with at least one row each")  # fmt: skip


def _one_line(e: BaseException) -> str:
    """The innermost cause's message, on one line."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = " ".join(str(e).split())
    return text[:300] or type(e).__name__


# ---------------------------------------------------------------------------------------------------------------
# Splits


def _select(cfg: Any, source: dict[str, Dataset]) -> dict[str, tuple[str, np.ndarray]]:
    """part ("train", "test") -> (source split, its kept row indices in source order)."""
    import numpy as np

    n = len(source[cfg.split])
    if cfg.test_split is not None and cfg.test_split != cfg.split and cfg.test_split in source:
        parts = {"train": (cfg.split, np.arange(n)), "test": (cfg.test_split, np.arange(len(source[cfg.test_split])))}
    else:
        if cfg.test_split is not None and len(source) > 1:  # a source with splits of its own: a typo, not a cut
            raise DataError(
                f"dataset.test_split={cfg.test_split} is not a split of dataset.path={cfg.path}; it has: "
                f"{', '.join(source)} (or set dataset.test_split=null to cut dataset.test_size rows off "
                f"{cfg.split!r})"
            )
        n_test = math.ceil(cfg.test_size * n) if cfg.test_size < 1 else int(cfg.test_size)
        if not 1 <= n_test < n:
            raise DataError(
                f"dataset.test_size={cfg.test_size} cuts {n_test} of the {n} rows of split {cfg.split!r} of "
                f"dataset.path={cfg.path}; leave at least one row for each of train and test"
            )
        order = np.random.default_rng(cfg.seed).permutation(n)
        parts = {"train": (cfg.split, np.sort(order[n_test:])), "test": (cfg.split, np.sort(order[:n_test]))}
    if cfg.max_rows is not None:
        parts = {part: (split, rows[: cfg.max_rows]) for part, (split, rows) in parts.items()}
    for part, (split, rows) in parts.items():
        if len(rows) == 0:
            raise DataError(f"split {split!r} of dataset.path={cfg.path} has no rows (for {part})")
    return parts


def _apply(ds: Dataset, prepare: Prepare, rows: np.ndarray, split: str, part: str) -> Dataset:
    def convert(batch: dict[str, list], positions: list[int]) -> dict[str, list]:
        return prepare(batch, [int(rows[p]) for p in positions], split)

    columns = list(convert(ds[:1], [0]))  # the output columns, in the order prepare gives them
    # In memory: never a cache file beside the user's save_to_disk folder (datasets writes map caches there).
    ds = ds.map(
        convert, batched=True, with_indices=True, remove_columns=ds.column_names, keep_in_memory=True,
        desc=f"rows ({part})",
    )  # fmt: skip
    return ds.select_columns(columns)


# ---------------------------------------------------------------------------------------------------------------
# Row checks


def check_column(ds: Dataset, column: str, kind: str, rows: np.ndarray, *, where: str, split: str) -> None:
    """DataError for the first of ``rows`` whose ``column`` is not what ``kind`` expects."""
    values = ds[column]  # decoded lazily, row by row, for the suspects only
    mask = _suspect_mask(ds.with_format("arrow")[column], kind)
    if mask is None:  # no vectorised rule for this Arrow type: Python checks every row
        suspects = rows
        if kind == TEXT_OR_MESSAGES:
            _check_not_mixed(values, rows, column, where=where, split=split)
    else:
        suspects = rows[mask[rows]]
    for row in suspects:
        problem = describe_problem(values[int(row)], kind)
        if problem is not None:
            raise row_error(where, column, int(row), split, EXPECTED[kind], problem)


def row_error(where: str, column: str, row: int, split: str, expected: str, problem: str) -> DataError:
    """The one-line DataError for one bad row (loaders use it for their own row rules too)."""
    return DataError(f"{where}: column {column!r}, row {row} of split {split!r}: expected {expected}; {problem}")


def describe_problem(value: Any, kind: str) -> str | None:
    """What is wrong with one value of a column of ``kind``; None when nothing is."""
    if kind == TEXT or (kind == TEXT_OR_MESSAGES and isinstance(value, str)):
        if not isinstance(value, str):
            return f"got {show(value)}"
        return None if value.strip() else f"got an empty string {value!r}"
    if kind == MESSAGES or (kind == TEXT_OR_MESSAGES and isinstance(value, list)):
        return _messages_problem(value)
    if kind == TEXT_OR_MESSAGES:
        return f"got {show(value)}"
    if kind == NUMBER:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"got {show(value)}"
        return None if math.isfinite(value) else f"got {value!r}"
    if kind == BOOLEAN:
        return None if as_boolean(value) is not None else f"got {show(value)}"
    raise ValueError(f"unknown column kind {kind!r}")


def as_boolean(value: Any) -> bool | None:
    """A BOOLEAN column's value as a bool (True/False, or the words true/false in any case); None if it is neither."""
    if isinstance(value, bool):
        return value
    return BOOLEAN_WORDS.get(value.strip().lower()) if isinstance(value, str) else None


def _messages_problem(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"got {show(value)}"
    if not value:
        return "got an empty list"
    for j, message in enumerate(value):
        if not isinstance(message, dict):
            return f"message {j} is {show(message)}"
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role.strip():
            return f"message {j} has role {show(role)}"
        if not isinstance(content, str):
            return f"message {j} has content {show(content)}"
    return None


def show(value: Any, limit: int = 80) -> str:
    """A value as the error shows it: its repr (one line, shortened) and its type."""
    text = repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text if value is None else f"{text} ({type(value).__name__})"


def _suspect_mask(column: pa.ChunkedArray | pa.Array, kind: str) -> np.ndarray | None:
    """Rows that may break the kind's rule (every row the Python check would fail, maybe a few more), vectorised on
    the Arrow types that can hold valid values; None for any other type (Python then checks every row)."""
    import numpy as np
    import pyarrow as pa

    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    masks = [_chunk_mask(chunk, kind) for chunk in chunks]
    if any(mask is None for mask in masks):
        return None
    return np.concatenate(masks) if masks else np.zeros(0, dtype=bool)


def _chunk_mask(array: pa.Array, kind: str) -> np.ndarray | None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if kind in (TEXT, TEXT_OR_MESSAGES) and _is_string(array.type):
        return _as_mask(_blank(array))
    if kind in (MESSAGES, TEXT_OR_MESSAGES) and _is_message_list(array.type):
        lengths = pc.list_value_length(array)
        bad = _as_mask(pc.invert(pc.greater(lengths, 0)))
        flat = pc.list_flatten(array)  # the messages of the non-null lists, in order (null lists emit nothing)
        parents = np.repeat(np.arange(len(array)), np.asarray(pc.fill_null(lengths, 0), dtype=np.int64))
        bad_message = pc.or_(pc.or_(flat.is_null(), _blank(flat.field("role"))), flat.field("content").is_null())
        bad[parents[_as_mask(bad_message)]] = True
        return bad
    if kind == BOOLEAN and pa.types.is_boolean(array.type):
        return _as_mask(pc.invert(array.is_valid()))
    if kind == BOOLEAN and _is_string(array.type):
        words = pa.array(list(BOOLEAN_WORDS), type=array.type)
        return _as_mask(pc.invert(pc.is_in(pc.utf8_lower(pc.utf8_trim_whitespace(array)), value_set=words)))
    if kind == NUMBER and (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
        ok = array.is_valid() if pa.types.is_integer(array.type) else pc.and_(array.is_valid(), pc.is_finite(array))
        return _as_mask(pc.invert(ok))
    return None


def _blank(array: pa.Array) -> pa.Array:
    """Null, empty or whitespace-only strings (as Python's ``not s.strip()``, up to Unicode corner cases)."""
    import pyarrow.compute as pc

    return _fill_true(pc.or_(pc.equal(pc.utf8_length(array), 0), pc.utf8_is_space(array)))


def _as_mask(array: pa.Array) -> np.ndarray:
    """Boolean Arrow array -> numpy mask; a null (from a null input) counts as True (suspect)."""
    import numpy as np

    return np.asarray(_fill_true(array).to_numpy(zero_copy_only=False), dtype=bool)


def _fill_true(array: pa.Array) -> pa.Array:
    import pyarrow.compute as pc

    return pc.fill_null(array, True)


def _is_string(t: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_message_list(t: pa.DataType) -> bool:
    import pyarrow as pa

    if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not pa.types.is_struct(t.value_type):
        return False
    fields = {t.value_type.field(i).name: t.value_type.field(i).type for i in range(t.value_type.num_fields)}
    return _is_string(fields.get("role", pa.null())) and _is_string(fields.get("content", pa.null()))


def _check_not_mixed(values: Any, rows: np.ndarray, column: str, *, where: str, split: str) -> None:
    first = None
    for row in rows:
        value = values[int(row)]
        if not isinstance(value, (str, list)):
            continue
        if first is None:
            first = (int(row), type(value))
        elif type(value) is not first[1]:
            kinds = {str: "plain text", list: "a message list"}
            raise DataError(
                f"{where}: column {column!r} mixes plain text and message lists: row {first[0]} of split {split!r} "
                f"is {kinds[first[1]]}, row {int(row)} is {kinds[type(value)]}; use one format in every row"
            )
