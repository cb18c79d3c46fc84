"""Bad inputs through the real CLI (issue 22): each ends in exit code 2 and one line naming the field, the problem and
what to do, with no traceback and no run directory left behind.

Everything knowable from the files the config names is checked when the run is validated, before its directory is
claimed (alignctl.run.launch.validate): a tokenizer past its model's embedding, a reference of another vocabulary,
LoRA targets the model lacks, an empty or non-UTF-8 data file. Those cases run in this process, with model and data
loading forbidden, and stderr must be exactly the error line.

Sampled pairs that all tie can only be found by sampling from the model, once the run has started in its claimed
directory: the line is the run's last on stderr (after the run's own header line), and the directory is removed
again (alignctl.run.launch._job: bad input before any training output)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from alignctl.cli import main as cli
from tests import forked
from tests.data.test_sampled import TRAIN, _model_dir
from tests.models.conftest import VOCAB_SIZE
from tests.models.test_vocab_checks import SHORT_BY, build_models

SMALL = ["train.max_steps=1", "train.batch_size=2", "eval.enabled=false", "tracking=none", "dataset.test_size=1"]
PAIRS = [{"prompt": f"the film {i} was", "chosen": " good.", "rejected": " bad."} for i in range(4)]
LINE = "alignctl: error: "
LATIN1_AT = '{"prompt": "caf'  # what the non-UTF-8 line holds before its byte 0xe9


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Model directories (tests/models/test_vocab_checks.py: llama, short, smaller, ...) and data files."""
    root = tmp_path_factory.mktemp("bad-inputs")
    made = build_models(root / "models")
    pairs = "".join(json.dumps(r) + "\n" for r in PAIRS).encode()
    latin1 = (LATIN1_AT + '\u00e9 was", "chosen": " good.", "rejected": " bad."}\n').encode("latin-1")
    files = {"pairs.jsonl": pairs, "empty.jsonl": b"", "blank_prompts.jsonl": b"\n  \n", "latin1.jsonl": pairs + latin1,
             "header.csv": b"prompt,chosen,rejected\n"}  # fmt: skip
    for name, content in files.items():
        (root / name).write_bytes(content)
        made[name] = root / name
    return made


def llama(inputs, name="llama", data="pairs.jsonl", dataset="preference_file") -> list[str]:
    return ["model=hf", f"model.path={inputs[name]}", f"dataset={dataset}", f"dataset.path={inputs[data]}"]


CASES = {  # id: (overrides from the inputs, fragments of the line)
    "tokenizer-past-embedding": (
        lambda i: llama(i, "short"),
        lambda i: [(f"model.path={i['short']}: its tokenizer has {VOCAB_SIZE} tokens but its input embedding only "
                    f"{VOCAB_SIZE - SHORT_BY} rows"), "model.resize_token_embeddings(len(tokenizer))"],
    ),
    "reference-of-another-vocabulary": (
        lambda i: [*llama(i), f"model.reference={i['smaller']}"],
        lambda i: [f"model.reference={i['smaller']} has another vocabulary than the policy model.path={i['llama']}",
                   f"(300 tokens and 300 embedding rows against {VOCAB_SIZE} and {VOCAB_SIZE})",
                   "leave model.reference unset"],
    ),
    "lora-target-not-in-model": (
        lambda i: [*llama(i), "model.lora.r=4", "model.lora.target_modules=[nonexistent_proj]"],
        lambda i: [(f"model.lora.target_modules=[nonexistent_proj]: 'nonexistent_proj' names no module of "
                    f"model.path={i['llama']}"),
                   "its linear layers are q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head"],
    ),
    "empty-preference-file": (
        lambda i: llama(i, data="empty.jsonl"),
        lambda i: [(f"dataset.path={i['empty.jsonl']} is empty (0 bytes); dataset=preference_file needs at least one "
                    "row: a .jsonl file holds one JSON object per line")],
    ),
    "blank-prompt-file": (
        lambda i: llama(i, data="blank_prompts.jsonl", dataset="prompt_file"),
        lambda i: [f"dataset.path={i['blank_prompts.jsonl']} is empty (only whitespace); dataset=prompt_file"],
    ),
    "header-only-csv-for-sft": (
        lambda i: [*llama(i, data="header.csv"), "objective=sft"],
        lambda i: [f"dataset.path={i['header.csv']} is empty (only a header line)"],
    ),
    "preference-file-not-utf8": (
        lambda i: llama(i, data="latin1.jsonl"),
        lambda i: [(f"dataset.path={i['latin1.jsonl']} is not UTF-8: byte 0xe9 at offset "
                    f"{i['pairs.jsonl'].stat().st_size + len(LATIN1_AT)} (line 5) is not valid UTF-8"),
                   "re-encode it"],
    ),
}  # fmt: skip


@pytest.fixture
def no_weights(monkeypatch):
    from alignctl.models import loading

    def forbidden(*a, **k):
        raise AssertionError("a model's weights were loaded before the run was validated")

    monkeypatch.setattr(loading, "load_causal_lm", forbidden)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_before_the_run_starts(case, inputs, tmp_path, capsys, nothing_loads, no_weights):
    overrides, fragments = CASES[case]
    assert_one_line_before_the_run(overrides(inputs), fragments(inputs), tmp_path / "run", capsys)


def assert_one_line_before_the_run(overrides: list[str], fragments: list[str], run_dir: Path, capsys) -> None:
    """`alignctl train` with these overrides exits 2 with one error line holding every fragment, no traceback, and
    no run directory."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", *overrides, *SMALL, f"hydra.run.dir={run_dir}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith(LINE), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not run_dir.exists()


@pytest.mark.slow
def test_sampled_pairs_that_all_tie_are_one_line_and_leave_no_run_dir(inputs, tmp_path):
    """objective=dpo on a prompt file: the SFT model's samples are scored by a reward that gives every completion
    the same score, so no prompt gives a pair."""
    model = _model_dir(tmp_path / "words-model")  # writes words: its samples are valid, only the reward ties them
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in TRAIN[:6]))
    (tmp_path / "flat.py").write_text("def score(prompts, completions):\n    return [0.0] * len(completions)\n")
    run_dir = tmp_path / "run"
    argv = ["train", "model=hf", f"model.path={model}", "dataset=prompt_file", f"dataset.path={prompts}",
            "dataset.test_size=2", "dataset.max_new_tokens=6", "reward=function",
            f"reward.function={tmp_path / 'flat.py'}:score", "objective=dpo", *SMALL[:-1], f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "ALIGNCTL_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "offline"}
    out = forked.run([sys.executable, "-m", "alignctl.cli.main", *argv], capture_output=True, text=True, env=env,
                     cwd=tmp_path, timeout=600, check=False)  # fmt: skip
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith(LINE)]
    assert len(errors) == 1 and out.stderr.rstrip().endswith(errors[0]), out.stderr
    for fragment in ("prompt_file: none of the 4 train prompts gave pairs: the reward never separated the samples",
                     "in 3 rounds of 4 samples per prompt at most",
                     ("Try a reward that tells these completions apart (now reward=function), more samples per "
                      "prompt (dataset.samples_per_prompt=4")):  # fmt: skip
        assert fragment in errors[0], (fragment, errors[0])
    assert not run_dir.exists()
