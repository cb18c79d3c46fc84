"""alignctl.eval.export: the files AlpacaEval and Arena-Hard read, parsed the way their tools parse them, byte-stable
across runs; the prompt sets of both layouts and their bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from alignctl.errors import UsageError
from alignctl.eval import export

PROMPTS = ["What is 2+2?", "Écris un haïku sur la mer.", "List three\nprimes."]
OUTPUTS = ["4", "Vagues sans repos…", ""]  # an empty output is an answer too (the model stopped at once)
UIDS = ["b43c07656ead4150", "328c149ed45a41c0", "0122ab60646b4961"]


def _alpaca_eval_load(path: Path) -> pd.DataFrame:
    """alpaca_eval.utils.load_or_convert_to_dataframe for a .json path, and get_generator_name (commit cd543a1)."""
    assert path.suffix == ".json"  # their reader accepts .json, .csv, .tsv only
    return pd.read_json(path)


def _arena_hard_load(answer_dir: Path) -> dict[str, dict[str, dict]]:
    """arena-hard-auto's utils/completion.py load_model_answers (commit 196f6b8): {file stem: {uid: line}}."""
    answers = {}
    for filename in sorted(answer_dir.glob("*.jsonl")):
        answer = {}
        with open(filename) as fin:
            for row in fin:
                line = json.loads(row)
                answer[line["uid"]] = line
        answers[filename.name[:-6]] = answer
    return answers


def test_alpaca_eval_file_reads_as_their_tool_reads_it(tmp_path):
    path = export.write_alpaca_eval(tmp_path / "out", PROMPTS, OUTPUTS, "my-policy", datasets=["a", None, "b"])
    assert path == tmp_path / "out" / "model_outputs.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(rows, list) and len(rows) == 3
    assert rows[0] == {"instruction": PROMPTS[0], "output": "4", "generator": "my-policy", "dataset": "a"}
    assert rows[1] == {"instruction": PROMPTS[1], "output": OUTPUTS[1], "generator": "my-policy"}
    assert "Écris" in path.read_text(encoding="utf-8")  # UTF-8, not \u-escaped, as their results files
    df = _alpaca_eval_load(path)
    assert list(df["instruction"]) == PROMPTS and list(df["output"]) == OUTPUTS
    assert df["generator"].unique().tolist() == ["my-policy"]  # their get_generator_name takes the single value
    # annotate_head2head merges with the reference outputs on "instruction": every prompt must match byte for byte
    reference = pd.DataFrame({"instruction": PROMPTS[::-1], "output": ["r3", "r2", "r1"]})
    merged = pd.merge(reference, df, on=["instruction"], suffixes=("_1", "_2"))
    assert len(merged) == 3 and dict(zip(merged.instruction, merged.output_2, strict=True)) == dict(
        zip(PROMPTS, OUTPUTS, strict=True)
    )

    named = export.write_alpaca_eval(tmp_path / "x.json", PROMPTS, OUTPUTS, "g")
    assert named == tmp_path / "x.json" and "dataset" not in json.loads(named.read_text())[0]


def test_arena_hard_file_reads_as_their_judge_reads_it(tmp_path):
    folder = tmp_path / "data" / "arena-hard-v2.0" / "model_answer"
    path = export.write_arena_hard(folder, UIDS, PROMPTS, OUTPUTS, "my-policy", tstamp=1711397284.5)
    assert path == folder / "my-policy.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    parsed = [json.loads(line) for line in lines]
    assert [p["uid"] for p in parsed] == sorted(UIDS)  # sorted by uid, as their reorg_answer_file leaves it
    for p in parsed:
        assert list(p) == ["uid", "ans_id", "model", "messages", "tstamp"]
        i = UIDS.index(p["uid"])
        assert p["model"] == "my-policy" and p["tstamp"] == 1711397284.5
        assert p["messages"] == [
            {"role": "user", "content": PROMPTS[i]},
            {"role": "assistant", "content": {"answer": OUTPUTS[i]}},
        ]
        assert isinstance(p["ans_id"], str) and len(p["ans_id"]) == 22
        assert set(p["ans_id"]) <= set(export.SHORTUUID_ALPHABET)
    assert len({p["ans_id"] for p in parsed}) == 3
    answers = _arena_hard_load(folder)
    assert set(answers) == {"my-policy"} and set(answers["my-policy"]) == set(UIDS)
    for uid, prompt, output in zip(UIDS, PROMPTS, OUTPUTS, strict=True):
        answer = answers["my-policy"][uid]
        assert answer["messages"][-1]["content"]["answer"] == output  # what gen_judgment.py puts before the judge
        assert answer["messages"][0]["content"] == prompt
    frame = pd.read_json(path, lines=True)  # how show_result.py reads answer files
    assert frame.iloc[0]["model"] == "my-policy" and list(frame["uid"]) == sorted(UIDS)


