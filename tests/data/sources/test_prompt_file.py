import pytest

from alignctl.data.sources import prompt_file
from alignctl.errors import ConfigError, DataError

from ._helpers import canonical, one_line_error, rows_of, write_jsonl


def load(path, **kw):
    return prompt_file.load(prompt_file.PromptFileConfig(path=str(path), test_size=2, **kw))


def test_csv_prompts_keep_their_other_columns(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text('prompt,topic,answer\n"Once upon a time,",fairy,1\nThe movie was,film,2\n"Say ""hi"":",chat,3\n'
                    "Roses are,poem,4\nIn 1999 I,memoir,5\n")  # fmt: skip
    data = load(path)
    assert data["train"].column_names == ["prompt", "topic", "answer"]
    expected = [
        {"prompt": "Once upon a time,", "topic": "fairy", "answer": 1},
        {"prompt": "The movie was", "topic": "film", "answer": 2},
        {"prompt": 'Say "hi":', "topic": "chat", "answer": 3},
        {"prompt": "Roses are", "topic": "poem", "answer": 4},
        {"prompt": "In 1999 I", "topic": "memoir", "answer": 5},
    ]
    got = rows_of(data["train"]) + rows_of(data["test"])
    assert sorted(got, key=canonical) == sorted(expected, key=canonical)


def test_conversational_prompts(tmp_path):
    rows = [{"prompt": [{"role": "system", "content": ""}, {"role": "user", "content": f"q{i}"}]} for i in range(4)]
    data = load(write_jsonl(tmp_path / "c.jsonl", rows))
    assert sorted(rows_of(data["train"]) + rows_of(data["test"]), key=canonical) == sorted(rows, key=canonical)


def test_a_column_mixing_text_and_messages(tmp_path):
    rows = [{"prompt": "plain"}, {"prompt": "also"}, {"prompt": [{"role": "user", "content": "m"}]}, {"prompt": "p"}]
    one_line_error(DataError, lambda: load(write_jsonl(tmp_path / "mix.jsonl", rows)), "column 'prompt' mixes",
                   "row 0", "row 2 is a message list")  # fmt: skip


def test_missing_prompt_column_lists_the_columns(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "a", "id": 1}] * 4)
    one_line_error(DataError, lambda: load(path), "column 'prompt' is missing", "question, id", f"dataset.path={path}")


def test_the_path_is_required():
    with pytest.raises(ConfigError, match="dataset.path is required for dataset=prompt_file; give a"):
        prompt_file.PromptFileConfig()
    assert prompt_file.ENTRY.rows == "prompts"
