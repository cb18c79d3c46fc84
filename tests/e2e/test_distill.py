"""dckd and adpa end to end: a DPO run of model=tiny-large is the teacher of the tiny student; ADPA's samples are
drawn once, seeded, so a run stopped at a checkpoint and resumed trains as an uninterrupted one; ADPA+ starts
from the DCKD run's model (in-process, small sizes)."""

import json
import math

import pytest

from alignctl.cli import main as cli
from tests.e2e._resume import step_rows, straight_and_resumed
from tests.e2e.test_train_eval import EVAL_KEYS, TINY

pytestmark = pytest.mark.slow

# the teacher: wider than the student (64), with the same corpus, vocab_size and max_position_embeddings (tokenizer)
TEACHER = ["model=tiny-large", *TINY, "model.hidden_size=96", "model.pretrain_steps=40", "train.max_steps=2",
           "eval.enabled=false", "tracking=none"]  # fmt: skip


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("distill") / "teacher"
    assert cli.main(["train", "objective=dpo", *TEACHER, f"hydra.run.dir={run_dir}"]) == 0
    return run_dir


def test_dckd_then_adpa_plus(teacher, tmp_path):
    dckd = tmp_path / "dckd"
    assert cli.main(["train", "objective=dckd", f"objective.teacher={teacher}", *TINY, "train.max_steps=2",
                     "tracking=none", f"hydra.run.dir={dckd}"]) == 0  # fmt: skip
    rows = step_rows(dckd)
    assert sorted(rows) == [1, 2] and all(math.isfinite(r["loss"]) for r in rows.values())
    assert rows[1]["seq_kl/chosen"] > 0 and rows[1]["seq_kl/rejected"] > 0  # KL(teacher || student) is read
    assert EVAL_KEYS <= json.loads((dckd / "eval.json").read_text()).keys()
    # ADPA+: the student starts from the DCKD model
    plus = tmp_path / "adpa-plus"
    dataset = [o for o in TINY if not o.startswith("model.")]
    assert cli.main(["train", "objective=adpa", f"objective.teacher={teacher}", "model=hf",
                     f"model.path={dckd / 'model'}", *dataset, "train.max_steps=1", "eval.enabled=false",
                     "tracking=none", f"hydra.run.dir={plus}"]) == 0  # fmt: skip
    assert math.isfinite(step_rows(plus)[1]["loss"])


def test_adpa_resumed_run_trains_on_the_same_samples(teacher, tmp_path):
    adpa = ["objective=adpa", f"objective.teacher={teacher}", *TINY, "train.save_steps=1", "eval.enabled=false",
            "tracking=none"]  # fmt: skip
    want, got = straight_and_resumed(adpa, tmp_path)
    assert sorted(got) == sorted(want) == [1, 2]
    for key in ("loss", "advantage/sample", "logps/sample"):
        assert got[2][key] == pytest.approx(want[2][key], rel=1e-6, abs=1e-7), key
    assert want[1]["advantage/sample"] != 0.0

