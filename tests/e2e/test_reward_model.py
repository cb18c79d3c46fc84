"""objective=reward_model end to end on the embedded task: train a Bradley-Terry reward model on toy_sentiment's pairs,
evaluate it on held-out pairs (again with `alignctl eval run_dir=`), then train grpo with it as
`reward=classifier reward.mode=logit reward.path=<run>/model`. And its bad inputs: one line, exit 2, before anything
loads (as tests/e2e/test_bad_inputs.py)."""

from __future__ import annotations

import json
import math

import pytest

from alignctl.cli import main as cli
from tests.e2e.test_bad_inputs import (  # noqa: F401 (fixtures)
    assert_one_line_before_the_run,
    inputs,
    llama,
    no_weights,
)
from tests.e2e.test_train_eval import TINY


def _losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


@pytest.mark.slow
def test_reward_model_trains_evaluates_and_rewards_grpo(tmp_path):
    rm = tmp_path / "rm"
    assert cli.main(["train", "objective=reward_model", *TINY, "train.max_steps=3", "tracking=none",
                     f"hydra.run.dir={rm}"]) == 0  # fmt: skip
    losses = _losses(rm)
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    config = json.loads((rm / "model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and len(config["id2label"]) == 1
    metrics = json.loads((rm / "eval.json").read_text())
    assert 0.0 <= metrics["preference_accuracy"] <= 1.0 and 0.0 <= metrics["ece"] <= 1.0
    assert metrics["num_pairs"] > 0 and math.isfinite(metrics["reward_margin_mean"])
    assert "reward_mean" not in metrics and "kl_to_reference" not in metrics  # nothing sampled, no reference
    scored = [json.loads(line) for line in (rm / "eval_samples.jsonl").read_text().splitlines()]
    assert len(scored) == metrics["num_pairs"]
    right = sum(row["chosen_reward"] > row["rejected_reward"] for row in scored)
    assert metrics["preference_accuracy"] == pytest.approx(right / len(scored))
    assert json.loads((rm / "reliability.json").read_text())["n"] == metrics["num_pairs"]

    again = tmp_path / "again"
    assert cli.main(["eval", f"run_dir={rm}", f"out_dir={again}"]) == 0
    repeated = json.loads((again / "eval.json").read_text())
    assert {k: repeated[k] for k in ("preference_accuracy", "ece", "num_pairs")} == {
        k: metrics[k] for k in ("preference_accuracy", "ece", "num_pairs")
    }

    grpo = tmp_path / "grpo"
    reward = ["reward=classifier", "reward.mode=logit", f"reward.path={rm / 'model'}"]
    assert cli.main(["train", "objective=grpo", *TINY, *reward, "train.max_steps=2", "tracking=none",
                     f"hydra.run.dir={grpo}"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in (grpo / "metrics.jsonl").read_text().splitlines()]
    assert len(_losses(grpo)) == 2
    assert all(math.isfinite(row["rewards/classifier/mean"]) for row in rows if "loss" in row)
    assert math.isfinite(json.loads((grpo / "eval.json").read_text())["reward_mean"])


CASES = {  # id: (overrides from the inputs, fragments of the line)
    "reward-model-with-a-divergence": (
        lambda i: [*llama(i), "objective=reward_model", "divergence=reverse_kl"],
        ["divergence=reverse_kl is not accepted by objective=reward_model; choose one of: none"],
    ),
    "orpo-with-a-divergence": (
        lambda i: [*llama(i), "objective=orpo", "divergence=reverse_kl"],
        ["divergence=reverse_kl is not accepted by objective=orpo; choose one of: none"],
    ),
    "reward-model-with-a-reference": (
        lambda i: [*llama(i), "objective=reward_model", f"model.reference={i['llama']}"],
        ["model.reference=", "is not used by objective=reward_model", "leave model.reference at null"],
    ),
    "reward-model-with-a-reward-kl-curve": (
        lambda i: [*llama(i), "objective=reward_model", "eval.every_steps=2"],
        ["eval.every_steps=2 is not used by objective=reward_model", "leave eval.every_steps at 0"],
    ),
    "classifier-reward-that-is-a-causal-lm": (
        lambda i: [*llama(i), "reward=classifier", "reward.mode=logit", f"reward.path={i['llama']}"],
        ["is a causal LM (LlamaForCausalLM), not a sequence classifier", "objective=reward_model run"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_before_anything_loads(case, inputs, tmp_path, capsys, nothing_loads,  # noqa: F811
                                                     no_weights):  # noqa: F811
    overrides, fragments = CASES[case]
    assert_one_line_before_the_run(overrides(inputs), fragments, tmp_path / "run", capsys)
