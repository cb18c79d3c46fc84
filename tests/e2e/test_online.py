"""End to end on CPU with small sizes: `alignctl train objective=<grpo|disco|fdpg>` for each divergence on toy_arith
(exact_match reward, pass@k on the test and ood splits) and on toy_sentiment (sentiment reward); resuming an online
run; DPH-RL's prompt split refusing a pi_0 that solves nothing."""

import json
import os
import subprocess
import sys

import pytest

from tests import forked

pytestmark = pytest.mark.slow

# tests/data/test_toy_arith.py's seconds-long base model (it learns the format, not the arithmetic), 2 GRPO steps.
TINY_ARITH = [
    "dataset=toy_arith", "reward=exact_match",
    "dataset.corpus_size=600", "dataset.pretrain_steps=40", "dataset.num_train_prompts=32",
    "dataset.num_test_prompts=16", "dataset.num_ood_prompts=16", "dataset.max_new_tokens=32",
    "model.vocab_size=512", "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2",
    "model.intermediate_size=64", "model.max_position_embeddings=64", "model.pretrain_batch_size=16",
    "model.pretrain_lr=0.01",
]  # fmt: skip
# tests/e2e/test_train_eval.py's toy_sentiment sizes.
TINY_SENTIMENT = [
    "dataset.corpus_size=2000", "dataset.num_train_prompts=24", "dataset.num_test_prompts=8",
    "dataset.max_new_tokens=16", "model.hidden_size=64", "model.num_layers=2", "model.num_heads=2",
    "model.intermediate_size=128", "model.max_position_embeddings=64", "model.pretrain_steps=120",
    "model.pretrain_batch_size=16", "model.pretrain_lr=0.01",
]  # fmt: skip
ONLINE = [
    "train.max_steps=2", "train.batch_size=8", "train.num_generations=4", "train.warmup_steps=0",
    "train.learning_rate=1e-3", "train.logging_steps=1", "train.divergence_batch_size=4",
    "train.reference_samples_per_prompt=1", "eval.num_prompts=4", "eval.samples_per_prompt=3",
    "eval.max_new_tokens=8", "tracking=none",
]  # fmt: skip


def alignctl(tmp_path_factory, root, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ALIGNCTL_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "cache")}
    return forked.run(
        [sys.executable, "-m", "alignctl.cli.main", "train", *ONLINE, *args, f"hydra.run.dir={root}"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


def train(tmp_path_factory, *args: str) -> dict:
    root = tmp_path_factory.mktemp("online")
    out = alignctl(tmp_path_factory, root, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    steps = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s] == [1, 2]
    assert (root / "model" / "model.safetensors").is_file()
    return {"steps": steps, "eval": json.loads((root / "eval.json").read_text()), "stderr": out.stderr}


def check_arith_eval(e: dict) -> None:
    keys = [f"{prefix}pass@{k}" for prefix in ("", "ood_", "reference_", "reference_ood_") for k in (1, 2, 3)]
    assert all(0.0 <= e[k] <= 1.0 for k in keys), e
    assert e["preference_accuracy"] is None and e["ece"] is None
    assert "no implicit reward" in e["preference_metrics_skipped"]
    assert e["max_new_tokens"] == 32 and e["entropy_per_token"] > 0 and e["kl_to_reference"] is not None


DIVERGENCES = ["reverse_kl", "forward_kl", "js", "alpha"]
ALPHA = ["divergence.alpha=0.2"]  # DPH-RL's alpha


@pytest.mark.parametrize("divergence", [*DIVERGENCES, "none", "forward_kl+low_var_kl", "reverse_kl+low_var_kl"])
def test_grpo_on_toy_arith(tmp_path_factory, divergence):
    # the tiny base model solves nothing, so DPH-RL's split (tested below) is off here
    divergence, _, estimator = divergence.partition("+")
    got = train(tmp_path_factory, *TINY_ARITH, "objective=grpo", f"divergence={divergence}",
                "train.split_solved_prompts=false", *(ALPHA if divergence == "alpha" else []),
                *([f"objective.kl_estimator={estimator}"] if estimator else []))  # fmt: skip
    first = next(s for s in got["steps"] if "loss" in s)
    assert ("kl" in first) == (divergence == "reverse_kl")  # TRL's k3 (or verl's low_var_kl) with its reference
    assert ("divergence/penalty" in first) == (divergence in ("forward_kl", "js", "alpha"))  # stored pi_0 samples
    assert "rewards/exact_match/mean" in first
    check_arith_eval(got["eval"])


def test_disco_on_toy_arith(tmp_path_factory):
    got = train(tmp_path_factory, *TINY_ARITH, "objective=disco", "objective.score=Lratio")
    first = next(s for s in got["steps"] if "loss" in s)
    assert {"disco/objective", "disco/kept_groups", "disco/kl_old", "disco/penalty"} <= set(first)
    check_arith_eval(got["eval"])


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_fdpg_on_toy_arith(tmp_path_factory, divergence):
    got = train(tmp_path_factory, *TINY_ARITH, "objective=fdpg", f"divergence={divergence}",
                *(ALPHA if divergence == "alpha" else []))  # fmt: skip
    first = next(s for s in got["steps"] if "loss" in s)
    assert {"fdpg/pseudo_reward", "fdpg/log_z", "fdpg/divergence_to_target"} <= set(first)
    check_arith_eval(got["eval"])


@pytest.mark.parametrize("objective", ["grpo", "disco", "fdpg"])
def test_online_objectives_on_toy_sentiment(tmp_path_factory, objective):
    got = train(tmp_path_factory, *TINY_SENTIMENT, f"objective={objective}",
                *(["divergence=js"] if objective != "disco" else ["objective.positive_threshold=0.0"]))  # fmt: skip
    first = next(s for s in got["steps"] if "loss" in s)
    assert "rewards/sentiment/mean" in first
    assert ("divergence/penalty" in first) == (objective == "grpo")
    e = got["eval"]
    assert -1.0 <= e["reward_mean"] <= 1.0 and e["preference_accuracy"] is None
    assert "pass@1" not in e  # pass@k needs a correct/incorrect reward


def test_online_run_resumes_with_its_partition_estimate(tmp_path_factory):
    root = tmp_path_factory.mktemp("online-resume")
    args = [*TINY_ARITH, "objective=fdpg", "train.save_steps=1", "eval.enabled=false"]
    assert alignctl(tmp_path_factory, root, *args).returncode == 0
    assert (root / "checkpoints" / "checkpoint-2" / "fdpg_partition.json").is_file()
    out = alignctl(tmp_path_factory, root, *args, "train.max_steps=3", "train.resume=true")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from checkpoint-2" in out.stderr
    lines = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in lines if "loss" in s] == [1, 2, 3]


def test_dph_split_needs_prompts_pi0_solves(tmp_path_factory):
    out = alignctl(tmp_path_factory, tmp_path_factory.mktemp("split"), *TINY_ARITH, "objective=grpo",
                   "divergence=forward_kl")  # fmt: skip
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("alignctl: error: train.split_solved_prompts=true: pi_0 solved 0 of 32")
    assert "Traceback" not in out.stderr
