"""How a run that starts and then fails ends (issue 22): real `alignctl train` processes on the tiny task that
diverge, skip non-finite steps, hit a file size limit while checkpointing, or run a reward function that raises.
Each ends in one line with the resume command, run.json says how the run ended, the last good checkpoint is kept,
and metrics.jsonl stays strict JSON. Piped output is plain lines, not a live panel's frames."""

import json
import math
import resource
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests import forked
from tests.conftest import session_cache_dir
from tests.e2e.test_faults import ALIGNCTL, env, train
from tests.e2e.test_train_eval import TINY

pytestmark = pytest.mark.slow

QUICK = [*TINY, "tracking=none", "eval.enabled=false"]
BOX = set("╭╮╰╯│─━┃")  # a rich panel's borders


@pytest.fixture
def cache(tmp_path_factory):
    return session_cache_dir(tmp_path_factory)  # the session cache of tests/conftest.py


def strict_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl read by a strict parser: NaN / Infinity tokens are not JSON."""

    def refuse(token):
        raise AssertionError(f"metrics.jsonl holds {token}, which is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def finite(path: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_file(path).values())


def test_a_diverging_run_stops_at_the_first_nonfinite_gradient_and_keeps_its_good_checkpoint(cache, tmp_path):
    run_dir = tmp_path / "run"
    out = train(cache, *QUICK, "train.learning_rate=1e3", "train.max_steps=8", "train.save_steps=2",
                f"hydra.run.dir={run_dir}")  # fmt: skip
    assert out.returncode == 1, out.stderr[-2000:]
    line = last_line(out.stderr)
    assert line.startswith(f"alignctl: run {run_dir} diverged: non-finite gradients at step ") and "Traceback" not in out.stderr
    step = int(line.split("at step ")[1].split()[0])
    kept = step - 1 - (step - 1) % 2  # the last checkpoint before the step that went non-finite
    assert f"checkpoint-{kept} saved" in line and "train.resume=true" in line
    rec = record(run_dir)
    assert rec["status"] == "diverged" and rec["step"] == kept and rec["reason"].startswith("non-finite gradients")
    assert finite(run_dir / "checkpoints" / f"checkpoint-{kept}" / "model.safetensors")
    assert not (run_dir / "model").exists()  # nothing trained on NaN was saved as the final model
    assert [r["step"] for r in strict_rows(run_dir)] == list(range(1, step))


def test_skip_step_drops_nonfinite_updates_and_finishes(cache, tmp_path):
    run_dir = tmp_path / "run"
    out = train(cache, *QUICK, "train.learning_rate=1e3", "train.max_steps=6", "train.on_nonfinite=skip_step",
                f"hydra.run.dir={run_dir}")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert record(run_dir)["status"] == "finished"
    rows = strict_rows(run_dir)
    skipped = [r["skipped_steps"] for r in rows if "skipped_steps" in r]
    assert skipped[-1] > 0 and skipped == sorted(skipped)
    assert any("grad_norm" in r.get("nonfinite", []) and r["grad_norm"] is None for r in rows)  # null + flag
    assert finite(run_dir / "model" / "model.safetensors")


def test_eval_refuses_nonfinite_weights_in_one_line(cache, tmp_path):
    run_dir = tmp_path / "run"
    assert train(cache, *QUICK, "train.max_steps=1", f"hydra.run.dir={run_dir}").returncode == 0
    weights = run_dir / "model" / "model.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name][0] = float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    out = forked.run([*ALIGNCTL, "eval", f"run_dir={run_dir}"], capture_output=True, text=True, env=env(cache),
                     timeout=300)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"alignctl: error: the model at {run_dir / 'model'} has non-finite weights (first in {name}); it cannot be "
        "evaluated: evaluate an earlier checkpoint, or retrain (train.on_nonfinite=stop, the default, stops a run at "
        "its first non-finite gradient)"
    ]
    assert not (run_dir / "eval.json").exists()


def test_a_checkpoint_that_cannot_be_written_leaves_the_previous_one_to_resume_from(cache, tmp_path):
    """The file size limit (ulimit -f) below the optimizer state's size: the second checkpoint's write fails as on a
    full disk. Its partial folder is removed, checkpoint-2 stays, and the line says what space a checkpoint takes."""
    run_dir = tmp_path / "run"
    assert train(cache, *QUICK, "train.max_steps=2", "train.save_steps=2", f"hydra.run.dir={run_dir}").returncode == 0
    optimizer = (run_dir / "checkpoints" / "checkpoint-2" / "optimizer.pt").stat().st_size
    limit = optimizer * 3 // 4  # the model's weights (half the optimizer's moments) fit; the moments do not

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = forked.run([*ALIGNCTL, "train", *QUICK, "train.max_steps=4", "train.save_steps=2", "train.resume=true",
                          f"hydra.run.dir={run_dir}"], capture_output=True, text=True, env=env(cache), timeout=300,
                     preexec_fn=limited)  # fmt: skip
    assert out.returncode == 1, out.stderr[-2000:]
    line = last_line(out.stderr)
    assert line.startswith(f"alignctl: run {run_dir} failed: could not write checkpoint-4 (")
    assert "a checkpoint takes " in line and "(ulimit -f)" in line and "checkpoint-2 saved" in line
    assert "train.resume=true" in line and "Traceback" not in out.stderr
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]
    assert record(run_dir)["status"] == "failed"
    again = train(cache, *QUICK, "train.max_steps=4", "train.save_steps=2", "train.resume=true",
                  f"hydra.run.dir={run_dir}")  # fmt: skip
    assert again.returncode == 0 and record(run_dir)["status"] == "finished" and "resumed from checkpoint-2" in again.stderr


REWARD = '''
import json, pathlib

def score(prompts, completions):
    calls = pathlib.Path(__file__).with_suffix(".calls")
    n = int(calls.read_text()) + 1 if calls.exists() else 1
    calls.write_text(str(n))
    if n == 2:
        return helper(completions)
    return [float(len(c) % 3) for c in completions]

def helper(completions):
    raise ValueError("no score for " + repr(completions[0][:10]))
'''


def test_a_reward_function_that_raises_names_itself_shows_its_own_frames_and_marks_the_run(cache, tmp_path):
    module = tmp_path / "my_reward.py"
    module.write_text(REWARD)
    run_dir = tmp_path / "run"
    out = train(cache, *QUICK, "objective=grpo", "train.max_steps=3", "train.save_steps=1", "train.batch_size=4",
                "train.num_generations=2", "reward=function", f"reward.function={module}:score",
                f"hydra.run.dir={run_dir}")  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]
    err = out.stderr.strip().splitlines()
    at = next(i for i, line in enumerate(err) if line.startswith("alignctl: run "))
    assert err[at].startswith(f"alignctl: run {run_dir} failed: reward.function={module}:score raised ValueError: "
                              "no score for ")  # fmt: skip
    assert "last checkpoint: checkpoint-1" in err[at] and "train.resume=true" in err[at]
    frames = "\n".join(err[at + 1 :])  # after the line: the user's traceback, from their function down
    assert frames.startswith("Traceback") and f'File "{module}", line' in frames and "in helper" in frames
    assert "alignctl" not in frames.replace(str(tmp_path), "") and "trl" not in frames
    rec = record(run_dir)
    assert rec["status"] == "failed" and rec["reason"].startswith(f"reward.function={module}:score raised ValueError")


def test_piped_output_is_plain_lines(cache, tmp_path):
    run_dir = tmp_path / "run"
    out = train(cache, *QUICK, "train.max_steps=3", f"hydra.run.dir={run_dir}")  # stdout and stderr are pipes
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert not BOX & set(text), text[-2000:]
    steps = [line for line in out.stdout.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["1/3", "2/3", "3/3"] and all("loss=" in s for s in steps)
    assert any(line.startswith("done  ") and "train_loss=" in line for line in out.stdout.splitlines())
    assert not math.isnan(float(steps[0].split("loss=")[1].split()[0]))
