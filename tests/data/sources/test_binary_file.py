"""dataset=binary_file: TRL's unpaired preference format (prompt, completion, label) from the user's own files."""

import pandas as pd
import pytest

from alignctl.config import compose
from alignctl.data import registry
from alignctl.data.sources import binary_file
from alignctl.errors import ConfigError, DataError, UsageError

from ._helpers import canonical, one_line_error, rows_of, write_json, write_jsonl

ROWS = [{"prompt": f"Q{i}:", "completion": f" answer {i}", "label": i % 3 != 0, "id": i} for i in range(8)]


def load(path, **kw):
    return binary_file.load(binary_file.BinaryFileConfig(path=str(path), **{"test_size": 2, **kw}))


def all_rows(data) -> list[dict]:
    return sorted(rows_of(data["train"]) + rows_of(data["test"]), key=canonical)


def expected(rows=ROWS) -> list[dict]:
    return sorted([{k: v for k, v in r.items() if k != "id"} for r in rows], key=canonical)


@pytest.mark.parametrize("suffix", ["jsonl", "json", "parquet", "csv"])
def test_every_file_type_reads_the_same_rows_and_drops_other_columns(tmp_path, suffix):
    path = tmp_path / f"b.{suffix}"
    if suffix == "jsonl":
        write_jsonl(path, ROWS)
    elif suffix == "json":
        write_json(path, ROWS)
    elif suffix == "parquet":
        pd.DataFrame(ROWS).to_parquet(path)
    else:
        pd.DataFrame(ROWS).to_csv(path, index=False)  # labels written True/False
    data = load(path)
    assert data["train"].column_names == ["prompt", "completion", "label"]
    assert (len(data["train"]), len(data["test"])) == (6, 2)
    assert all_rows(data) == expected()
    assert all(isinstance(r["label"], bool) for r in rows_of(data["train"]))


def test_csv_words_true_false_in_any_case_are_booleans(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("prompt,completion,label\nA:, x,true\nB:, y,FALSE\nC:, z,True\nD:, w,false\n")
    got = all_rows(load(path))
    assert [r["label"] for r in sorted(got, key=lambda r: r["prompt"])] == [True, False, True, False]


def test_conversational_rows(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"Hi {i}"}],
             "completion": [{"role": "assistant", "content": f"Hello {i}"}], "label": i % 2 == 0}
            for i in range(5)]  # fmt: skip
    assert all_rows(load(write_jsonl(tmp_path / "c.jsonl", rows))) == sorted(rows, key=canonical)


@pytest.mark.parametrize("bad,shown", [("yes", "'yes' (str)"), (1, "1 (int)"), (None, "None"), (0.0, "0.0 (float)"),
                                       ("1", "1")], ids=["word", "int", "null", "float", "digit"])  # fmt: skip
def test_a_label_that_is_not_a_boolean_names_row_column_and_value(tmp_path, bad, shown):
    # ("1" beside booleans: datasets keeps the mixed column as JSON and decodes the string's text, so it shows 1)
    rows = [dict(r) for r in ROWS]
    rows[5]["label"] = bad
    path = write_jsonl(tmp_path / "b.jsonl", rows)
    message = one_line_error(DataError, lambda: load(path), f"dataset.path={path}", "column 'label'", "row 5",
                             "expected a boolean (true or false)", f"got {shown}")  # fmt: skip
    assert message.startswith(f"dataset.path={path}: column 'label', row 5 of split 'train'")


def test_a_bad_label_in_a_csv_is_named_not_its_good_neighbours(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("prompt,completion,label\nA:, x,true\nB:, y,false\nC:, z,maybe\n")
    one_line_error(DataError, lambda: load(path, test_size=1), "column 'label', row 2", "got 'maybe' (str)")


def test_missing_and_empty_columns_and_mixed_formats(tmp_path):
    no_label = write_jsonl(tmp_path / "n.jsonl", [{"prompt": "a", "completion": " b"}] * 3)
    one_line_error(DataError, lambda: load(no_label, test_size=1), "column 'label' is missing",
                   "needs prompt, completion, label")  # fmt: skip
    empty = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "a", "completion": " b", "label": True}] * 2
                        + [{"prompt": "a", "completion": "", "label": False}])  # fmt: skip
    one_line_error(DataError, lambda: load(empty, test_size=1), "column 'completion', row 2", "empty string")
    mixed = write_jsonl(tmp_path / "m.jsonl", [
        {"prompt": [{"role": "user", "content": "hi"}], "completion": " plain", "label": True}] * 3)  # fmt: skip
    one_line_error(DataError, lambda: load(mixed, test_size=1), "column 'completion', row 0",
                   "the prompt is a message list but the completion is plain text")  # fmt: skip


def test_path_is_required():
    with pytest.raises(ConfigError, match="dataset.path is required for dataset=binary_file"):
        binary_file.BinaryFileConfig()


def test_entry_and_what_it_feeds():
    entry = registry.get("binary_file")
    assert (entry.rows, entry.schema) == ("binary", binary_file.BinaryFileConfig)
    assert registry.data_kinds(entry) == ("binary",)
    for name in ("toy_sentiment", "preference_file", "prompt_file"):  # pairs (read or sampled) split in two
        assert "binary" in registry.data_kinds(registry.get(name))


def test_composes_with_kto_and_refuses_pairwise_objectives(tmp_path):
    path = write_jsonl(tmp_path / "b.jsonl", ROWS)
    hf = ["model=hf", "model.path=some/model"]
    cfg = compose.compose_one(["objective=kto", "dataset=binary_file", f"dataset.path={path}", *hf])
    assert (cfg.objective.name, cfg.dataset.name) == ("kto", "binary_file")
    with pytest.raises(UsageError, match="dataset=binary_file provides no preference pairs, which objective=dpo"):
        compose.compose_one(["objective=dpo", "dataset=binary_file", f"dataset.path={path}", *hf])
