"""eval.preference_data (RewardBench's DPO evaluation): scores against an explicit float64 log_softmax re-derivation,
accuracy and section scores against hand computations, the file reader on every format and every bad input."""

from __future__ import annotations

import copy
import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from alignctl.errors import DataError, UsageError
from alignctl.eval import reward_bench as rb
from alignctl.models.sampling import split_at_prompt

TEXTS = [
    "the film was a quiet delight. the plot was clever and the acting was warm.",
    "a dull plot and wooden acting. the film was too long.",
    "review: a fine film with a clever plot.",
] * 4

# Prompts end at a pre-token boundary (":" / "?") and completions start with a space, so prompt + completion
# tokenises as the two parts side by side: the explicit re-derivation below tokenises them separately.
ROWS = [
    {"prompt": "review:", "chosen": " a quiet delight.", "rejected": " a dull plot.", "subset": "chat"},
    {"prompt": "was the film good?", "chosen": " the acting was warm and the plot was clever.",
     "rejected": " no.", "subset": "chat"},
    {"prompt": "the plot:", "chosen": " clever.", "rejected": " wooden acting and a plot too long.", "subset": "hard"},
    {"prompt": "a film review:", "chosen": " the film was a fine film.", "rejected": " dull.", "subset": "hard"},
    {"prompt": "verdict?", "chosen": " warm", "rejected": " too long", "subset": "safety"},
]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    from alignctl.data.tasks import tiny_lm

    return tiny_lm.train_bpe_tokenizer(TEXTS, vocab_size=400, model_max_length=128)


@pytest.fixture(scope="module")
def models(tokenizer):
    """A tiny random Llama and a perturbed copy of it as the reference."""
    from alignctl.data.tasks import tiny_lm
    from alignctl.models.schema import TinyModelConfig

    cfg = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=128)
    policy = tiny_lm.build_llama(cfg, tokenizer).eval()
    reference = copy.deepcopy(policy)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return policy, reference


