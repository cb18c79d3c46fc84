"""objective=hypo end to end: the fresh samples of every step are seeded by the step, so a run stopped at a checkpoint
and resumed trains on the same samples as an uninterrupted one (in-process, small sizes)."""

import pytest

from tests.e2e._resume import straight_and_resumed
from tests.e2e.test_train_eval import TINY

pytestmark = pytest.mark.slow

HYPO = ["objective=hypo", *TINY, "train.save_steps=1", "train.num_generations=2", "eval.enabled=false",
        "tracking=none"]  # fmt: skip


def test_resumed_run_draws_the_same_samples_as_an_uninterrupted_one(tmp_path):
    want, got = straight_and_resumed(HYPO, tmp_path)
    assert sorted(got) == sorted(want) == [1, 2]
    for key in ("loss", "hypo/kl", "hypo/dpo_loss", "hypo/sample_length"):
        assert got[2][key] == pytest.approx(want[2][key], rel=1e-6, abs=1e-7), key
    assert want[2]["loss"] == pytest.approx(want[2]["hypo/dpo_loss"] + 0.01 * want[2]["hypo/kl"], rel=1e-5, abs=1e-6)
