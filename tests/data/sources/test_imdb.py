from datasets import Dataset

from alignctl.data.sources import imdb
from alignctl.errors import DataError

from ._helpers import one_line_error, rows_of

REVIEWS = [  # stanfordnlp/imdb's columns: text, label (0 negative, 1 positive)
    ("I rented I AM CURIOUS-YELLOW from my video store because of all the controversy", 0),
    ("This movie was<br /><br />simply wonderful, from start to finish", 1),
    ("Short   and\tsweet.", 1),
    ("<br />A<BR/>b<br>c d e f g h i j", 0),
    ("Worst. Film. Ever. I walked out after twenty minutes and never looked back", 0),
    ("An honest, moving picture about growing up in a small town", 1),
]
EXPECTED_8 = [
    "I rented I AM CURIOUS-YELLOW from my video",
    "This movie was simply wonderful, from start to",
    "Short and sweet.",
    "A b c d e f g h",
    "Worst. Film. Ever. I walked out after twenty",
    "An honest, moving picture about growing up in",
]


def write(tmp_path, reviews=REVIEWS):
    path = tmp_path / "imdb.parquet"
    Dataset.from_dict({"text": [t for t, _ in reviews], "label": [y for _, y in reviews]}).to_parquet(str(path))
    return path


def test_prompts_are_review_openings_without_br_tags(tmp_path):
    cfg = imdb.ImdbConfig(path=str(write(tmp_path)), test_split=None, test_size=2, max_rows=10)
    data = imdb.load(cfg)
    train, test = rows_of(data["train"]), rows_of(data["test"])
    assert data["train"].column_names == ["prompt"]
    assert sorted(train + test, key=lambda r: EXPECTED_8.index(r["prompt"])) == [{"prompt": p} for p in EXPECTED_8]
    assert len(test) == 2


def test_prompt_words_sets_the_prefix_length(tmp_path):
    data = imdb.load(imdb.ImdbConfig(path=str(write(tmp_path)), test_size=1, prompt_words=2))
    assert sorted([*data["train"]["prompt"], *data["test"]["prompt"]]) == sorted(
        ["I rented", "This movie", "Short and", "A b", "Worst. Film.", "An honest,"]
    )


def test_a_review_of_only_tags_names_the_row(tmp_path):
    path = write(tmp_path, [*REVIEWS[:2], ("<br /><br />", 1), *REVIEWS[2:]])
    cfg = imdb.ImdbConfig(path=str(path), test_size=1)
    one_line_error(DataError, lambda: imdb.load(cfg), "column 'text'", "row 2", "only <br /> tags")


def test_defaults():
    cfg = imdb.ImdbConfig()
    assert (cfg.name, cfg.path, cfg.prompt_words, cfg.test_split) == ("imdb", "stanfordnlp/imdb", 8, "test")
    assert imdb.ENTRY.rows == "prompts"
