"""Iterative DPO (train.rounds > 1) on the tiny task: each round samples pairs from the policy the round before
ended with and trains from it; metrics and curve carry the run's step and the round; a run killed in round 2, or
between rounds, resumes to the same result as an uninterrupted one; the bad inputs are one line, exit 2."""

import json
import shutil
import signal

import pytest
import torch
from safetensors.torch import load_file

from alignctl.cache import RECIPE_FILE
from alignctl.models import files
from tests.conftest import session_cache_dir
from tests.e2e.test_faults import start, train, wait_for
from tests.e2e.test_train_eval import TINY, alignctl

ROUNDS = [*TINY, "tracking=none", "train.rounds=3", "train.max_steps=3", "train.save_steps=1", "eval.every_steps=2",
          "eval.curve_prompts=2", "eval.curve_samples_per_prompt=1"]  # fmt: skip


def weights(path):
    return load_file(path / "model.safetensors")


def same_weights(a, b) -> bool:
    a, b = weights(a), weights(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def outcome(run_dir) -> tuple:
    """What a run ends with: its metrics rows (not the speed figures of the process that logged them), curve and
    eval (without the model path)."""
    rows = [{k: v for k, v in r.items() if not k.startswith("train_") or k == "train_loss"}
            for r in jsonl(run_dir / "metrics.jsonl")]  # fmt: skip
    evaluation = json.loads((run_dir / "eval.json").read_text())
    evaluation.pop("model_dir")
    return rows, jsonl(run_dir / "curve.jsonl"), evaluation


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    root = tmp_path_factory.mktemp("rounds")
    cache = session_cache_dir(tmp_path_factory)
    out = train(cache, *ROUNDS, f"hydra.run.dir={root}")
    assert out.returncode == 0, out.stderr[-3000:]
    return root, cache


def test_three_rounds_each_trained_on_pairs_sampled_from_the_round_before(straight):
    root, cache = straight
    assert sorted(p.name for p in (root / "rounds").iterdir()) == ["round-1", "round-2", "round-3"]
    # rounds 1 and 2 keep their models (the next round's start) and drop their checkpoints; round 3's model is the run's
    for k in (1, 2):
        assert (root / "rounds" / f"round-{k}" / "model" / "config.json").is_file()
        assert not (root / "rounds" / f"round-{k}" / "checkpoints").exists()
    assert (root / "rounds" / "round-3" / "checkpoints" / "checkpoint-3").is_dir()
    models = [root / "rounds" / "round-1" / "model", root / "rounds" / "round-2" / "model", root / "model"]
    assert not same_weights(models[0], models[1]) and not same_weights(models[1], models[2])

    rows = jsonl(root / "metrics.jsonl")
    steps = [(r["step"], r["round"]) for r in rows if "step" in r]
    assert steps == [(s, (s - 1) // 3 + 1) for s in range(1, 10)]  # the run's step, and the round
    summary = rows[-1]
    assert summary["summary"] is True and summary["final_step"] == 9 and [r for r in rows if r.get("summary")] == [summary]
    assert summary["train_loss"] == pytest.approx(sum(r["loss"] for r in rows if "step" in r) / 9, rel=1e-9)
    assert [(p["step"], p["round"]) for p in jsonl(root / "curve.jsonl")] == [
        (0, 1), (2, 1), (3, 1), (4, 2), (6, 2), (8, 3), (9, 3)]  # fmt: skip
    assert json.loads((root / "run.json").read_text())["status"] == "finished"

    # one sampled pair set per round, the later ones sampled from the round before's model (by its weights)
    built = [json.loads(p.read_text()) for p in (cache / "toy_sentiment_pairs").glob(f"*/{RECIPE_FILE}")]
    assert {files.model_fingerprint(m) for m in models[:2]} <= {b["recipe"]["model"] for b in built}


def test_the_reference_stays_the_start_unless_reference_update_is_round(straight, tmp_path):
    """Round 2's first step: against the run's reference the policy (trained in round 1) already differs, so the DPO
    loss is not log 2; with reference_update=round the reference is round 2's start, the policy itself: log 2."""
    root, cache = straight
    first_of_round_2 = next(r for r in jsonl(root / "metrics.jsonl") if r.get("step") == 4)
    assert abs(first_of_round_2["loss"] - torch.log(torch.tensor(2.0)).item()) > 1e-4
    out = train(cache, *ROUNDS, "train.rounds=2", "train.reference_update=round", "eval.enabled=false",
                "eval.every_steps=0", f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    anchored = next(r for r in jsonl(tmp_path / "metrics.jsonl") if r.get("step") == 4)
    assert anchored["loss"] == pytest.approx(0.6931471805599453, abs=1e-6)


@pytest.mark.slow
def test_killed_in_round_2_or_between_rounds_resumes_to_the_same_result(straight, tmp_path):
    root, cache = straight
    killed = tmp_path / "killed"
    proc = start(cache, *ROUNDS, f"hydra.run.dir={killed}")
    wait_for(proc, lambda: (killed / "rounds" / "round-2" / "checkpoints" / "checkpoint-1" / "trainer_state.json")
             .is_file())  # fmt: skip
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    between = tmp_path / "between"  # as if killed after round 1's model was saved, before round 2's first checkpoint
    shutil.copytree(killed, between)
    shutil.rmtree(between / "rounds" / "round-2")
    for run_dir in (killed, between):
        out = train(cache, *ROUNDS, f"hydra.run.dir={run_dir}", "train.resume=true")
        assert out.returncode == 0, out.stderr[-3000:]
        assert "round 1 of 3" not in out.stderr and "round 2 of 3" in out.stderr
        assert same_weights(run_dir / "model", root / "model")
        assert outcome(run_dir) == outcome(root)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["train.rounds=0"], "train.rounds=0"),
        (["objective=kto", "train.rounds=2"], "train.rounds=2 is not supported by objective=kto"),
        (["objective=grpo", "train.rounds=2"], "train.rounds=2 is not supported by objective=grpo"),
        (["objective=reward_model", "train.rounds=2"], "train.rounds=2 is not supported by objective=reward_model"),
        (["train.reference_update=round"], "train.reference_update=round changes nothing with train.rounds=1"),
        (["train.rounds=2", "train.reference_update=always"], "train.reference_update='always' is not valid; choose "
                                                              "one of: start, round"),
        (["objective=simpo", "train.rounds=2", "train.reference_update=round"],
         "objective=simpo uses no reference model"),
        (["train.rounds=2", "distributed=ddp", "distributed.num_processes=2"], "train.rounds=2 trains in one process"),
    ],
)
def test_bad_round_settings_are_one_line(args, line, tmp_path):
    out = alignctl("train", *args, "tracking=none", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 2, out.stderr[-2000:]
    assert line in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_the_steps_of_a_round_cannot_change_on_resume(straight, tmp_path):
    root, cache = straight
    shutil.copytree(root, tmp_path / "run")
    out = train(cache, *[a for a in ROUNDS if not a.startswith("train.max_steps")], "train.max_steps=5",
                "train.resume=true", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert out.returncode == 2
    assert "train.max_steps (3 -> 5: the steps of each of train.rounds=3 rounds cannot change" in out.stderr
