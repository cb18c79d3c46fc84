"""Sweeps through the parallel launchers, end to end: real `alignctl train -m` processes on the smallest task, two
jobs each. Both job directories complete, the sweep's W&B runs share a group, and the same sweep run again into its
hydra.sweep.dir trains nothing (finished jobs say so), resumes jobs that have steps left, and reports a job's bad
input as one line, exit 2; a job stopped by SIGTERM leaves the other to finish."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_faults import ALIGNCTL, SMALL, env, rows

pytestmark = pytest.mark.slow

JOBS = ("0-fdpo-reverse_kl", "1-fdpo-js")


def command(sweep_dir: Path, *args: str, swept: str = "divergence=reverse_kl,js") -> list[str]:
    """A two-job sweep into sweep_dir; args: launcher choices and SMALL's values replaced."""
    given = {a.split("=", 1)[0] for a in (*args, swept)}
    small = [o for o in SMALL if o.split("=", 1)[0] not in given]
    return [*ALIGNCTL, "train", "-m", "objective=fdpo", swept, *small, *args, f"hydra.sweep.dir={sweep_dir}"]


def sweep(cache: Path, sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(sweep_dir, *args), capture_output=True, text=True, env=env(cache),
                          cwd=sweep_dir.parent, timeout=600)  # fmt: skip


def assert_finished(sweep_dir: Path, step: int = 1) -> None:
    assert sorted(d.name for d in sweep_dir.iterdir() if not d.name.startswith(".") and d.is_dir()) == list(JOBS)
    for job in JOBS:
        run_dir = sweep_dir / job
        assert (run_dir / "model" / "model.safetensors").is_file()
        record = json.loads((run_dir / "run.json").read_text())
        assert (record["status"], record["step"]) == ("finished", step)
        assert [r["step"] for r in rows(run_dir) if "step" in r] == list(range(1, step + 1))


def outputs(sweep_dir: Path) -> dict[str, int]:
    """What training writes, with its modification time: unchanged when a run trains nothing."""
    return {str(p): p.stat().st_mtime_ns for job in JOBS for name in ("model", "checkpoints", "metrics.jsonl")
            for p in [sweep_dir / job / name, *(sweep_dir / job / name).rglob("*")]}  # fmt: skip


def submitit_logs(sweep_dir: Path) -> dict[Path, str]:
    """Each submitit job's stderr (the jobs run in their own processes; their logs are under .submitit/)."""
    return {p: p.read_text() for p in (sweep_dir / ".submitit").glob("*/*_log.err")}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "cache"  # the session cache of tests/conftest.py


def test_submitit_local_sweep_finishes_both_jobs_and_a_rerun_trains_nothing(cache, tmp_path):
    sweep_dir = tmp_path / "sweep"  # gpus_per_node=0: submitit hides the GPUs from a CPU job
    out = sweep(cache, sweep_dir, "launcher=submitit_local", "launcher.gpus_per_node=0")
    assert out.returncode == 0, out.stderr[-3000:] + "".join(submitit_logs(sweep_dir).values())[-3000:]
    assert_finished(sweep_dir)
    before, first = outputs(sweep_dir), submitit_logs(sweep_dir)

    again = sweep(cache, sweep_dir, "launcher=submitit_local", "launcher.gpus_per_node=0")
    assert again.returncode == 0, again.stderr[-3000:]
    logs = [log for path, log in submitit_logs(sweep_dir).items() if path not in first]  # the second launch's jobs
    assert len(logs) == 2
    for job in JOBS:
        assert sum(f"run {sweep_dir / job} already finished at step 1; nothing to do" in log for log in logs) == 1
    assert outputs(sweep_dir) == before
    assert_finished(sweep_dir)


def test_local_sweep_runs_jobs_in_parallel_then_skips_resumes_and_reports_bad_input(cache, tmp_path):
    sweep_dir = tmp_path / "sweep"
    out = sweep(cache, sweep_dir, "launcher=local", "launcher.n_jobs=2", "tracking=wandb")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in out.stdout  # Hydra's joblib launcher ran the jobs (its log)
    assert_finished(sweep_dir)
    for job in JOBS:  # one W&B run per job, in one group per sweep, named after its directory
        runs = [r["run"] for r in _run_records(sweep_dir / job)]
        assert [(r["display_name"], r["run_group"]) for r in runs] == [(job, "sweep")]

    before = outputs(sweep_dir)
    again = sweep(cache, sweep_dir, "launcher=local", "launcher.n_jobs=2", "tracking=wandb")
    assert again.returncode == 0, again.stderr[-3000:]
    for job in JOBS:
        assert again.stderr.count(f"run {sweep_dir / job} already finished at step 1; nothing to do") == 1
    assert outputs(sweep_dir) == before

    changed = sweep(cache, sweep_dir, "launcher=local", "objective.beta=0.2")  # not what the jobs were trained with
    lines = changed.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("alignctl: error: ")]
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert len(errors) == 2 and all("objective.beta (0.1 -> 0.2)" in line for line in errors), lines[-5:]
    assert outputs(sweep_dir) == before

    longer = sweep(cache, sweep_dir, "launcher=local", "train.max_steps=2")  # one step left per job: resumed
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert_finished(sweep_dir, step=2)
    for job in JOBS:
        resumes = json.loads((sweep_dir / job / "run.json").read_text())["resumes"]
        assert [r["from_step"] for r in resumes] == [1]


def test_a_parallel_job_stopped_by_sigterm_leaves_the_other_to_finish(cache, tmp_path):
    """joblib SIGKILLs its other workers when a job raises SystemExit: a stopped job must instead end normally, and
    the sweep report it once every job has ended."""
    sweep_dir = tmp_path / "sweep"
    long, short = sweep_dir / "0-fdpo-reverse_kl-max_steps1000", sweep_dir / "1-fdpo-reverse_kl-max_steps40"
    proc = subprocess.Popen(
        command(sweep_dir, "launcher=local", "divergence=reverse_kl", "train.save_steps=10",
                "train.logging_steps=1", swept="train.max_steps=1000,40"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env(cache), cwd=tmp_path,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not (long / "metrics.jsonl").is_file():  # job 0 is training
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    holder = json.loads((long / ".alignctl-claim").read_text())["pid"]  # job 0's loky worker
    os.kill(holder, signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    line = (f"alignctl: job 0 (train.max_steps=1000): stopped by SIGTERM; run the sweep again with "
            f"hydra.sweep.dir={sweep_dir} to resume it")  # fmt: skip
    assert err.strip().splitlines()[-1] == line and "Traceback" not in err
    stopped, done = (json.loads((d / "run.json").read_text()) for d in (long, short))
    assert stopped["status"] == "interrupted" and 0 < stopped["step"] < 1000
    assert (done["status"], done["step"]) == ("finished", 40)


def _run_records(run_dir: Path) -> list[dict]:
    """The "run" records of a run directory's offline W&B files (wandb's own reader)."""
    found = []
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
                             capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
        found += [r for r in map(json.loads, out.stdout.splitlines()) if r["type"] == "run"]
    return found
