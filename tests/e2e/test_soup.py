"""SALSA's soup reference end to end: model=tiny model.reference=soup model.soup=[0,1] builds the base models of
seeds 0 and 1, averages them once into the cache, and trains and evaluates from the soup against the soup."""

import json

import pytest

from alignctl.cache import cached_path
from alignctl.cli import main as cli
from alignctl.config import compose
from alignctl.models import soup
from alignctl.models.files import model_fingerprint
from alignctl.run import sources
from tests.e2e.test_train_eval import EVAL_KEYS, TINY

pytestmark = pytest.mark.slow


def test_dpo_with_a_soup_of_two_seeds_trains_and_evaluates(tmp_path):
    overrides = [*TINY, "model.reference=soup", "model.soup=[0,1]", "tracking=none"]
    run_dir = tmp_path / "run"
    assert cli.main(["train", *overrides, "train.max_steps=2", f"hydra.run.dir={run_dir}"]) == 0
    assert EVAL_KEYS <= json.loads((run_dir / "eval.json").read_text()).keys()
    cfg = compose.compose_one(overrides)
    seeds = [sources.policy_source(compose.compose_one([*TINY, f"model.seed={k}"])) for k in (0, 1)]
    built = cached_path(soup.KIND, {"method": "linear", "entries": [model_fingerprint(d) for d in seeds]})
    assert sources.reference_source(cfg) == sources.policy_source(cfg) == str(built)
    assert json.loads((built / "build_info.json").read_text())["entries"] == seeds
