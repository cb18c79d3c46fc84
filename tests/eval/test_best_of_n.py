"""eval.best_of_n: metrics.best_of_n_win_rate against an explicit per-prompt loop."""

import random

import pytest

from alignctl.eval import metrics as M


def loop_best_of_n(policy, baseline, n):
    wins = ties = 0
    prompts = len(policy) // n
    for i in range(prompts):
        best_policy = max(policy[i * n : (i + 1) * n])
        best_baseline = max(baseline[i * n : (i + 1) * n])
        wins += best_policy > best_baseline
        ties += best_policy == best_baseline
    return (wins + ties / 2) / prompts


@pytest.mark.parametrize("n", [1, 2, 4])
def test_matches_a_per_prompt_loop(n):
    rng = random.Random(n)
    for discrete in (False, True):  # with ties and without
        draw = (lambda: float(rng.randint(0, 2))) if discrete else (lambda: rng.gauss(0, 1))
        policy, baseline = [draw() for _ in range(12 * n)], [draw() for _ in range(12 * n)]
        assert M.best_of_n_win_rate(policy, baseline, n) == pytest.approx(loop_best_of_n(policy, baseline, n))


def test_n_1_is_the_plain_win_rate_and_only_the_best_counts():
    policy, baseline = [0.1, 0.9, -0.3, 0.2], [0.5, 0.0, 0.4, 0.4]
    assert M.best_of_n_win_rate(policy, baseline, 1) == M.win_rate(policy, baseline)
    # prompt 1: 0.9 vs 0.5 wins; prompt 2: 0.2 vs 0.4 loses -> 1/2, although policy's mean is lower
    assert M.best_of_n_win_rate(policy, baseline, 2) == 0.5
    assert M.best_of_n_win_rate([0.0, 5.0], [4.9, 4.9], 2) == 1.0


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="multiple of n=2"):
        M.best_of_n_win_rate([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 2)
    with pytest.raises(ValueError, match="same length"):
        M.best_of_n_win_rate([1.0, 2.0], [1.0], 1)
    with pytest.raises(ValueError, match="n must be >= 1"):
        M.best_of_n_win_rate([1.0], [1.0], 0)
