"""Data loss (issue 22), through the real `alignctl` command: training never claims a folder that is not an alignctl
run (it holds the user's files), train.overwrite=true and a train.resume=auto restart never remove what alignctl did
not write, and `alignctl eval out_dir=` never writes over another run's results. Each refusal is one line on stderr,
exit 2, and leaves the folder exactly as it was."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from alignctl.run import rundir
from tests import forked
from tests.e2e.test_faults import ALIGNCTL, SMALL, env, snapshot

pytestmark = pytest.mark.slow

# The run every test starts from: one step, W&B offline, evaluated with a reward-KL curve and both exports, then
# `alignctl report` into it: every kind of file alignctl writes into a run directory.
EVAL = ["eval.enabled=true", "eval.num_prompts=2", "eval.samples_per_prompt=2", "eval.max_new_tokens=4",
        "eval.every_steps=1", "eval.curve_prompts=2", "eval.export.formats=[alpaca_eval,arena_hard]",
        "eval.export.max_new_tokens=4"]  # fmt: skip
FULL = [o for o in SMALL if not o.startswith(("eval.enabled", "tracking"))] + EVAL + ["tracking=wandb"]


def alignctl(cache: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return forked.run([*ALIGNCTL, *args], capture_output=True, text=True, env=env(cache), cwd=cwd, timeout=300,
                      check=False)  # the tests read the exit code


def one_line(out: subprocess.CompletedProcess) -> str:
    """The single line a refusal prints: exit 2, no traceback."""
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("ownership") / "run"
    cache = tmp_path_factory.getbasetemp() / "cache"  # the session cache of tests/conftest.py
    out = alignctl(cache, "train", *FULL, f"hydra.run.dir={root}")
    assert out.returncode == 0, out.stderr[-3000:]
    out = alignctl(cache, "report", str(root), "wandb=false")
    assert out.returncode == 0, out.stderr[-3000:]
    return root, cache


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run, for a test to change."""
    root, cache = finished
    copy = tmp_path / "run"
    shutil.copytree(root, copy, symlinks=True)
    return copy, cache


def test_everything_a_run_writes_is_on_alignctls_list(finished):
    root, _ = finished
    names = {p.name for p in root.iterdir()}
    # the kinds of files that must be on the list: tracking, Hydra, eval, curve, exports, report and its figures
    assert {"wandb", ".hydra", "launch.log", "eval.json", "curve.jsonl", "alpaca_eval", "arena_hard", "report.md",
            "frontier.png", rundir.CLAIM_FILE} <= names  # fmt: skip
    assert rundir.foreign_entries(root) == []


def test_training_into_a_folder_of_the_users_is_refused_and_leaves_it_as_it_was(finished, tmp_path):
    _, cache = finished
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "thesis.txt").write_text("x\n")
    out = alignctl(cache, "train", *SMALL, "hydra.run.dir=d", cwd=tmp_path)  # as the issue typed it
    assert one_line(out) == (
        f"alignctl: error: {folder} is not an alignctl run directory and is not empty: it holds thesis.txt; train "
        "into a new or empty folder (another hydra.run.dir=<dir>)"
    )
    # no claim file, no Hydra job log: the folder as the user left it
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.txt"]
    assert (folder / "thesis.txt").read_text() == "x\n"


def test_overwrite_of_a_run_holding_a_users_file_is_refused_and_removes_nothing(run):
    root, cache = run
    (root / "thesis.txt").write_text("x\n")
    before = snapshot(root)
    out = alignctl(cache, "train", *SMALL, f"hydra.run.dir={root}", "train.overwrite=true")
    assert one_line(out) == (
        f"alignctl: error: train.overwrite=true would remove the previous run from {root}, but it also holds what "
        f"alignctl did not write: thesis.txt; nothing was removed: move that out of {root}, or use another "
        "hydra.run.dir"
    )
    assert snapshot(root) == before


def test_a_resume_auto_restart_of_a_run_holding_a_users_file_is_refused_and_removes_nothing(run):
    root, cache = run
    shutil.rmtree(root / "checkpoints")  # a run with no checkpoint: auto would start afresh and clear the directory
    (root / "notes.md").write_text("mine\n")
    before = snapshot(root)
    out = alignctl(cache, "train", *SMALL, "train.max_steps=2", "train.resume=auto", f"hydra.run.dir={root}")
    assert one_line(out) == (
        f"alignctl: error: train.resume=auto (no checkpoint: a fresh start) would remove the previous run from "
        f"{root}, but it also holds what alignctl did not write: notes.md; nothing was removed: move that out of "
        f"{root}, or use another hydra.run.dir"
    )
    assert snapshot(root) == before


def test_overwrite_of_a_run_with_only_alignctls_files_replaces_it(run):
    root, cache = run
    out = alignctl(cache, "train", *SMALL, f"hydra.run.dir={root}", "train.overwrite=true")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"train.overwrite=true: removed the previous run from {root}" in out.stderr
    # the new run only: no W&B run, eval, curve, exports or report of the previous one left
    assert not {"wandb", "eval.json", "curve.jsonl", "alpaca_eval", "report.md"} & {p.name for p in root.iterdir()}
    assert json.loads((root / "run.json").read_text())["status"] == "finished"


def test_a_run_from_before_claim_files_resumes_and_keeps_the_users_file(run):
    root, cache = run
    (root / rundir.CLAIM_FILE).unlink()  # as runs of an alignctl without claim files left them
    (root / "thesis.txt").write_text("x\n")
    out = alignctl(cache, "train", *SMALL, "train.max_steps=2", "train.resume=true", f"hydra.run.dir={root}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from checkpoint-1" in out.stderr
    record = json.loads((root / "run.json").read_text())
    assert (record["status"], record["step"]) == ("finished", 2)
    assert (root / "thesis.txt").read_text() == "x\n"


def test_eval_into_another_runs_directory_is_refused_and_into_its_own_allowed(finished, run):
    mine, _ = finished
    theirs, cache = run  # another run (a copy: its model is theirs/model)
    before = snapshot(theirs)
    for target in ([f"model_dir={mine / 'model'}"], [f"run_dir={mine}"]):
        out = alignctl(cache, "eval", *target, f"out_dir={theirs}", "tracking=none")
        assert one_line(out) == (
            f"alignctl: error: out_dir={theirs} is another run's directory (its model is {theirs / 'model'}, not "
            f"{mine / 'model'}): its results are that run's own; give a new or empty out_dir=<dir> (alignctl eval "
            f"run_dir={theirs} re-evaluates that run)"
        )
        assert snapshot(theirs) == before
    out = alignctl(cache, "eval", f"run_dir={theirs}", "tracking=none", "eval.export.formats=[]")  # into itself
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((theirs / "eval.json").read_text())["model_dir"] == str(theirs / "model")
