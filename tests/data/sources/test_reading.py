"""read_source: file formats, splits (test_size cut, test_split, max_rows) and the row checks, on any option."""

import time

import numpy as np
import pyarrow as pa
import pytest
from datasets import Dataset, DatasetDict
from datasets.table import InMemoryTable

from alignctl.data.sources import prompt_file, tldr
from alignctl.data.sources.reading import MESSAGES, TEXT, check_column, read_source
from alignctl.errors import DataError, UsageError

from ._helpers import one_line_error, rows_of, write_jsonl

NEITHER = "is neither a local file/folder nor a dataset available offline"
PROMPTS = [{"prompt": f"p{i:02d}", "n": i} for i in range(20)]


def prompts_cfg(path, **kw) -> prompt_file.PromptFileConfig:
    return prompt_file.PromptFileConfig(path=str(path), **kw)


def numbers(split) -> list[int]:
    return list(split["n"])


def test_test_size_cut_is_seeded_disjoint_and_in_source_order(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    first = prompt_file.load(prompts_cfg(path, test_size=0.25))  # no "test" split in one file: cut a quarter
    again = prompt_file.load(prompts_cfg(path, test_size=0.25))
    other = prompt_file.load(prompts_cfg(path, test_size=0.25, seed=1))
    train, test = numbers(first["train"]), numbers(first["test"])
    assert (len(train), len(test)) == (15, 5)
    assert sorted(train + test) == list(range(20)) and not set(train) & set(test)
    assert train == sorted(train) and test == sorted(test)
    assert (numbers(again["train"]), numbers(again["test"])) == (train, test)
    assert numbers(other["test"]) != test
    assert len(prompt_file.load(prompts_cfg(path, test_size=3))["test"]) == 3  # >= 1: a count
    assert len(prompt_file.load(prompts_cfg(path, test_size=1.0))["test"]) == 1
    assert len(prompt_file.load(prompts_cfg(path, test_size=0.01))["test"]) == 1  # a share rounds up


def test_max_rows_keeps_the_first_rows_of_each_split(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    full = prompt_file.load(prompts_cfg(path, test_size=8))
    cut = prompt_file.load(prompts_cfg(path, test_size=8, max_rows=3))
    assert numbers(cut["train"]) == numbers(full["train"])[:3]
    assert numbers(cut["test"]) == numbers(full["test"])[:3]


def test_a_source_test_split_is_used_and_test_split_none_cuts_instead(tmp_path):
    folder = tmp_path / "dd"
    splits = {"train": Dataset.from_list(PROMPTS[:12]), "test": Dataset.from_list(PROMPTS[12:])}
    DatasetDict(splits).save_to_disk(str(folder))
    data = prompt_file.load(prompts_cfg(folder))
    assert (numbers(data["train"]), numbers(data["test"])) == (list(range(12)), list(range(12, 20)))
    cut = prompt_file.load(prompts_cfg(folder, test_split=None, test_size=2, max_rows=5))
    assert len(cut["test"]) == 2 and set(numbers(cut["train"]) + numbers(cut["test"])) < set(range(12))
    # a named test split that a source with splits lacks is a typo, never a silent cut
    one_line_error(DataError, lambda: prompt_file.load(prompts_cfg(folder, test_split="validatoin")),
                   "dataset.test_split=validatoin", "it has: train, test", "dataset.test_split=null")  # fmt: skip


def test_unknown_training_split_lists_the_splits(tmp_path):
    folder = tmp_path / "dd"
    DatasetDict({"train": Dataset.from_list(PROMPTS), "test": Dataset.from_list(PROMPTS)}).save_to_disk(str(folder))
    one_line_error(DataError, lambda: prompt_file.load(prompts_cfg(folder, split="validation")),
                   "dataset.split='validation'", f"dataset.path={folder}", "it has: train, test")  # fmt: skip


def test_a_folder_of_data_files_reads_its_splits(tmp_path):
    """A hub dataset downloaded as files (not save_to_disk): read by datasets' folder builder, offline."""
    (tmp_path / "repo").mkdir()
    write_jsonl(tmp_path / "repo" / "train.jsonl", PROMPTS[:15])
    write_jsonl(tmp_path / "repo" / "test.jsonl", PROMPTS[15:])
    data = prompt_file.load(prompts_cfg(tmp_path / "repo"))
    assert (numbers(data["train"]), numbers(data["test"])) == (list(range(15)), list(range(15, 20)))


@pytest.mark.parametrize("value", ["missing.jsonl", "./no/such/folder", "~/no-such-alignctl-file.parquet"])
def test_a_path_that_does_not_exist(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    one_line_error(UsageError, lambda: prompt_file.load(prompts_cfg(value)), f"dataset.path={value} {NEITHER}",
                   "no such file or folder")  # fmt: skip


def test_a_hub_id_not_available_offline(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub.constants

    empty = tmp_path / "empty-hf-home"
    for var, value in (("HF_HOME", empty), ("HF_DATASETS_CACHE", empty / "datasets"), ("HF_HUB_CACHE", empty / "hub")):
        monkeypatch.setenv(var, str(value))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", empty / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(empty / "hub"))
    cfg = tldr.TldrConfig()  # trl-lib/tldr-preference
    message = one_line_error(UsageError, lambda: tldr.load(cfg), f"dataset.path=trl-lib/tldr-preference {NEITHER} (")
    assert "give a local .jsonl/.json/.parquet/.csv file or a save_to_disk folder" in message
    cfg = prompts_cfg("someone/data")
    one_line_error(UsageError, lambda: prompt_file.load(cfg), f"dataset.path=someone/data {NEITHER}")


def test_unsupported_and_unreadable_files(tmp_path):
    (tmp_path / "notes.txt").write_text("prompt\nhello\n")
    one_line_error(UsageError, lambda: prompt_file.load(prompts_cfg(tmp_path / "notes.txt")), "unsupported type (.txt)")
    (tmp_path / "broken.jsonl").write_text('{"prompt": "a"}\n{"prompt": \n')
    cfg = prompts_cfg(tmp_path / "broken.jsonl")
    words = f"dataset.path={cfg.path} could not be read as a .jsonl file"
    one_line_error(DataError, lambda: prompt_file.load(cfg), words)


def test_test_size_must_leave_rows_on_both_sides(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", PROMPTS[:4])
    cfg = prompts_cfg(path, test_size=4)
    one_line_error(DataError, lambda: prompt_file.load(cfg), "dataset.test_size=4", "cuts 4 of the 4 rows")


def test_the_row_index_is_the_source_rows_and_only_kept_rows_are_checked(tmp_path):
    rows = [dict(r) for r in PROMPTS]
    rows[17]["prompt"] = ""
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    cfg = prompts_cfg(path, test_size=5)
    words = ("column 'prompt'", "row 17 of split 'train'", "expected a non-empty string", "got an empty string ''")
    one_line_error(DataError, lambda: prompt_file.load(cfg), *words)
    data = prompt_file.load(prompts_cfg(path, test_size=5, max_rows=4))  # row 17 is not among the kept rows
    assert 17 not in numbers(data["train"]) + numbers(data["test"])


MESSAGES_OK = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


@pytest.mark.parametrize(
    "bad, words",
    [
        (None, "got None"),
        ([], "got an empty list"),
        ("just text", "got 'just text' (str)"),
        ({"role": "user", "content": "q"}, "got {'role': 'user', 'content': 'q'} (dict)"),
        (["hi", "there"], "message 0 is 'hi' (str)"),
        ([{"role": "user"}], "message 0 has content None"),
        ([{"content": "q"}], "message 0 has role None"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": 5}], "message 1 has content 5 (int)"),
        ([{"role": "user", "content": "q"}, {"role": " ", "content": "a"}], "message 1 has role ' ' (str)"),
        ([{"role": "user", "content": None}], "message 0 has content None"),
    ],
    ids=["null", "empty", "text", "dict", "strings", "no-content", "no-role", "int-content", "blank-role", "none"],
)
def test_malformed_message_lists(tmp_path, bad, words):
    rows = [{"chosen": MESSAGES_OK} for _ in range(5)]
    rows[2] = {"chosen": bad}
    cfg = tldr.TldrConfig(path=str(write_jsonl(tmp_path / "m.jsonl", rows)), test_split=None, test_size=1, seed=0)
    expected = "a non-empty list of {role, content} messages"
    parts = (f"dataset.path={cfg.path}", "column 'chosen'", "row 2 of split 'train'", expected, words)
    one_line_error(DataError, lambda: read_source(cfg, {"chosen": MESSAGES}), *parts)


def test_checks_are_vectorised_for_100k_rows():
    n = 100_000
    texts = pa.array([f"prompt number {i}" for i in range(n - 1)] + [" "])
    offsets = pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32))
    roles = pa.array(["user", "assistant"] * n)
    contents = pa.array(["q"] * (2 * n - 1) + [None], pa.string())
    messages = pa.ListArray.from_arrays(offsets, pa.StructArray.from_arrays([roles, contents], ["role", "content"]))
    ds = Dataset(InMemoryTable(pa.table({"prompt": texts, "chosen": messages})))
    rows = np.arange(n)
    start = time.perf_counter()
    for column, kind in (("prompt", TEXT), ("chosen", MESSAGES)):
        check = lambda: check_column(ds, column, kind, rows, where="x", split="train")  # noqa: E731
        one_line_error(DataError, check, f"row {n - 1} ")
    check_column(ds, "prompt", TEXT, rows[:-1], where="x", split="train")  # the bad last row not kept: no error
    assert time.perf_counter() - start < 2.0


def test_rows_come_back_as_python_values(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", PROMPTS[:6])
    data = prompt_file.load(prompts_cfg(path, test_split=None, test_size=1, max_rows=2))
    assert rows_of(data["train"]) == PROMPTS[:2]
