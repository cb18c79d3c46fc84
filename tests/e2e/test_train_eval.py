"""End to end on CPU with small sizes: alignctl train -> run directory -> alignctl eval, resume, sweep."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from alignctl.cli import main as cli

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
    return subprocess.run(
        [sys.executable, "-m", "alignctl.cli.main", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One DPO run with W&B offline, checkpoints every 2 steps, 3 steps."""
    root = tmp_path_factory.mktemp("run")
    cache = tmp_path_factory.getbasetemp() / "cache"  # the session cache of tests/conftest.py
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


def test_resume_continues_from_last_checkpoint(run_dir):
    root, cache = run_dir
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
    cache = tmp_path_factory.getbasetemp() / "cache"
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
