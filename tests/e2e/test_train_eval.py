"""End to end on CPU with small sizes: alignctl train -> run directory -> alignctl eval, resume, sweep."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from alignctl.cli import main as cli
from tests import forked
from tests.conftest import session_cache_dir

pytestmark = pytest.mark.slow

# The same small task as tests/data (built once per session in the shared cache), a few steps of training.
TINY = [
    "dataset.corpus_size=2000",
    "dataset.num_train_prompts=24",
    "dataset.num_test_prompts=8",
    "dataset.max_new_tokens=16",
    "model.hidden_size=64",
    "model.num_layers=2",
    "model.num_heads=2",
    "model.intermediate_size=128",
    "model.max_position_embeddings=64",
    "model.pretrain_steps=120",
    "model.pretrain_batch_size=16",
    "model.pretrain_lr=0.01",
    "train.batch_size=4",
    "train.logging_steps=1",
    "train.num_threads=1",
    "eval.num_prompts=4",
    "eval.samples_per_prompt=2",
    "eval.max_new_tokens=8",
]
EVAL_KEYS = {
    "reward_mean", "reward_std", "win_rate_vs_reference", "kl_to_reference", "kl_to_reference_tokenwise",
    "entropy_per_token", "distinct_1", "distinct_2", "self_bleu", "preference_accuracy", "ece",
}


def alignctl(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return forked.run(
        [sys.executable, "-m", "alignctl.cli.main", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One DPO run with W&B offline, checkpoints every 2 steps, 3 steps."""
    root = tmp_path_factory.mktemp("run")
    cache = session_cache_dir(tmp_path_factory)  # the session cache of tests/conftest.py
    out = alignctl(
        "train", *TINY, "train.max_steps=3", "train.save_steps=2", f"hydra.run.dir={root}",
        env_extra={"ALIGNCTL_CACHE_DIR": str(cache), "WANDB_MODE": "offline"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return root, cache


def test_run_directory_holds_everything(run_dir):
    root, _ = run_dir
    for name in ("config.yaml", "run.json", "metrics.jsonl", "eval.json", "eval_samples.jsonl", "reliability.png"):
        assert (root / name).is_file(), name
    assert (root / ".hydra" / "overrides.yaml").is_file()
    assert (root / "model" / "model.safetensors").is_file()
    assert (root / "model" / "tokenizer.json").is_file()
    assert any((root / "wandb").glob("offline-run-*")), "no offline W&B run"
    run = json.loads((root / "run.json").read_text())
    assert run["seed"] == 0 and run["libraries"]["trl"] and run["git_commit"]
    steps = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    losses = [s for s in steps if "loss" in s]
    assert [s["step"] for s in losses] == [1, 2, 3]
    assert all(isinstance(s["loss"], float) for s in losses)
    metrics = json.loads((root / "eval.json").read_text())
    assert EVAL_KEYS <= metrics.keys()
    assert -1.0 <= metrics["reward_mean"] <= 1.0 and 0.0 <= metrics["ece"] <= 1.0


def test_eval_is_reproducible(run_dir, monkeypatch, capsys):
    """Re-evaluating the run directory with the same seed reproduces eval.json."""
    root, cache = run_dir
    monkeypatch.setenv("ALIGNCTL_CACHE_DIR", str(cache))
    first = json.loads((root / "eval.json").read_text())
    assert cli.main(["eval", f"run_dir={root}"]) == 0
    again = json.loads((root / "eval.json").read_text())
    for key in EVAL_KEYS:
        assert again[key] == pytest.approx(first[key], rel=1e-5, abs=1e-6), key


def test_eval_of_a_run_with_truncated_weights_is_one_line(run_dir, monkeypatch, tmp_path, capsys):
    root, cache = run_dir
    monkeypatch.setenv("ALIGNCTL_CACHE_DIR", str(cache))
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    with (broken / "model" / "model.safetensors").open("r+b") as f:
        f.truncate(100)
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", f"run_dir={broken}", f"out_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert f"model {broken / 'model'} cannot be read" in err and "truncated or corrupt" in err


def test_eval_of_a_model_dir_writes_outside_it(run_dir, monkeypatch, tmp_path):
    """`eval model_dir=...` never writes into the model directory: evals/<model>-<time>/ or out_dir=."""
    root, cache = run_dir
    monkeypatch.setenv("ALIGNCTL_CACHE_DIR", str(cache))
    monkeypatch.chdir(tmp_path)
    model = root / "model"
    before = sorted(p.name for p in model.iterdir())
    args = ["eval", f"model_dir={model}", f"eval.reference={model}", *TINY[:12]]  # the run's data and model sizes
    assert cli.main(args) == 0
    (default,) = (tmp_path / "evals").iterdir()
    assert default.name.startswith("model-") and EVAL_KEYS <= json.loads((default / "eval.json").read_text()).keys()
    assert cli.main([*args, f"out_dir={tmp_path / 'chosen'}"]) == 0
    assert json.loads((tmp_path / "chosen" / "eval.json").read_text())["kl_to_reference"] == pytest.approx(0.0, abs=1e-6)
    assert sorted(p.name for p in model.iterdir()) == before


def test_resume_continues_from_last_checkpoint(run_dir, tmp_path):
    """Resumes a copy: the module's run directory is shared by the tests around this one, in any order."""
    shared, cache = run_dir
    root = tmp_path / "run"
    shutil.copytree(shared, root)
    out = alignctl(
        "train", *TINY, "train.max_steps=4", "train.save_steps=2", "train.resume=true", "eval.enabled=false",
        "tracking=none", f"hydra.run.dir={root}", env_extra={"ALIGNCTL_CACHE_DIR": str(cache)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    # the first run ended with a checkpoint at step 3; the resumed run logs only steps after it
    assert [s["step"] for s in lines if "loss" in s] == [1, 2, 3, 4]
    assert "resumed from checkpoint-3" in out.stderr


def test_multirun_makes_one_directory_per_job(run_dir, tmp_path):
    _, cache = run_dir
    out = alignctl(
        "train", "-m", "objective=fdpo", "divergence=reverse_kl,js", *TINY, "train.max_steps=1",
        "eval.enabled=false", "tracking=none", f"hydra.sweep.dir={tmp_path}",
        env_extra={"ALIGNCTL_CACHE_DIR": str(cache)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if (p / "config.yaml").is_file())
    assert len(jobs) == 2
    assert [p.name for p in jobs] == ["0-fdpo-reverse_kl", "1-fdpo-js"]
    for job in jobs:
        assert (job / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("name", ["adpo", "d2o"])
def test_multi_completion_objectives_train_and_evaluate(name, tmp_path, tmp_path_factory):
    """ADPO (ranked candidates) and D2O (negative + self-samples) through CandidateTrainer, evaluated on pairs."""
    cache = session_cache_dir(tmp_path_factory)
    out = alignctl(
        "train", f"objective={name}", *TINY, "train.max_steps=2", "eval.enabled=true", "tracking=none",
        f"hydra.run.dir={tmp_path}", env_extra={"ALIGNCTL_CACHE_DIR": str(cache)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    steps = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s] == [1, 2]
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert EVAL_KEYS <= metrics.keys() and metrics["num_pairs"] >= 1
    assert 0.0 <= metrics["preference_accuracy"] <= 1.0 and 0.0 <= metrics["ece"] <= 1.0


def _read_samples(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eval_like_a_paper(run_dir, monkeypatch, tmp_path):
    """alignctl eval of a run with an hf judge, an lm-eval task on a local YAML, a reward benchmark file and both
    exports: every number lands in eval.json, consistent with the samples it was computed from."""
    from pathlib import Path

    root, cache = run_dir
    monkeypatch.setenv("ALIGNCTL_CACHE_DIR", str(cache))
    tasks = Path(__file__).resolve().parents[1] / "eval" / "lm_eval_tasks"
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the task YAML's data path is relative to the repo
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"prompt": "The film", "chosen": " was great.", "rejected": " was bad.",
                                         "subset": s}) + "\n" for s in ("a", "a", "b")))  # fmt: skip
    out = tmp_path / "paper"
    assert cli.main(["eval", f"run_dir={root}", f"out_dir={out}", "tracking=none", "eval.num_prompts=2", "eval.judge.kind=hf",
                     f"eval.judge.path={root / 'model'}", "eval.lm_eval.tasks=[alignctl_toy_mc]",
                     f"eval.lm_eval.include_path={tasks}", "eval.lm_eval.limit=4", f"eval.preference_data={bench}",
                     "eval.export.formats=[alpaca_eval,arena_hard]", "eval.export.max_new_tokens=4"]) == 0  # fmt: skip
    metrics = json.loads((out / "eval.json").read_text())
    rows = _read_samples(out / "eval_samples.jsonl")
    assert metrics["length_chars_mean"] == pytest.approx(sum(len(r["completion"]) for r in rows) / len(rows))
    assert metrics["reference_length_chars_mean"] == pytest.approx(
        sum(len(r["reference_completion"]) for r in rows) / len(rows))
    assert metrics["length_ratio"] == pytest.approx(metrics["length_tokens_mean"] / metrics["reference_length_tokens_mean"])
    judged = [r["judge_winner"] for r in rows if r["judge_winner"] is not None]
    wins = sum(w == "policy" for w in judged) + 0.5 * sum(w == "tie" for w in judged)
    assert metrics["judge_comparisons"] == len(judged) and metrics["judge_win_rate"] == pytest.approx(wins / len(judged))
    assert 0.0 <= metrics["judge_lc_win_rate"] <= 1.0 and all(r["judge_policy_first"] for r in rows)
    assert 0.0 <= metrics["lm_eval/alignctl_toy_mc/acc"] <= 1.0
    assert 0.0 <= metrics["reference_lm_eval/alignctl_toy_mc/acc"] <= 1.0
    assert metrics["preference_data_pairs"] == 3 and {"preference_data_accuracy/a", "preference_data_accuracy/b"} <= set(metrics)
    alpaca = json.loads((out / "alpaca_eval" / "model_outputs.json").read_text())
    assert len(alpaca) == 2 and {"instruction", "output", "generator"} <= set(alpaca[0])
    arena = (out / "arena_hard" / f"{out.name}.jsonl").read_text().splitlines()
    assert len(arena) == 2 and json.loads(arena[0])["messages"][-1]["content"]["answer"] is not None


def test_an_openai_compatible_judge_through_the_cli_is_cached(run_dir, monkeypatch, tmp_path):
    """The judge endpoint is a real HTTP server on 127.0.0.1 answering from the run's model: the second eval of the
    same samples asks it nothing (every verdict is in the on-disk cache) and reports the same win rate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.eval.judge_server import JudgeServer

    root, cache = run_dir
    monkeypatch.setenv("ALIGNCTL_CACHE_DIR", str(cache))
    monkeypatch.setenv("ALIGNCTL_TEST_JUDGE_KEY", "local")
    model = AutoModelForCausalLM.from_pretrained(root / "model").eval()
    with JudgeServer(model, AutoTokenizer.from_pretrained(root / "model")) as server:
        args = ["eval", f"run_dir={root}", "tracking=none", "eval.num_prompts=2", "eval.judge.kind=openai",
                f"eval.judge.base_url={server.url}",
                f"eval.judge.model={server.model_name}", "eval.judge.api_key_env=ALIGNCTL_TEST_JUDGE_KEY"]  # fmt: skip
        assert cli.main([*args, f"out_dir={tmp_path / 'first'}"]) == 0
        asked = server.requests["chat"]
        server.reset_counts()
        assert cli.main([*args, f"out_dir={tmp_path / 'second'}"]) == 0
        assert asked > 0 and server.requests["chat"] == 0
    first, second = (json.loads((tmp_path / d / "eval.json").read_text()) for d in ("first", "second"))
    assert first["judge"] == "openai" and first["judge_win_rate"] == second["judge_win_rate"]
    assert first["judge_comparisons"] + first["judge_unparseable"] == first["num_prompts"] * first["samples_per_prompt"]
