"""Nothing lost, nothing silent: real `alignctl train` processes on the tiny task, killed (-9), stopped (SIGTERM),
resumed, re-run into a finished run's directory, and started four at once; W&B offline.

A resumed run must end exactly where an uninterrupted one does: final weights, metrics.jsonl, eval.json and the W&B
history (read from the offline .wandb files with wandb's own reader, `wandb leet inspect --json`; a resumed run's
file starts with a branch point, the step `wandb sync` rewinds the run to, so the history is the first file's rows up
to it followed by the second file's rows)."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignctl.run import tracking
from tests import forked
from tests.conftest import session_cache_dir
from tests.e2e.test_train_eval import TINY

pytestmark = pytest.mark.slow

RUN = [*TINY, "train.max_steps=10", "train.save_steps=3"]  # checkpoints at steps 3, 6, 9 and 10
ALIGNCTL = [sys.executable, "-m", "alignctl.cli.main"]


def env(cache: Path) -> dict:
    return {**os.environ, "ALIGNCTL_CACHE_DIR": str(cache), "WANDB_MODE": "offline"}


def train(cache: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return forked.run([*ALIGNCTL, "train", *args], capture_output=True, text=True, env=env(cache), cwd=cwd,
                      timeout=300)  # fmt: skip


def start(cache: Path, *args: str) -> subprocess.Popen:
    return forked.Popen([*ALIGNCTL, "train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        env=env(cache))  # fmt: skip


def wait_for(proc: subprocess.Popen, ready, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended first: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]


def wandb_history(root: Path) -> tuple[set[str], dict[int, dict]]:
    """The run ids of the run directory's offline W&B files and the history `wandb sync` makes of them."""
    paths = sorted((root / "wandb").glob("offline-run-*/run-*.wandb"))  # named by start time
    readers = [subprocess.Popen([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
                                stdout=subprocess.PIPE, text=True) for path in paths]  # fmt: skip
    ids, history = set(), {}
    for reader in readers:
        out, _ = reader.communicate(timeout=120)
        assert reader.returncode == 0
        for record in map(json.loads, out.splitlines()):
            if record["type"] == "run":
                ids.add(record["run"]["run_id"])
                if "branch_point" in record["run"]:  # a resume: rewound to this step
                    point = record["run"]["branch_point"]["value"]
                    history = {step: row for step, row in history.items() if step <= point}
            elif record["type"] == "history":
                item = record["history"]["item"]
                history[item["_step"]] = {k: v for k, v in item.items() if k not in ("_runtime", "_timestamp")}
    return ids, history


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def assert_same_result(got: Path, finished) -> None:
    want, _, want_history = finished
    a, b = load_file(got / "model" / "model.safetensors"), load_file(want / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    got_rows, want_rows = rows(got), rows(want)
    assert [r["step"] for r in got_rows if "step" in r] == list(range(1, 11))  # every step once
    assert [r for r in got_rows if "step" in r] == [r for r in want_rows if "step" in r]
    summary = got_rows[-1]  # the summary, once, last, over the whole run
    assert summary["summary"] is True and summary["final_step"] == 10 and "step" not in summary
    assert [r for r in got_rows if r.get("summary")] == [summary]
    assert summary["train_loss"] == pytest.approx(want_rows[-1]["train_loss"], rel=1e-9)
    evals = [json.loads((d / "eval.json").read_text()) for d in (got, want)]
    for e in evals:
        e.pop("model_dir")
    assert evals[0] == evals[1]
    (run_id,), history = wandb_history(got)  # one W&B run, also across the resume
    assert run_id == json.loads((got / "run.json").read_text())["wandb_run_id"]
    assert list(history) == list(range(1, 11))
    assert history == want_history
    assert json.loads((got / "run.json").read_text())["status"] == "finished"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted run started with train.resume=auto in an empty directory (auto starts it afresh)."""
    root = tmp_path_factory.mktemp("finished")
    cache = session_cache_dir(tmp_path_factory)  # the session cache of tests/conftest.py
    out = train(cache, *RUN, "train.resume=auto", f"hydra.run.dir={root}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed" not in out.stderr
    (_,), history = wandb_history(root)
    assert list(history) == list(range(1, 11))  # one W&B row per step: none for Trainer's summary
    return root, cache, history


def test_kill_9_after_the_first_checkpoint_then_resume_matches_an_uninterrupted_run(finished, tmp_path):
    cache = finished[1]
    proc = start(cache, *RUN, f"hydra.run.dir={tmp_path}")
    wait_for(proc, lambda: (tmp_path / "checkpoints" / "checkpoint-3" / "trainer_state.json").is_file())
    proc.send_signal(signal.SIGSTOP)  # frozen just after the checkpoint; W&B's own process flushes its file
    time.sleep(tracking.TRANSACTION_LOG_FLUSH_S + 0.5)
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    out = train(cache, *RUN, f"hydra.run.dir={tmp_path}", "train.resume=true")
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"resumed from checkpoint-(3|6|9)\b", out.stderr)
    assert_same_result(tmp_path, finished)


def test_sigterm_checkpoints_prints_the_resume_command_and_exits_143(finished, tmp_path):
    cache = finished[1]
    proc = start(cache, *RUN, f"hydra.run.dir={tmp_path}")
    wait_for(proc, lambda: (tmp_path / "metrics.jsonl").is_file() and len(rows(tmp_path)) >= 2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("alignctl:")]
    match = re.fullmatch(r"alignctl: stopped by SIGTERM \((checkpoint-(\d+) saved)\); resume with: (.*)", line)
    assert match, line
    step = int(match[2])
    assert 2 <= step < 10 and (tmp_path / "checkpoints" / f"checkpoint-{step}").is_dir()
    assert not (tmp_path / "model").exists()  # stopped, not finished
    command = shlex.split(match[3])
    assert command == ["alignctl", "train", *RUN, f"hydra.run.dir={tmp_path}", "train.resume=true"]
    out = train(cache, *command[2:])  # exactly what the line says
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resumed from checkpoint-{step}" in out.stderr
    assert_same_result(tmp_path, finished)


def test_a_new_run_into_a_finished_runs_directory_is_refused(finished):
    root, cache, _ = finished
    before = snapshot(root)
    out = train(cache, *RUN, f"hydra.run.dir={root}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"alignctl: error: {root} already holds another run; use train.resume=true (continue it), "
        "train.overwrite=true (replace it), or another hydra.run.dir"
    )
    assert snapshot(root) == before


@pytest.mark.parametrize("resume", ["true", "auto"])
def test_resuming_a_finished_run_does_nothing(finished, resume):
    root, cache, _ = finished
    before = snapshot(root)
    out = train(cache, *RUN, f"hydra.run.dir={root}", f"train.resume={resume}", "eval.num_prompts=2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.strip().splitlines() == [f"run {root} already finished at step 10; nothing to do"]
    assert snapshot(root) == before


def test_resuming_with_another_objective_names_the_keys_that_differ(finished):
    root, cache, _ = finished
    before = snapshot(root)
    out = train(cache, *RUN, f"hydra.run.dir={root}", "train.resume=true", "objective=ipo")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"alignctl: error: train.resume=true: {root} was trained with another config: ")
    assert 'objective.name ("dpo" -> "ipo")' in line
    assert snapshot(root) == before


# A smaller task than TINY: built from scratch (empty cache) by four processes at once.
SMALL = [
    "dataset.corpus_size=300", "dataset.num_train_prompts=8", "dataset.num_test_prompts=4",
    "dataset.max_new_tokens=8", "model.vocab_size=512", "model.hidden_size=32", "model.num_layers=1",
    "model.num_heads=2", "model.intermediate_size=64", "model.max_position_embeddings=64",
    "model.pretrain_steps=20", "model.pretrain_batch_size=16", "model.pretrain_lr=0.01", "train.batch_size=4",
    "train.max_steps=1", "train.num_threads=1", "eval.enabled=false", "tracking=none",
]  # fmt: skip


def test_four_runs_started_at_once_claim_four_directories(tmp_path):
    """Hydra's ${now:} names collide for runs started together (forced here: one name per year); each run claims
    its own directory (<name>, <name>-2, ...) and the empty cache builds the base model once (its file lock)."""
    cache = tmp_path / "cache"
    procs = [
        forked.Popen([*ALIGNCTL, "train", *SMALL, "hydra.run.dir=runs/${now:%Y}-race"], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True, env=env(cache), cwd=tmp_path)  # fmt: skip
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in outs]
    dirs = sorted((tmp_path / "runs").iterdir())
    base = dirs[0].name
    assert [d.name for d in dirs] == [base, f"{base}-2", f"{base}-3", f"{base}-4"]
    for run_dir in dirs:
        assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
        assert [r["step"] for r in rows(run_dir) if "step" in r] == [1]
        assert (run_dir / "model" / "model.safetensors").is_file() and (run_dir / "config.yaml").is_file()
        hydra_yaml = (run_dir / ".hydra" / "hydra.yaml").read_text()
        assert f"output_dir: {run_dir.resolve()}\n" in hydra_yaml
    assert sum("base model built" in err for _, err in outs) == 1
