"""End to end on CPU with small sizes: InfAlign/CTRL (reward.calibrate + reward.transform) trains grpo on toy_arith
(exact_match) and disco on toy_sentiment (sentiment), and eval reports best-of-N win rates on the RAW reward."""

import math

import pytest

from tests.e2e.test_online import TINY_ARITH, TINY_SENTIMENT, train

pytestmark = pytest.mark.slow


def training_rewards(steps, name):
    return [s[f"rewards/{name}/mean"] for s in steps if f"rewards/{name}/mean" in s]


def test_grpo_bon_calibrated_exact_match_on_toy_arith(tmp_path_factory):
    got = train(tmp_path_factory, *TINY_ARITH, "objective=grpo", "divergence=reverse_kl", "reward.calibrate=true",
                "reward.transform=bon", "reward.t=2", "reward.calibration_samples=4", "eval.best_of_n=2")  # fmt: skip
    # training optimised exp(2 C), C in [0, 1]; eval reports the raw 0/1 reward
    assert all(1.0 <= r <= math.exp(2.0) for r in training_rewards(got["steps"], "exact_match"))
    e = got["eval"]
    assert 0.0 <= e["reward_mean"] <= 1.0 and 0.0 <= e["best_of_2_win_rate_vs_reference"] <= 1.0
    assert 0.0 <= e["pass@2"] <= 1.0


def test_disco_calibrated_sentiment_with_best_of_n_eval(tmp_path_factory):
    # disco's positives: C > objective.positive_threshold = 0.5, better than the reference's median sample;
    # eval.best_of_n differs from eval.samples_per_prompt (3): it draws its own samples
    got = train(tmp_path_factory, *TINY_SENTIMENT, "objective=disco", "reward.calibrate=true",
                "reward.calibration_samples=4", "eval.best_of_n=2")  # fmt: skip
    assert all(0.0 <= r <= 1.0 for r in training_rewards(got["steps"], "sentiment"))  # C
    e = got["eval"]
    assert -1.0 <= e["reward_mean"] <= 1.0  # VADER's raw compound score
    assert 0.0 <= e["best_of_2_win_rate_vs_reference"] <= 1.0
