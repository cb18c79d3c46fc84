"""A local data file's checks that need no parser (reading.check_file): empty, not UTF-8 (the first bad byte's
offset and line), run by `alignctl train`'s validation (check_local_source) and by the loaders; and the loaders'
own one-line errors for sources with no rows or undecodable text."""

from __future__ import annotations

import pytest

from alignctl.data.sources import preference_file, prompt_file, reading
from alignctl.errors import DataError, UsageError

from ._helpers import one_line_error

PAIR = '{"prompt": "the caf\u00e9 was", "chosen": " good \u20ac.", "rejected": " bad."}\n'.encode()


def pairs_cfg(path, **kw):
    return preference_file.PreferenceFileConfig(path=str(path), **{"test_size": 1, **kw})


def parquet_of_no_rows(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": pa.array([], pa.string()), "chosen": pa.array([], pa.string()),
                             "rejected": pa.array([], pa.string())}), path)  # fmt: skip


@pytest.mark.parametrize(
    "name, content, detail",
    [
        ("p.jsonl", b"", "is empty (0 bytes)"),
        ("p.jsonl", b"\n \n\t\n", "is empty (only whitespace)"),
        ("p.csv", b"prompt,chosen,rejected\n\n", "is empty (only a header line)"),
        ("p.json", b"[ ]\n", "is empty (only [])"),
        ("p.parquet", None, "is empty (a Parquet table of 0 rows)"),
    ],
)
def test_an_empty_file_is_one_line_before_and_while_loading(tmp_path, name, content, detail):
    path = tmp_path / name
    parquet_of_no_rows(path) if content is None else path.write_bytes(content)
    suffix = path.suffix
    words = (f"dataset.path={path} {detail}", "dataset=preference_file needs at least one row",
             f"a {suffix} file holds {reading.FILE_LAYOUTS[suffix]}")  # fmt: skip
    one_line_error(DataError, lambda: reading.check_local_source(pairs_cfg(path)), *words)
    one_line_error(DataError, lambda: preference_file.load(pairs_cfg(path)), *words)


def test_bytes_that_are_not_utf8_are_named_by_offset_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    bad = '{"prompt": "caf\u00e9 was", "chosen": " good.", "rejected": " bad."}\n'.encode("latin-1")
    path.write_bytes(PAIR * 3 + bad)
    offset = len(PAIR * 3) + bad.index(b"\xe9")
    words = (f"dataset.path={path} is not UTF-8: byte 0xe9 at offset {offset} (line 4) is not valid UTF-8",
             "re-encode it", "iconv")  # fmt: skip
    one_line_error(DataError, lambda: reading.check_local_source(pairs_cfg(path)), *words)
    one_line_error(DataError, lambda: preference_file.load(pairs_cfg(path)), *words)
    prompts = prompt_file.PromptFileConfig(path=str(path), test_size=1)
    one_line_error(DataError, lambda: prompt_file.load(prompts), *words)


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 7, 64])
def test_chunk_boundaries_inside_characters(tmp_path, monkeypatch, chunk):
    """The file is read in chunks: a character cut by a chunk's end is whole UTF-8, and a bad byte's offset and line
    do not depend on where the chunks end."""
    monkeypatch.setattr(reading, "_SCAN_CHUNK", chunk)
    good = tmp_path / f"good-{chunk}.jsonl"
    good.write_bytes(PAIR * 3)
    reading.check_local_source(pairs_cfg(good))
    assert reading._file_problem(str(good.resolve()), ".jsonl", good.stat().st_size, good.stat().st_mtime_ns) is None
    bad = tmp_path / f"bad-{chunk}.jsonl"
    bad.write_bytes(PAIR * 2 + b'{"prompt": "\xe2\x82"}\n')  # a 3-byte character cut short
    problem = reading._file_problem(str(bad.resolve()), ".jsonl", bad.stat().st_size, bad.stat().st_mtime_ns)
    at = len(PAIR * 2) + len('{"prompt": "')
    assert problem == ("encoding", f"byte 0xe2 at offset {at} (line 3) is not valid UTF-8 (invalid continuation byte)")


def test_what_needs_no_check_or_is_checked_elsewhere(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(PAIR * 2)
    reading.check_local_source(pairs_cfg(path))  # a good file
    reading.check_local_source(pairs_cfg("someone/pairs"))  # a hub id: read when the run loads its data
    one_line_error(UsageError, lambda: reading.check_local_source(pairs_cfg(tmp_path / "missing.jsonl")),
                   f"dataset.path={tmp_path / 'missing.jsonl'} is neither a local file/folder")  # fmt: skip
    (tmp_path / "notes.txt").write_text("hello")
    one_line_error(UsageError, lambda: reading.check_local_source(pairs_cfg(tmp_path / "notes.txt")),
                   "unsupported type (.txt)")  # fmt: skip


def test_folders_with_an_empty_or_undecodable_file_and_sources_of_no_rows(tmp_path):
    from datasets import Dataset, DatasetDict

    empty = tmp_path / "empty-folder"
    empty.mkdir()
    (empty / "train.jsonl").write_bytes(b"")
    one_line_error(DataError, lambda: preference_file.load(pairs_cfg(empty)),
                   f"dataset.path={empty} is a folder with an empty data file")  # fmt: skip
    latin = tmp_path / "latin-folder"
    latin.mkdir()
    (latin / "train.jsonl").write_bytes(PAIR * 2 + '{"prompt": "caf\u00e9", "chosen": " a", "rejected": " b"}\n'
                                        .encode("latin-1"))  # fmt: skip
    one_line_error(DataError, lambda: preference_file.load(pairs_cfg(latin)),
                   f"dataset.path={latin}: split 'train' holds text that is not UTF-8", "byte 0xe9")  # fmt: skip
    saved = tmp_path / "saved"
    Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []}).save_to_disk(str(saved))
    one_line_error(DataError, lambda: preference_file.load(pairs_cfg(saved)),
                   f"dataset.path={saved}: the dataset has no rows (it was saved with none); dataset=preference_file "
                   "needs at least one row")  # fmt: skip
    one_split = tmp_path / "one-split.jsonl"
    one_split.write_bytes(PAIR * 2)
    folder = tmp_path / "splits"
    DatasetDict({"train": Dataset.from_json(str(one_split)), "test": Dataset.from_dict({"prompt": [], "chosen": [],
                 "rejected": []})}).save_to_disk(str(folder))  # fmt: skip
    one_line_error(DataError, lambda: preference_file.load(pairs_cfg(folder)),
                   f"dataset.path={folder}: split 'test' has no rows")  # fmt: skip


def test_a_source_split_of_no_rows(monkeypatch):
    """Any source (a hub dataset's split, say) whose training split has no rows."""
    from datasets import Dataset

    empty = Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []})
    monkeypatch.setattr(reading, "_open", lambda cfg, **kw: {"train": empty})
    one_line_error(DataError, lambda: preference_file.load(pairs_cfg("someone/pairs")),
                   "dataset.path=someone/pairs: split 'train' has no rows; dataset=preference_file needs at least one "
                   "row with chosen, rejected")  # fmt: skip
