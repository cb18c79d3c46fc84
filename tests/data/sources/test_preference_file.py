import pytest
from datasets import Dataset

from alignctl.data.sources import preference_file
from alignctl.data.sources.reading import read_source
from alignctl.errors import ConfigError, DataError, UsageError

from ._helpers import canonical, one_line_error, rows_of, write_jsonl

REQUIRED = (
    "dataset.path is required for dataset=preference_file; "
    "give a .jsonl/.json/.parquet/.csv file or a save_to_disk folder"
)


def user(text):
    return [{"role": "user", "content": text}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


def load(path, **kw):
    return preference_file.load(preference_file.PreferenceFileConfig(path=str(path), **{"test_size": 2, **kw}))


def all_rows(data) -> list[dict]:
    return sorted(rows_of(data["train"]) + rows_of(data["test"]), key=canonical)


def test_explicit_plain_text_with_rewards_drops_other_columns(tmp_path):
    rows = [{"prompt": f"Q{i}:", "chosen": f" yes {i}", "rejected": f" no {i}", "chosen_reward": i + 0.5,
             "rejected_reward": -i, "id": i} for i in range(6)]  # fmt: skip
    data = load(write_jsonl(tmp_path / "p.jsonl", rows))
    assert data["train"].column_names == ["prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"]
    assert all_rows(data) == sorted(
        [{k: float(v) if "reward" in k else v for k, v in r.items() if k != "id"} for r in rows], key=canonical
    )


def test_a_margin_column_is_kept_as_a_number_and_checked(tmp_path):
    """objective=reward_model's per-pair margin (TRL's RewardTrainer `margin` column)."""
    rows = [{"prompt": f"Q{i}:", "chosen": f" yes {i}", "rejected": f" no {i}", "margin": i} for i in range(4)]
    data = load(write_jsonl(tmp_path / "m.jsonl", rows))
    assert data["train"].column_names == ["prompt", "chosen", "rejected", "margin"]
    assert sorted(r["margin"] for r in rows_of(data["train"]) + rows_of(data["test"])) == [0.0, 1.0, 2.0, 3.0]
    rows[1]["margin"] = "high"
    with pytest.raises(DataError, match="margin"):
        load(write_jsonl(tmp_path / "bad.jsonl", rows))


def test_explicit_conversational(tmp_path):
    rows = [{"prompt": user(f"Hi {i}"), "chosen": assistant(f"Hi {i}"), "rejected": assistant("Go")} for i in range(5)]
    assert all_rows(load(write_jsonl(tmp_path / "c.jsonl", rows))) == sorted(rows, key=canonical)


def test_implicit_plain_text_prompt_is_the_shared_beginning(tmp_path):
    rows = [
        {"chosen": "The sky is blue.", "rejected": "The sky is green."},
        {"chosen": "2+2 = 4", "rejected": "2+2 = 5"},
        {"chosen": "Say hi: hello", "rejected": "Say hi: bye"},
        {"chosen": "Q: cats? A: yes", "rejected": "Q: cats? A: no"},
    ]
    got = all_rows(load(write_jsonl(tmp_path / "i.jsonl", rows)))
    assert got == sorted([
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
        {"prompt": "2+2 =", "chosen": " 4", "rejected": " 5"},
        {"prompt": "Say hi:", "chosen": " hello", "rejected": " bye"},
        {"prompt": "Q: cats? A:", "chosen": " yes", "rejected": " no"},
    ], key=canonical)  # fmt: skip


def test_implicit_conversational_from_a_save_to_disk_folder(tmp_path):
    rows = [{"chosen": user(f"q{i}") + assistant("ok"), "rejected": user(f"q{i}") + assistant("no")} for i in range(4)]
    folder = tmp_path / "pairs"
    Dataset.from_list(rows).save_to_disk(str(folder))  # a Dataset folder: one split, named dataset.split
    expected = [{"prompt": user(f"q{i}"), "chosen": assistant("ok"), "rejected": assistant("no")} for i in range(4)]
    assert all_rows(load(folder)) == sorted(expected, key=canonical)


def test_text_prompt_beside_whole_conversations_is_extracted_as_trl_does(tmp_path):
    """UltraFeedback's own layout: a prompt string and conversations that repeat it (TRL's maybe_extract_prompt)."""
    rows = [{"prompt": f"q{i}", "chosen": user(f"q{i}") + assistant("ok"), "rejected": user(f"q{i}") + assistant("no")}
            for i in range(4)]  # fmt: skip
    expected = [{"prompt": user(f"q{i}"), "chosen": assistant("ok"), "rejected": assistant("no")} for i in range(4)]
    assert all_rows(load(write_jsonl(tmp_path / "u.jsonl", rows))) == sorted(expected, key=canonical)


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"chosen": "Apples.", "rejected": "Pears."}, "share no beginning"),
        ({"chosen": user("a") + assistant("b"), "rejected": user("c") + assistant("b")}, "share no beginning"),
    ],
    ids=["text", "messages"],
)
def test_pairs_with_no_shared_prompt_name_the_row(tmp_path, bad, words):
    good = {"chosen": "Fruit: apples", "rejected": "Fruit: pears"} if isinstance(bad["chosen"], str) else {
        "chosen": user("q") + assistant("x"), "rejected": user("q") + assistant("y")}  # fmt: skip
    path = write_jsonl(tmp_path / "bad.jsonl", [good] * 3 + [bad] + [good] * 2)
    one_line_error(DataError, lambda: load(path, test_size=1, seed=2), "column 'chosen'", "row 3", words)


def test_a_conversational_prompt_with_plain_text_completions(tmp_path):
    rows = [{"prompt": user(f"q{i}"), "chosen": " a", "rejected": " b"} for i in range(4)]
    one_line_error(DataError, lambda: load(write_jsonl(tmp_path / "pc.jsonl", rows)), "column 'prompt'",
                   "the prompt is a message list but the completions are plain text")  # fmt: skip


def test_chosen_and_rejected_in_different_formats(tmp_path):
    rows = [{"chosen": "plain", "rejected": assistant("x")}] * 4
    one_line_error(DataError, lambda: load(write_jsonl(tmp_path / "m.jsonl", rows)), "column 'rejected'", "row ",
                   "chosen is plain text but rejected is a message list")  # fmt: skip


def test_the_path_is_required(tmp_path):
    with pytest.raises(ConfigError) as info:  # at compose time: the config itself is invalid
        preference_file.PreferenceFileConfig()
    assert str(info.value) == REQUIRED
    cfg = preference_file.PreferenceFileConfig(path="x.jsonl")
    cfg.path = None  # a config that skipped its checks still stops before reading anything
    one_line_error(UsageError, lambda: read_source(cfg, {"chosen": "text"}), REQUIRED)
    assert (cfg.name, preference_file.ENTRY.rows) == ("preference_file", "preferences")
