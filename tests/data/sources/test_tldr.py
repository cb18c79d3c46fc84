import pytest

from alignctl.data.sources import tldr
from alignctl.errors import DataError

from ._helpers import one_line_error, rows_of, write_json


def post(i: int) -> str:
    return f"SUBREDDIT: r/relationships\n\nTITLE: Question {i}\n\nPOST: A long story number {i}.\n\nTL;DR:"


# trl-lib/tldr-preference's columns (prompt, chosen, rejected), plus one the loader drops.
ROWS = [{"prompt": post(i), "chosen": f" good summary {i}", "rejected": f" bad one {i}", "extra": i} for i in range(6)]


def test_json_rows_pass_through_as_plain_text_pairs(tmp_path):
    path = write_json(tmp_path / "tldr.json", ROWS)
    data = tldr.load(tldr.TldrConfig(path=str(path), test_size=0.5))  # one file: no validation split, cut 3 rows
    strip = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in ROWS]
    train, test = rows_of(data["train"]), rows_of(data["test"])
    assert (len(train), len(test)) == (3, 3)
    assert sorted(train + test, key=strip.index) == strip
    assert data["test"].column_names == ["prompt", "chosen", "rejected"]


@pytest.mark.parametrize(
    "chosen, words",
    [("", "got an empty string ''"), ("  \n", "got an empty string"), (None, "got None"), (17, "got 17 (int)")],
    ids=["empty", "whitespace", "null", "number"],
)
def test_empty_or_non_string_completion_names_the_row(tmp_path, chosen, words):
    rows = [dict(r) for r in ROWS]
    rows[4]["chosen"] = chosen
    path = write_json(tmp_path / "tldr.json", rows)
    cfg = tldr.TldrConfig(path=str(path), test_size=1)
    parts = (f"dataset.path={path}", "column 'chosen'", "row 4 of split 'train'", "a non-empty string", words)
    one_line_error(DataError, lambda: tldr.load(cfg), *parts)


def test_a_column_of_numbers_fails_at_its_first_row(tmp_path):
    rows = [{**r, "rejected": i} for i, r in enumerate(ROWS)]
    path = write_json(tmp_path / "tldr.json", rows)
    cfg = tldr.TldrConfig(path=str(path), test_size=1)
    one_line_error(DataError, lambda: tldr.load(cfg), "column 'rejected'", "row 0", "got 0 (int)")


def test_defaults_name_the_hub_dataset_and_its_validation_split():
    cfg = tldr.TldrConfig()
    assert (cfg.name, cfg.path, cfg.split, cfg.test_split) == ("tldr", "trl-lib/tldr-preference", "train", "validation")
