"""Which checkpoint a run resumes from: the newest complete one (rundir.last_checkpoint)."""

import json

from alignctl.run import rundir


def checkpoint(run_dir, step, state: str | None = '{"global_step": 0}'):
    folder = run_dir / rundir.CHECKPOINTS / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x")
    if state is not None:
        (folder / "trainer_state.json").write_text(state)
    return folder


def test_a_checkpoint_whose_state_file_is_missing_or_cut_short_is_not_resumed_from(tmp_path):
    good = checkpoint(tmp_path, 2)
    assert rundir.last_checkpoint(tmp_path) == (good, 2)
    checkpoint(tmp_path, 4, state=None)  # the write stopped before trainer_state.json
    checkpoint(tmp_path, 6, state=json.dumps({"global_step": 6, "log_history": [1, 2, 3]})[:20])  # cut short
    assert rundir.last_checkpoint(tmp_path) == (good, 2)
    assert not rundir.is_complete_checkpoint(tmp_path / rundir.CHECKPOINTS / "checkpoint-6")
    later = checkpoint(tmp_path, 8)
    assert rundir.last_checkpoint(tmp_path) == (later, 8)
