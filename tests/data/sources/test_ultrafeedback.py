import pytest
from datasets import Dataset, DatasetDict

from alignctl.data.sources import ultrafeedback
from alignctl.errors import DataError

from ._helpers import canonical, one_line_error, rows_of


def conversation(prompt: str, reply: str) -> list[dict]:
    return [{"content": prompt, "role": "user"}, {"content": reply, "role": "assistant"}]


def real_row(i: int, prompt: str, good: str, bad: str, score_chosen: float, score_rejected: float) -> dict:
    """A row with every column of HuggingFaceH4/ultrafeedback_binarized's *_prefs splits."""
    return {
        "prompt": prompt, "prompt_id": f"{i:064x}", "chosen": conversation(prompt, good),
        "rejected": conversation(prompt, bad), "messages": conversation(prompt, good),
        "score_chosen": score_chosen, "score_rejected": score_rejected,
    }  # fmt: skip


TRAIN = [
    real_row(0, "How do I boil an egg?", "Put it in boiling water for 9 minutes.", "Use a microwave.", 8.0, 3.5),
    real_row(1, "Name a prime number.", "7 is prime.", "9 is prime.", 10.0, 1.0),
    real_row(2, "Translate 'chat' to English.", "Cat.", "Chat.", 7.5, 7.0),
    real_row(3, "Write a haiku.", "Old pond / frog jumps in / splash", "A poem.", 9.0, 2.0),
]
TEST = [
    real_row(9, "What is 2+2?", "4", "5", 10.0, 1.0),
    real_row(10, "Capital of France?", "Paris.", "Lyon.", 9.0, 2.0),
]


def expected(row: dict) -> dict:
    return {
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "chosen": [{"role": "assistant", "content": row["chosen"][-1]["content"]}],
        "rejected": [{"role": "assistant", "content": row["rejected"][-1]["content"]}],
        "chosen_reward": row["score_chosen"],
        "rejected_reward": row["score_rejected"],
    }


def save(tmp_path, train, test=TEST):
    folder = tmp_path / "ultrafeedback_binarized"
    splits = {"train_prefs": Dataset.from_list(train), "test_prefs": Dataset.from_list(test)}
    splits["train_sft"] = Dataset.from_list(train)  # the real dataset has more splits; they are not read
    DatasetDict(splits).save_to_disk(str(folder))
    return folder


def test_save_to_disk_splits_become_conversational_pairs_with_rewards(tmp_path):
    data = ultrafeedback.load(ultrafeedback.UltrafeedbackConfig(path=str(save(tmp_path, TRAIN))))
    assert rows_of(data["train"]) == [expected(r) for r in TRAIN]
    assert rows_of(data["test"]) == [expected(r) for r in TEST]
    assert data["train"].column_names == ["prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"]


def test_multi_turn_prompt_keeps_every_message_before_the_reply(tmp_path):
    row = real_row(5, "Hi", "x", "y", 5.0, 4.0)
    history = [{"content": "Hi", "role": "user"}, {"content": "Hello!", "role": "assistant"}]
    row["chosen"] = [*history, {"content": "More?", "role": "user"}, {"content": "Sure.", "role": "assistant"}]
    row["rejected"] = [*history, {"content": "More?", "role": "user"}, {"content": "No.", "role": "assistant"}]
    data = ultrafeedback.load(ultrafeedback.UltrafeedbackConfig(path=str(save(tmp_path, [row, *TRAIN]))))
    first = data["train"][0]
    assert first["prompt"] == [{"role": m["role"], "content": m["content"]} for m in row["chosen"][:3]]
    assert (first["chosen"], first["rejected"]) == ([row["chosen"][-1]], [row["rejected"][-1]])


def test_parquet_file_is_one_split_named_by_dataset_split(tmp_path):
    path = tmp_path / "prefs.parquet"
    Dataset.from_list(TRAIN + TEST).to_parquet(str(path))
    cfg = ultrafeedback.UltrafeedbackConfig(path=str(path), test_size=2, seed=1)  # no test_prefs: cut 2 rows
    data = ultrafeedback.load(cfg)
    got = rows_of(data["train"]) + rows_of(data["test"])
    assert (len(data["train"]), len(data["test"])) == (4, 2)
    assert sorted(got, key=canonical) == sorted([expected(r) for r in TRAIN + TEST], key=canonical)


def _with(row: dict, **changes) -> dict:
    return {**row, **changes}


assistant_reply = [{"content": "x", "role": "assistant"}]


@pytest.mark.parametrize(
    "bad, column, words",
    [
        (_with(TRAIN[1], chosen=[{"content": "7 is prime.", "role": "assistant"}]), "chosen", "no message before"),
        (_with(TRAIN[1], rejected=conversation("Name a prime number.", "9")[:1]), "rejected", "role 'user'"),
        (_with(TRAIN[1], rejected=conversation("Name an odd number.", "9")), "rejected", "differ before"),
        (_with(TRAIN[1], chosen=[{"content": "q", "role": ""}, *assistant_reply]), "chosen", "role ''"),
        (_with(TRAIN[1], rejected=[]), "rejected", "empty list"),
        (_with(TRAIN[1], score_rejected=None), "score_rejected", "got None"),
    ],
    ids=["no-prompt", "not-assistant-last", "prompts-differ", "empty-role", "empty-list", "missing-score"],
)  # fmt: skip
def test_bad_rows_name_column_and_row(tmp_path, bad, column, words):
    folder = save(tmp_path, [TRAIN[0], bad, *TRAIN[2:]])
    cfg = ultrafeedback.UltrafeedbackConfig(path=str(folder))
    parts = (f"dataset.path={folder}", f"column {column!r}", "row 1 of split 'train_prefs'", words)
    one_line_error(DataError, lambda: ultrafeedback.load(cfg), *parts)


def test_missing_score_column_lists_the_columns_found(tmp_path):
    train, test = ([{k: v for k, v in r.items() if k != "score_chosen"} for r in rows] for rows in (TRAIN, TEST))
    cfg = ultrafeedback.UltrafeedbackConfig(path=str(save(tmp_path, train, test)))
    parts = (f"dataset.path={cfg.path}", "column 'score_chosen' is missing", "prompt, prompt_id, chosen")
    one_line_error(DataError, lambda: ultrafeedback.load(cfg), *parts)


def test_defaults_name_the_hub_dataset_and_its_preference_splits():
    cfg = ultrafeedback.UltrafeedbackConfig()
    assert (cfg.name, cfg.path, cfg.split, cfg.test_split) == (
        "ultrafeedback", "HuggingFaceH4/ultrafeedback_binarized", "train_prefs", "test_prefs"
    )
    assert ultrafeedback.ENTRY.rows == "preferences"
