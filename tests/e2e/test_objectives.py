"""Every pairwise objective (and KTO, on the pairs split into binary rows) trains and evaluates end to end through
the CLI (in-process, small sizes)."""

import json
import math

import pytest

from alignctl import objectives
from alignctl.cli import listing
from alignctl.cli import main as cli
from tests.e2e.test_train_eval import EVAL_KEYS, TINY

pytestmark = pytest.mark.slow

# (distillation objectives need a teacher run first: tests/e2e/test_distill.py; a reward model trains no policy to
# sample from: tests/e2e/test_reward_model.py)
PAIRWISE = [name for name in listing.options("objective")
            if objectives.get(name).data in ("pairs", "binary") and not objectives.get(name).model_options
            and not objectives.get(name).trains_reward_model]  # fmt: skip


@pytest.mark.parametrize("objective", PAIRWISE)
def test_objective_trains_and_evaluates(objective, tmp_path):
    run_dir = tmp_path / objective
    code = cli.main(
        ["train", f"objective={objective}", *TINY, "train.max_steps=2", "tracking=none", f"hydra.run.dir={run_dir}"]
    )
    assert code == 0
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    metrics = json.loads((run_dir / "eval.json").read_text())
    assert EVAL_KEYS <= metrics.keys()
    entry = objectives.get(objective)
    saved = (run_dir / "config.yaml").read_text()
    assert f"name: {entry.default_divergence}" in saved