def test_exports_are_deterministic(tmp_path):
    a = export.write_arena_hard(tmp_path / "a", UIDS, PROMPTS, OUTPUTS, "m")
    b = export.write_arena_hard(tmp_path / "b", UIDS[::-1], PROMPTS[::-1], OUTPUTS[::-1], "m")
    assert a.read_bytes() == b.read_bytes()  # same answers, any order: same bytes
    c = export.write_arena_hard(tmp_path / "c", UIDS, PROMPTS, ["5", *OUTPUTS[1:]], "m")
    ids = {json.loads(line)["uid"]: json.loads(line)["ans_id"] for line in a.read_text().splitlines()}
    changed = {json.loads(line)["uid"]: json.loads(line)["ans_id"] for line in c.read_text().splitlines()}
    assert changed[UIDS[0]] != ids[UIDS[0]] and changed[UIDS[1]] == ids[UIDS[1]]  # the id follows the content
    assert export.answer_id("m", "u", "p", "o") != export.answer_id("n", "u", "p", "o")
    assert json.loads(a.read_text().splitlines()[0])["tstamp"] == 0.0
    x = export.write_alpaca_eval(tmp_path / "x", PROMPTS, OUTPUTS, "g")
    y = export.write_alpaca_eval(tmp_path / "y", PROMPTS, OUTPUTS, "g")
    assert x.read_bytes() == y.read_bytes()


def test_writers_reject_what_the_tools_cannot_read(tmp_path):
    with pytest.raises(ValueError, match="lengths differ"):
        export.write_alpaca_eval(tmp_path, PROMPTS, OUTPUTS[:2], "g")
    with pytest.raises(ValueError, match="lengths differ"):
        export.write_arena_hard(tmp_path, UIDS[:2], PROMPTS, OUTPUTS, "m")
    with pytest.raises(ValueError, match="repeats"):
        export.write_arena_hard(tmp_path, [UIDS[0]] * 3, PROMPTS, OUTPUTS, "m")
    with pytest.raises(ValueError, match="path separator"):
        export.write_arena_hard(tmp_path, UIDS, PROMPTS, OUTPUTS, "org/model")
    with pytest.raises(ValueError, match="stem"):
        export.write_arena_hard(tmp_path / "other.jsonl", UIDS, PROMPTS, OUTPUTS, "m")
    with pytest.raises(ValueError, match=r"\.json file or a folder"):
        export.write_alpaca_eval(tmp_path / "x.jsonl", PROMPTS, OUTPUTS, "g")
    with pytest.raises(ValueError, match="generator"):
        export.write_alpaca_eval(tmp_path, PROMPTS, OUTPUTS, "")
    with pytest.raises(ValueError, match=r"prompts\[1\]"):
        export.write_alpaca_eval(tmp_path, ["a", "", "c"], OUTPUTS, "g")
    with pytest.raises(ValueError, match=r"outputs\[2\]"):
        export.write_arena_hard(tmp_path, UIDS, PROMPTS, ["a", "b", None], "m")
    assert not list(tmp_path.iterdir())  # nothing half-written


