"""The length numbers eval.json gets (alignctl.run.evaluate): recomputed here by hand from the samples."""

import pytest
import torch

from alignctl.models.sampling import Batch, Samples
from alignctl.run.evaluate import length_diffs, length_metrics, outcomes


def _samples(completions, token_lengths):
    width = max(token_lengths) + 2
    mask = torch.zeros(len(token_lengths), width, dtype=torch.long)
    for i, n in enumerate(token_lengths):
        mask[i, width - n :] = 1  # left-padded: the completion is the last n positions
    return Samples(["p"] * len(completions), completions, Batch(torch.zeros_like(mask), torch.ones_like(mask), mask))


def test_lengths_ratio_and_correlation_by_hand():
    ours = _samples(["abcd", "ab", "abcdef"], [4, 2, 6])
    theirs = _samples(["abc", "abc", "a"], [3, 3, 2])
    out = length_metrics(ours, theirs, rewards=[0.5, 0.1, 0.9])
    assert (out["length_tokens_mean"], out["length_tokens_median"]) == (4.0, 4.0)
    assert (out["reference_length_tokens_mean"], out["reference_length_tokens_median"]) == (pytest.approx(8 / 3), 3.0)
    assert (out["length_chars_mean"], out["reference_length_chars_median"]) == (4.0, 3.0)
    assert out["length_ratio"] == pytest.approx(4.0 / (8 / 3))
    # rewards and token lengths: dx = (0, -2, 2), dy = (0, -0.4, 0.4): perfectly correlated
    assert out["reward_length_correlation"] == pytest.approx(1.0)
    assert length_diffs(ours, theirs) == [1.0, -1.0, 5.0]


def test_outcomes_are_win_tie_loss_per_comparison():
    assert outcomes([1.0, 0.5, 0.2], [0.5, 0.5, 0.3]) == [1.0, 0.5, 0.0]
