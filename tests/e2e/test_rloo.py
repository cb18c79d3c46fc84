"""End to end on CPU with small sizes: `alignctl train objective=rloo` on toy_arith (exact_match reward, pass@k on the
test and ood splits) with TRL's reverse-KL-in-the-reward and with a DPH-RL generator divergence; the divergences and
settings it refuses, as one line and exit status 2 before anything loads."""

import os
import sys

import pytest

from tests import forked

from .test_online import TINY_ARITH, check_arith_eval, train


@pytest.mark.slow
@pytest.mark.parametrize("divergence", ["reverse_kl", "js", "none"])
def test_rloo_on_toy_arith(tmp_path_factory, divergence):
    # the tiny base model solves nothing, so DPH-RL's split is off (as for grpo in test_online.py)
    got = train(tmp_path_factory, *TINY_ARITH, "objective=rloo", f"divergence={divergence}",
                "train.split_solved_prompts=false")  # fmt: skip
    first = next(s for s in got["steps"] if "loss" in s)
    assert {"rloo/clip_ratio", "rloo/shaped_reward", "rewards/exact_match/mean", "entropy"} <= set(first)
    assert ("kl" in first) == (divergence == "reverse_kl")  # TRL's KL in the reward, with its reference model
    assert ("divergence/penalty" in first) == (divergence == "js")  # stored pi_0 samples
    assert f"objective=rloo divergence={divergence}" in got["stderr"]
    check_arith_eval(got["eval"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["divergence=tv"], ("divergence=tv is not a valid option; choose one of: alpha, auto, forward_kl, js, none, "
                             "reverse_kl")),
        (["train.gradient_accumulation_steps=2"], ("train.gradient_accumulation_steps=2 is not supported by "
                                                   "objective=rloo: its loss reads whole groups")),
        (["objective.divergence_coef=-0.1"], "objective.divergence_coef"),
    ],
    ids=["unknown-divergence", "accumulation", "negative-coef"],
)
def test_refusals_are_one_line_and_exit_2(tmp_path, args, message):
    out = forked.run(
        [sys.executable, "-m", "alignctl.cli.main", "train", "objective=rloo", "dataset=toy_arith", "reward=exact_match",
         "tracking=none", *args, f"hydra.run.dir={tmp_path / 'run'}"],
        check=False, capture_output=True, text=True, env={**os.environ, "ALIGNCTL_CACHE_DIR": str(tmp_path / "cache")}, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("alignctl: error: ") and message in lines[0], out.stderr
    assert not (tmp_path / "run" / "model").exists()
