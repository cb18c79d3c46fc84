"""train.group_by_length end to end: a run stopped at its step-1 checkpoint and resumed trains on the same
length-grouped batches as an uninterrupted one (in-process, small sizes), and a non-pairwise objective refuses it."""

import pytest

from tests.e2e._resume import straight_and_resumed
from tests.e2e.test_train_eval import TINY, alignctl

GROUPED = ["objective=dpo", *TINY, "train.save_steps=1", "train.group_by_length=true", "eval.enabled=false",
           "tracking=none"]  # fmt: skip


def test_a_resumed_grouped_run_trains_on_the_same_batches(tmp_path):
    want, got = straight_and_resumed(GROUPED, tmp_path)
    assert sorted(got) == sorted(want) == [1, 2]
    for key in ("loss", "logps/chosen", "logps/rejected", "grad_norm"):
        assert got[2][key] == pytest.approx(want[2][key], rel=1e-6, abs=1e-7), key


def test_group_by_length_is_for_pairs(tmp_path):
    out = alignctl("train", "objective=grpo", "train.group_by_length=true", "tracking=none",
                   f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr[-2000:]
    assert "train.group_by_length=true groups preference pairs by length; objective=grpo trains on" in out.stderr
