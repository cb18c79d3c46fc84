"""Which folders are alignctl's and what it may remove there (alignctl.run.rundir, issue 22): a folder that is not
an alignctl run is never claimed, nothing but alignctl's own entries is ever removed, and eval never writes over
another run's or another model's results. The end-to-end view, through the CLI: tests/e2e/test_run_dir_ownership.py."""

import json
from pathlib import Path

import pytest

from alignctl.config import compose
from alignctl.errors import UsageError
from alignctl.run import rundir


def train_cfg(*overrides: str):
    return compose.compose_one(list(overrides)).train


def make_run(path: Path, *, claimed: bool = True) -> Path:
    """A finished run's directory as training leaves it (without weights: none of this reads them)."""
    path.mkdir(parents=True, exist_ok=True)
    compose.save_resolved(compose.compose_one([]), path)
    record = {"command": ["alignctl", "train"], "status": "finished", "step": 1}
    (path / rundir.RUN_RECORD).write_text(json.dumps(record))
    (path / "metrics.jsonl").write_text('{"step": 1, "loss": 0.69}\n')
    (path / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (path / "model").mkdir()
    (path / "model" / "config.json").write_text("{}")
    (path / ".hydra").mkdir()
    (path / "launch.log").write_text("")
    if claimed:
        (path / rundir.CLAIM_FILE).write_text("")
    return path


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_a_folder_with_a_users_file_is_refused_and_left_as_it_was(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "thesis.txt").write_text("x\n")
    with pytest.raises(UsageError) as e:
        rundir.claim_run_dir(folder, train_cfg("train.overwrite=true"), auto_named=False)
    assert str(e.value) == (
        f"{folder} is not an alignctl run directory and is not empty: it holds thesis.txt; train into a new or "
        "empty folder (another hydra.run.dir=<dir>)"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.txt"]  # no claim file
    assert (folder / "thesis.txt").read_text() == "x\n"


def test_the_refusal_names_three_entries_and_counts_the_rest(tmp_path):
    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "data").mkdir()
    with pytest.raises(UsageError, match=r"it holds a\.txt, b\.txt, c\.txt and 2 more; "):
        rundir.claim_run_dir(tmp_path, train_cfg(), auto_named=False, dir_key="hydra.sweep.dir")
    assert rundir.foreign_entries(tmp_path)[-1] == "data/"  # a folder is shown as one


def test_a_users_config_yaml_alone_is_not_a_run(tmp_path):
    # a name alignctl writes counts as alignctl's only in a folder that holds a run
    (tmp_path / "config.yaml").write_text("learning_rate: 0.1\n")
    with pytest.raises(UsageError, match=r"it holds config\.yaml;"):
        rundir.claim_run_dir(tmp_path, train_cfg("train.overwrite=true"), auto_named=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_a_stale_claim_file_does_not_make_a_users_folder_alignctls(tmp_path):
    # an older alignctl created the claim file in any folder; with no run in it, the folder is still the user's
    (tmp_path / rundir.CLAIM_FILE).write_text("")
    (tmp_path / "thesis.txt").write_text("x\n")
    with pytest.raises(UsageError, match="is not an alignctl run directory"):
        rundir.claim_run_dir(tmp_path, train_cfg(), auto_named=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.txt"]


def test_empty_new_and_bookkeeping_only_folders_are_claimed_fresh(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "logs_only").mkdir()
    (tmp_path / "logs_only" / "launch.log").write_text("")  # what Hydra opens before the job runs
    (tmp_path / "logs_only" / ".hydra").mkdir()
    for name in ("empty", "new", "logs_only"):
        claim = rundir.claim_run_dir(tmp_path / name, train_cfg(), auto_named=False)
        assert claim.fresh and (tmp_path / name / rundir.CLAIM_FILE).is_file()
        claim.release(keep=False)


def test_an_automatic_name_that_is_a_users_folder_moves_on_to_the_next_name(tmp_path):
    taken = tmp_path / "20261201-120000-dpo"
    taken.mkdir()
    (taken / "thesis.txt").write_text("x\n")
    claim = rundir.claim_run_dir(taken, train_cfg(), auto_named=True)
    assert claim.path == tmp_path / "20261201-120000-dpo-2" and claim.fresh
    assert sorted(p.name for p in taken.iterdir()) == ["thesis.txt"]
    claim.release(keep=False)


def test_a_run_from_before_claim_files_is_still_resumable_with_a_foreign_file_in_it(tmp_path):
    run = make_run(tmp_path / "old", claimed=False)
    (run / "notes.md").write_text("mine\n")
    claim = rundir.claim_run_dir(run, train_cfg("train.resume=true"), auto_named=False)
    assert claim.locked and not claim.fresh  # continued: resuming removes nothing
    claim.release(keep=True)
    assert (run / "notes.md").read_text() == "mine\n"


def test_overwrite_of_a_run_holding_a_foreign_file_removes_nothing(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "thesis.txt").write_text("x\n")
    before = snapshot(run)
    claim = rundir.claim_run_dir(run, train_cfg("train.overwrite=true"), auto_named=False)
    with pytest.raises(UsageError) as e:
        rundir.clear_run_dir(run, reason="train.overwrite=true")
    claim.release(keep=False)
    assert str(e.value) == (
        f"train.overwrite=true would remove the previous run from {run}, but it also holds what alignctl did not "
        f"write: thesis.txt; nothing was removed: move that out of {run}, or use another hydra.run.dir"
    )
    assert snapshot(run) == before


def test_clearing_removes_every_entry_alignctl_writes_and_keeps_the_claim(tmp_path):
    run = make_run(tmp_path / "run")
    for folder in ("wandb", "alpaca_eval", "arena_hard"):
        (run / folder).mkdir()
    for name in ("eval.json", "eval_samples.jsonl", "reliability.json", "reliability.png", "curve.jsonl", "report.md",
                 "report.csv", "frontier.png", "frontier-toy_sentiment-tiny.png", "pass_at_k.png"):  # fmt: skip
        (run / name).write_text("")
    removed = rundir.clear_run_dir(run)
    assert sorted(p.name for p in run.iterdir()) == [rundir.CLAIM_FILE]
    assert removed == 20


def test_a_discarded_new_run_keeps_what_the_user_put_there_meanwhile(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "notes.md").write_text("mine\n")
    rundir.remove_run_dir(run)
    assert sorted(p.name for p in run.iterdir()) == ["notes.md"]
    rundir.remove_run_dir(make_run(tmp_path / "only_ours"))
    assert not (tmp_path / "only_ours").exists()


def test_the_names_on_the_list_are_the_ones_their_writers_use():
    from alignctl.eval import export
    from alignctl.eval.curve import CURVE_FILE
    from alignctl.run.train import ERROR_LOG

    assert rundir.is_alignctls(CURVE_FILE) and rundir.is_alignctls(ERROR_LOG)
    assert all(rundir.is_alignctls(name) for name in rundir.RESULTS)
    assert rundir.is_alignctls(f"{rundir.RUN_RECORD}.partial")  # RunRecord.update writes it, then renames
    assert export.ALPACA_EVAL_FILE == "model_outputs.json"  # inside alpaca_eval/, which is on the list
    assert all(rundir.is_alignctls(f"{name}-toy_sentiment-tiny.png") for name in ("frontier", "length", "diversity",
                                                                                   "pass_at_k", "reliability"))
    assert not rundir.is_alignctls("thesis.txt") and not rundir.is_alignctls("notes.log")


# eval's out_dir


def test_eval_of_a_run_into_its_own_directory_is_allowed(tmp_path):
    run = make_run(tmp_path / "run")
    rundir.check_eval_out_dir(run, run / "model")
    rundir.check_eval_out_dir(tmp_path / "new", run / "model")  # a new folder
    (tmp_path / "empty").mkdir()
    rundir.check_eval_out_dir(tmp_path / "empty", run / "model")


def test_eval_into_another_runs_directory_is_refused(tmp_path):
    mine, theirs = make_run(tmp_path / "mine"), make_run(tmp_path / "theirs")
    with pytest.raises(UsageError) as e:
        rundir.check_eval_out_dir(theirs, mine / "model")
    assert str(e.value) == (
        f"out_dir={theirs} is another run's directory (its model is {theirs / 'model'}, not {mine / 'model'}): its "
        f"results are that run's own; give a new or empty out_dir=<dir> (alignctl eval run_dir={theirs} "
        "re-evaluates that run)"
    )


def test_eval_over_another_models_eval_json_is_refused_and_over_its_own_allowed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "eval.json").write_text(json.dumps({"model_dir": str(tmp_path / "a" / "model"), "reward_mean": 0.5}))
    rundir.check_eval_out_dir(out, tmp_path / "a" / "model")  # the same model again: its own results
    with pytest.raises(UsageError, match=r"already holds an eval\.json of the model .*/a/model: evaluating .*/b/model"):
        rundir.check_eval_out_dir(out, tmp_path / "b" / "model")
    (out / "eval.json").write_text("not json")
    with pytest.raises(UsageError, match="an eval.json alignctl cannot attribute to a model"):
        rundir.check_eval_out_dir(out, tmp_path / "a" / "model")
