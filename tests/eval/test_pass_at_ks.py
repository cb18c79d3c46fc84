"""eval.json's pass@k keys: rewards grouped by prompt -> unbiased pass@k for k = 1..n."""

import pytest

from alignctl.run.evaluate import pass_at_ks


def test_pass_at_ks_groups_rewards_by_prompt():
    rewards = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0] + [0.0] * 10  # prompt 1: c=3 of 10; prompt 2: c=0
    got = pass_at_ks(rewards, 10, "ood_")
    assert list(got) == [f"ood_pass@{k}" for k in range(1, 11)]
    assert got["ood_pass@1"] == pytest.approx(0.3 / 2)
    assert got["ood_pass@5"] == pytest.approx(0.9167 / 2, abs=1e-4)  # spec section 12: 11/12 for the first prompt
    assert got["ood_pass@10"] == pytest.approx(0.5)