def explicit_logp(model64, prompt_ids: list[int], completion_ids: list[int]) -> tuple[float, int]:
    """sum_t log softmax(logits_{t-1})[y_t] over the completion positions, one unpadded sequence, float64."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model64(input_ids=ids).logits[0].double(), -1)
    start = len(prompt_ids)
    terms = [logp[t - 1, ids[0, t]].item() for t in range(start, ids.shape[1])]
    return math.fsum(terms), len(terms)


def explicit_rewards(tokenizer, policy, reference, rows, length_normalized):
    pol64 = copy.deepcopy(policy).double()
    ref64 = copy.deepcopy(reference).double() if reference is not None else None
    out = {"chosen": [], "rejected": []}
    for row in rows:
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        for key, rewards in out.items():
            completion_ids = tokenizer(row[key], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            # the precondition of tokenising the parts separately: the joint text gives the same tokens
            assert tokenizer(row["prompt"] + row[key])["input_ids"] == prompt_ids + completion_ids[:-1]
            lp, n = explicit_logp(pol64, prompt_ids, completion_ids)
            if ref64 is not None:
                lp -= explicit_logp(ref64, prompt_ids, completion_ids)[0]
            rewards.append(lp / n if length_normalized else lp)
    return torch.tensor(out["chosen"], dtype=torch.float64), torch.tensor(out["rejected"], dtype=torch.float64)


# --- score_pairs --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["fused", "naive"])
@pytest.mark.parametrize("length_normalized", [False, True], ids=["sum", "avg"])
@pytest.mark.parametrize("with_reference", [True, False], ids=["ref", "ref_free"])
def test_score_pairs_matches_explicit_log_softmax(tokenizer, models, kernel, length_normalized, with_reference):
    policy, reference = models
    reference = reference if with_reference else None
    chosen, rejected = rb.score_pairs(
        policy, reference, tokenizer, ROWS, batch_size=4, kernel=kernel, length_normalized=length_normalized
    )
    want_c, want_r = explicit_rewards(tokenizer, policy, reference, ROWS, length_normalized)
    assert chosen.dtype == rejected.dtype == torch.float64 and chosen.shape == rejected.shape == (len(ROWS),)
    torch.testing.assert_close(chosen, want_c, rtol=0, atol=2e-5)
    torch.testing.assert_close(rejected, want_r, rtol=0, atol=2e-5)
    # not trivially close: the rewards differ between rows and between chosen and rejected
    assert (want_c - want_r).abs().min() > 1e-3 and want_c.std() > 1e-3


def test_reference_shifts_the_rewards(tokenizer, models):
    """With a reference the reward is the policy's log-prob minus the reference's: not the ref-free value."""
    policy, reference = models
    with_ref = rb.score_pairs(policy, reference, tokenizer, ROWS, batch_size=8)
    ref_free = rb.score_pairs(policy, None, tokenizer, ROWS, batch_size=8)
    as_reference = rb.score_pairs(reference, None, tokenizer, ROWS, batch_size=8)
    for a, b, c in zip(with_ref, ref_free, as_reference):
        torch.testing.assert_close(a, b - c, rtol=0, atol=1e-5)
        assert (a - b).abs().min() > 1.0


def test_batching_does_not_change_the_rewards(tokenizer, models):
    policy, reference = models
    rows = ROWS * 2
    for normalized in (False, True):
        one = rb.score_pairs(policy, reference, tokenizer, rows, batch_size=1, length_normalized=normalized)
        three = rb.score_pairs(policy, reference, tokenizer, rows, batch_size=3, length_normalized=normalized)
        for a, b in zip(one, three):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        # row order is kept: the repeated rows get their first copies' rewards
        torch.testing.assert_close(one[0][: len(ROWS)], one[0][len(ROWS) :], rtol=0, atol=1e-5)


def test_split_at_prompt_moves_a_merged_boundary_into_the_completion(tokenizer):
    prompt, completion = "the fil", "m was warm"
    full = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]
    alone = tokenizer(prompt)["input_ids"]
    p, c = split_at_prompt(tokenizer, prompt, completion)
    assert p + c == full and c[-1] == tokenizer.eos_token_id
    assert p == alone[: len(p)] and len(p) < len(alone)  # " fil" merged with "m": the cut moves back
    assert tokenizer.decode(c, skip_special_tokens=True).endswith("m was warm")
    # a completion that already ends with EOS gets no second one
    _, c2 = split_at_prompt(tokenizer, "review:", " fine" + tokenizer.eos_token)
    assert c2.count(tokenizer.eos_token_id) == 1 and c2 == split_at_prompt(tokenizer, "review:", " fine")[1]


def test_render_chat(tokenizer):
    tok = copy.deepcopy(tokenizer)
    rows = [{"prompt": "Q", "chosen": "yes", "rejected": "no", "subset": "s1"}]
    with pytest.raises(UsageError, match="eval.preference_data"):
        rb.render_chat(rows, tok)
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    assert rb.render_chat(rows, tok) == [
        {"prompt": "<user>Q\n<assistant>", "chosen": "yes\n", "rejected": "no\n", "subset": "s1"}
    ]


# --- accuracy and sections -----------------------------------------------------------------------------------


def test_accuracy_by_hand():
    chosen = [1.0, 2.0, 0.5, 3.0, -1.0, float("nan"), 2.0]
    rejected = [0.0, 2.0, 0.7, 1.0, -2.0, 0.0, 1.0]
    subsets = ["b", "b", "a", "a", "c", "c", "b"]
    # right: 1, 0 (tie), 0, 1, 1, 0 (NaN), 1
    out = rb.accuracy(chosen, rejected, subsets)
    assert out == {
        "overall": 4 / 7,
        "per_subset": {"a": 1 / 2, "b": 2 / 3, "c": 1 / 2},
        "num_pairs": 7,
        "num_pairs_per_subset": {"a": 2, "b": 3, "c": 2},
    }
    assert list(out["per_subset"]) == ["a", "b", "c"]
    # tensors in, the same numbers; all ties -> 0
    t = rb.accuracy(torch.tensor(chosen), torch.tensor(rejected, dtype=torch.float64), subsets)
    assert t == out
    assert rb.accuracy([1.0, 1.0], [1.0, 1.0], ["x", "x"])["overall"] == 0.0
    assert rb.accuracy([1.0 + 1e-12], [1.0], ["x"])["overall"] == 1.0


def test_accuracy_refuses_bad_input():
    with pytest.raises(ValueError, match="one entry per pair"):
        rb.accuracy([1.0, 2.0], [1.0], ["a", "a"])
    with pytest.raises(ValueError, match="one entry per pair"):
        rb.accuracy([1.0], [1.0], ["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        rb.accuracy([], [], [])


def test_rewardbench_sections_by_hand():
    per_subset = {s: 1.0 for s in rb.SUBSET_SIZES}
    per_subset.update({"math-prm": 0.0, "alpacaeval-length": 0.0, "alpacaeval-hard": 0.0, "mt-bench-easy": 0.0,
                       "mt-bench-med": 0.0, "donotanswer": 0.5})  # fmt: skip
    counts = dict(rb.SUBSET_SIZES)
    out = rb.rewardbench_sections(per_subset, counts)
    chat = 100 / (100 + 95 + 95 + 28 + 40)  # only alpacaeval-easy right
    safety = (100 + 100 + 154 + 250 + 0.5 * 136) / (100 + 100 + 154 + 250 + 136)
    reasoning = 6 * 164 / (984 + 6 * 164)  # math-prm weighted 984, as the code subsets together: 0.5
    assert reasoning == 0.5
    assert out == pytest.approx({"Chat": chat, "Chat Hard": 1.0, "Safety": safety, "Reasoning": 0.5,
                                 "Score": (chat + 1.0 + safety + 0.5) / 4}, abs=1e-15)  # fmt: skip
    assert sum(counts.values()) == 2985 and counts["math-prm"] == 447
    # not RewardBench's whole benchmark -> no section scores
    assert rb.rewardbench_sections({"all": 0.5}, {"all": 10}) is None
    partial = {k: v for k, v in per_subset.items() if k != "hep-go"}
    assert rb.rewardbench_sections(partial, {k: v for k, v in counts.items() if k != "hep-go"}) is None
    assert rb.rewardbench_sections({**per_subset, "extra": 1.0}, {**counts, "extra": 3}) is None
    assert rb.rewardbench_sections(per_subset, {**counts, "math-prm": 984}) is None  # a sample, not the split


def test_end_to_end_on_a_file(tmp_path, tokenizer, models):
    policy, reference = models
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    rows = rb.read_preference_data(str(path))
    chosen, rejected = rb.score_pairs(policy, reference, tokenizer, rows, batch_size=4)
    out = rb.accuracy(chosen, rejected, [r["subset"] for r in rows])
    right = [int(c > r) for c, r in zip(chosen.tolist(), rejected.tolist())]
    assert out["overall"] == sum(right) / len(ROWS)
    assert out["per_subset"]["chat"] == (right[0] + right[1]) / 2
    assert out["num_pairs_per_subset"] == {"chat": 2, "hard": 2, "safety": 1}


# --- read_preference_data -----------------------------------------------------------------------------------------

FILE_ROWS = [
    {"prompt": 'say "hi", then stop', "chosen": "hi,\nthen stop", "rejected": "", "subset": "x", "id": 3},
    {"prompt": "ünïcode ✓", "chosen": "a\u2028b", "rejected": "no", "subset": "y", "id": 4},
]


def _write(path, rows):
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif suffix == ".csv":
        import csv

        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return str(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_reads_every_format(tmp_path, suffix):
    want = [{k: r[k] for k in ("prompt", "chosen", "rejected", "subset")} for r in FILE_ROWS]
    assert rb.read_preference_data(_write(tmp_path / f"d{suffix}", FILE_ROWS)) == want
    no_subset = [{k: v for k, v in r.items() if k != "subset"} for r in FILE_ROWS]
    got = rb.read_preference_data(_write(tmp_path / f"n{suffix.upper()}", no_subset))
    assert got == [{**w, "subset": "all"} for w in want]


def test_reads_json_columns(tmp_path):
    path = tmp_path / "cols.json"
    path.write_text(json.dumps({"prompt": ["p"], "chosen": ["c"], "rejected": ["r"], "subset": ["s"]}))
    assert rb.read_preference_data(str(path)) == [{"prompt": "p", "chosen": "c", "rejected": "r", "subset": "s"}]


def _bad_jsonl(tmp_path, text: bytes | str, name="bad.jsonl"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


GOOD = json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"})


def _cases(tmp_path):
    d = tmp_path
    (d / "folder").mkdir()
    empty_parquet = d / "empty.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string()), "chosen": pa.array([], pa.string()),
                             "rejected": pa.array([], pa.string())}), empty_parquet)  # fmt: skip
    null_parquet = d / "null.parquet"
    pq.write_table(pa.table({"prompt": ["p", "q"], "chosen": ["c", None], "rejected": ["r", "s"]}), null_parquet)
    int_subset = d / "subset.parquet"
    pq.write_table(pa.table({"prompt": ["p"], "chosen": ["c"], "rejected": ["r"], "subset": [1]}), int_subset)
    (d / "header.csv").write_text("prompt,chosen,rejected\n")
    (d / "short.csv").write_text("prompt,chosen,rejected\np,c,r\np,c\n")
    (d / "long.csv").write_text("prompt,chosen,rejected\np,c,r,extra\n")
    (d / "scalar.json").write_text("3")
    (d / "broken.parquet").write_bytes(b"not parquet")
    (d / "data.txt").write_text(GOOD)
    return {
        "no such file": (str(d / "missing.jsonl"), "no such file"),
        "folder": (str(d / "folder"), "non-file"),
        "unknown extension": (str(d / "data.txt"), "unsupported type (.txt)"),
        "missing column": (
            _bad_jsonl(d, json.dumps({"prompt": "p", "chosen": "c", "answer": "r"}) + "\n"),
            ("column 'rejected' is missing; the columns found are: prompt, chosen, answer; required: "
             "prompt, chosen, rejected"),
        ),
        "empty jsonl": (_bad_jsonl(d, "\n\n", "empty.jsonl"), "has no rows"),
        "header-only csv": (str(d / "header.csv"), "has no rows"),
        "empty parquet": (str(empty_parquet), "has no rows"),
        "empty json array": (_bad_jsonl(d, "[]", "empty.json"), "has no rows"),
        "non-utf8": (_bad_jsonl(d, GOOD.encode() + b"\n" + b'{"prompt": "\xff"}\n', "latin.jsonl"),
                     "not UTF-8 text: byte 0xff at offset"),
        "non-utf8 csv": (_bad_jsonl(d, b"prompt,chosen,rejected\n\xe9,c,r\n", "latin.csv"), "(line 2)"),
        "non-string cell": (_bad_jsonl(d, "\n".join([GOOD, GOOD, json.dumps({"prompt": "p", "chosen": 5,
                                                                              "rejected": "r"})]), "int.jsonl"),
                            "column 'chosen', row 2: expected a string"),
        "missing cell": (_bad_jsonl(d, GOOD + "\n" + json.dumps({"prompt": "p", "chosen": "c"}), "gap.jsonl"),
                         "column 'rejected', row 1: expected a string"),
        "message list": (_bad_jsonl(d, json.dumps({"prompt": [{"role": "user", "content": "hi"}], "chosen": "c",
                                                   "rejected": "r"}), "msgs.jsonl"),
                         "column 'prompt', row 0: expected a string"),
        "null in parquet": (str(null_parquet), "column 'chosen', row 1: expected a string"),
        "int subset": (str(int_subset), "column 'subset', row 0: expected a string"),
        "short csv row": (str(d / "short.csv"), "column 'rejected', row 1: expected a string"),
        "long csv row": (str(d / "long.csv"), "row 0 has 4 fields but the header names 3"),
        "bad json line": (_bad_jsonl(d, GOOD + "\n{oops\n", "syntax.jsonl"), "line 2 is not valid JSON"),
        "json line not an object": (_bad_jsonl(d, "[1, 2]\n", "list.jsonl"), "line 1 is a JSON list"),
        "json scalar": (str(d / "scalar.json"), "expected an array of objects"),
        "json ragged columns": (_bad_jsonl(d, json.dumps({"prompt": ["a", "b"], "chosen": ["c"], "rejected": ["r"]}),
                                           "ragged.json"), "different lengths"),
        "broken parquet": (str(d / "broken.parquet"), "could not be read as a .parquet file"),
    }  # fmt: skip


CASES = [
    "no such file", "folder", "unknown extension", "missing column", "empty jsonl", "header-only csv",
    "empty parquet", "empty json array", "non-utf8", "non-utf8 csv", "non-string cell", "missing cell",
    "message list", "null in parquet", "int subset", "short csv row", "long csv row", "bad json line",
    "json line not an object", "json scalar", "json ragged columns", "broken parquet",
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_usage_line(tmp_path, case):
    path, fragment = _cases(tmp_path)[case]
    with pytest.raises(UsageError) as e:
        rb.read_preference_data(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"eval.preference_data={path}")
    assert fragment in message
    if case not in ("no such file", "folder", "unknown extension"):
        assert isinstance(e.value, DataError)  # the file's contents: a DataError (a UsageError)


def test_cases_cover_the_list():
    assert sorted(CASES) == sorted(_cases_keys())


def _cases_keys():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        return list(_cases(Path(d)))