def _write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_reads_alpaca_eval_sets(tmp_path):
    rows = [
        {"instruction": PROMPTS[0], "output": "ref", "generator": "gpt4_1106_preview", "dataset": "helpful_base"},
        {"instruction": PROMPTS[1], "dataset": "koala"},
    ]
    as_json = tmp_path / "alpaca_eval.json"
    as_json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    read = export.read_prompt_file(as_json)
    assert [r["prompt"] for r in read] == PROMPTS[:2]
    assert [r["dataset"] for r in read] == ["helpful_base", "koala"]
    assert {r["layout"] for r in read} == {"alpaca_eval"}
    assert read[0]["id"] != read[1]["id"] and len(read[0]["id"]) == 16
    assert export.read_prompt_file(_write_lines(tmp_path / "a.jsonl", rows)) == read  # jsonl: the same rows
    assert export.read_prompt_file(_write_lines(tmp_path / "b.jsonl", rows[::-1]))[0]["id"] == read[1]["id"]


def test_reads_arena_hard_questions_of_both_versions(tmp_path):
    v2 = [
        {"uid": UIDS[0], "category": "hard_prompt", "subcategory": "coding", "prompt": PROMPTS[0]},
        {"uid": UIDS[1], "category": "creative_writing", "subcategory": "", "prompt": PROMPTS[1]},
    ]
    read = export.read_prompt_file(_write_lines(tmp_path / "question.jsonl", v2))
    assert read == [
        {"id": UIDS[0], "prompt": PROMPTS[0], "layout": "arena_hard", "category": "hard_prompt",
         "subcategory": "coding"},
        {"id": UIDS[1], "prompt": PROMPTS[1], "layout": "arena_hard", "category": "creative_writing",
         "subcategory": ""},
    ]  # fmt: skip
    v01 = [{"question_id": UIDS[2], "category": "arena-hard-v0.1", "cluster": "ABC", "turns": [{"content": "hi"}]}]
    assert export.read_prompt_file(_write_lines(tmp_path / "old.jsonl", v01)) == [
        {"id": UIDS[2], "prompt": "hi", "layout": "arena_hard", "category": "arena-hard-v0.1", "cluster": "ABC"}
    ]
    # a round trip: the questions' uids and prompts go straight into the answer file
    path = export.write_arena_hard(tmp_path / "ans", [r["id"] for r in read], [r["prompt"] for r in read],
                                   ["x", "y"], "m")  # fmt: skip
    assert {json.loads(line)["uid"] for line in path.read_text().splitlines()} == set(UIDS[:2])


@pytest.mark.parametrize(
    "content,expected",
    [
        (None, "does not exist"),
        ("", "has no rows"),
        ("\n\n", "has no rows"),
        ("[]", "has no rows"),
        ('{"prompt": "p"}\n', "neither an instruction nor a uid/question_id (found: prompt)"),
        ('{"instruction": "a"}\n{"output": "b"}\n', "row 1 has no instruction"),
        ('{"instruction": "a"}\n{"instruction": "  "}\n', "row 1 has no instruction"),
        ('{"uid": "1", "prompt": "a"}\n{"uid": "2"}\n', "row 1 has no prompt"),
        ('{"uid": "1", "prompt": ""}\n', "row 0 has an empty prompt"),
        ('{"uid": "", "prompt": "a"}\n', "row 0 has no uid/question_id"),
        ('{"uid": "1", "prompt": "a"}\n{"uid": "1", "prompt": "b"}\n', "row 1 repeats the id '1' of row 0"),
        ('{"question_id": 7, "turns": [{"content": "a"}, {"content": "b"}]}\n', "turns of 2"),
        ('{"uid": "1", "prompt": "a"}\nnot json\n', "line 2 is not a JSON object"),
        ('[{"instruction": "a"}, 3]', "row 1 is not a JSON object (got int)"),
        ("[{]", "is not valid JSON"),
    ],
)
def test_bad_prompt_files_are_one_line(tmp_path, content, expected):
    path = tmp_path / "prompts.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError) as e:
        export.read_prompt_file(path)
    message = str(e.value)
    assert message.startswith(f"eval.export.prompts={path}")
    assert expected in message and "\n" not in message


def test_a_folder_is_not_a_prompt_file(tmp_path):
    with pytest.raises(UsageError, match="is a folder"):
        export.read_prompt_file(tmp_path)
