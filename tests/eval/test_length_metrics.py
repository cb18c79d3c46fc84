"""length_stats, pearson and length_controlled_win_rate (alignctl.eval.metrics) against independent computations:
explicit loops and the statistics module, and for the LC win rate logistic fits written out here (scipy.optimize
on the soft-label negative log-likelihood; scikit-learn on AlpacaEval's duplicated rows, as
tatsu-lab/alpaca_eval's glm_winrate.fit_LogisticRegressionCV builds them) on data simulated from a known model."""

from __future__ import annotations

import json
import math
import random
import statistics

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

from alignctl.eval import metrics as M

# ------------------------------------------------------------------------------------------------
# length_stats


def test_length_stats_matches_statistics_module():
    rng = random.Random(0)
    for n in (1, 2, 3, 6, 101, 1000):
        xs = [rng.randint(0, 800) for _ in range(n)]
        out = M.length_stats(xs)
        assert out["mean"] == pytest.approx(sum(xs) / n, rel=1e-12)
        assert out["median"] == statistics.median(xs)
    # even N: the mean of the two middle values (torch.median would give the lower one, 1)
    assert M.length_stats([4, 1, 3, 1]) == {"mean": 2.25, "median": 2.0}
    assert M.length_stats(torch.tensor([7, 2, 9], dtype=torch.int64)) == {"mean": 6.0, "median": 7.0}
    assert M.length_stats(np.array([0.0])) == {"mean": 0.0, "median": 0.0}


def test_length_stats_errors():
    with pytest.raises(ValueError, match="empty"):
        M.length_stats([])
    with pytest.raises(ValueError, match="non-negative"):
        M.length_stats([3, -1])
    with pytest.raises(ValueError, match="non-negative"):
        M.length_stats([3, float("nan")])
    with pytest.raises(ValueError, match="1-D"):
        M.length_stats([[1, 2]])


# ------------------------------------------------------------------------------------------------
# pearson


def loop_pearson(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sxx = syy = 0.0
    for a, b in zip(x, y):
        sxy += (a - mx) * (b - my)
        sxx += (a - mx) ** 2
        syy += (b - my) ** 2
    return sxy / math.sqrt(sxx * syy)


def test_pearson_hand_example():
    # x = 1, 2, 3; y = 2, 4, 7: dx = -1, 0, 1; dy = -7/3, -1/3, 8/3; sxy = 5, sxx = 2, syy = 114/9
    assert M.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9), rel=1e-12)
    assert M.pearson([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0, abs=1e-15)
    assert M.pearson([0, 1, 0, 1], [5, 5, 6, 6]) == pytest.approx(0.0, abs=1e-15)


def test_pearson_matches_loop_and_statistics():
    rng = random.Random(1)
    for n in (2, 5, 50, 500):
        x = [rng.gauss(0, 1) for _ in range(n)]
        lengths = [rng.randint(1, 400) + 50 * xi for xi in x]  # correlated with x
        r = M.pearson(x, lengths)
        assert r == pytest.approx(loop_pearson(x, lengths), rel=1e-10, abs=1e-12)
        assert r == pytest.approx(statistics.correlation(x, lengths), rel=1e-10, abs=1e-12)
    assert M.pearson(torch.tensor([1.0, 2.0, 4.0]), np.array([1, 3, 2])) == pytest.approx(
        loop_pearson([1, 2, 4], [1, 3, 2]), rel=1e-12
    )


def test_pearson_constant_side_is_none():
    # 0.1 * 3 / 3 != 0.1 in float64: a tolerance-free constant test must not be fooled by the mean
    assert M.pearson([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]) is None
    assert M.pearson([1.0, 2.0, 3.0], [7, 7, 7]) is None
    assert M.pearson([5.0], [2.0]) is None
    assert M.pearson([1.0, 2.0], [3.0, 5.0]) == pytest.approx(1.0)


def test_pearson_errors():
    with pytest.raises(ValueError, match="same length"):
        M.pearson([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="empty"):
        M.pearson([], [])
    with pytest.raises(ValueError, match="finite"):
        M.pearson([1, float("nan"), 2], [1, 2, 3])


# ------------------------------------------------------------------------------------------------
# length_controlled_win_rate: independent fits


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def features(d):
    """x_i = (1, tanh(d_i / sd)) with sd the ddof=1 std, uncentred (AlpacaEval's std_delta_len, sign flipped)."""
    sd = statistics.stdev([float(v) for v in d])
    return np.stack([np.ones(len(d)), np.tanh(np.asarray(d, dtype=float) / sd)], axis=1)


def scipy_fit(p, d):
    """(theta, phi) minimising the soft-label negative log-likelihood, written out here, with scipy's BFGS."""
    X, p = features(d), np.asarray(p, dtype=float)

    def nll(w):
        z = X @ w
        return -np.sum(p * -np.logaddexp(0, -z) + (1 - p) * -np.logaddexp(0, z))

    def grad(w):
        return X.T @ (sigmoid(X @ w) - p)

    res = minimize(nll, np.zeros(2), jac=grad, method="BFGS", options={"gtol": 1e-10, "maxiter": 10_000})
    return res.x


def sklearn_fit(p, d, C=np.inf):
    """AlpacaEval's soft-label trick: every comparison twice, label 1 with weight p, label 0 with weight 1 - p,
    no intercept (the all-ones column is theta). C = inf: unpenalised; finite C: L1 with liblinear, as AlpacaEval."""
    X, p = features(d), np.asarray(p, dtype=float)
    Xd, yd, wd = np.concatenate([X, X]), np.r_[np.ones(len(p)), np.zeros(len(p))], np.r_[p, 1 - p]
    if np.isinf(C):
        model = LogisticRegression(C=np.inf, fit_intercept=False, solver="newton-cholesky", tol=1e-12, max_iter=1000)
    else:
        model = LogisticRegression(
            C=C, l1_ratio=1.0, fit_intercept=False, solver="liblinear", tol=1e-12, max_iter=100_000, random_state=0
        )
    return model.fit(Xd, yd, sample_weight=wd).coef_[0]


def simulate(seed, n, a, phi, mean_len=100.0, sd_len=400.0, tie_frac=0.0):
    """Outcomes drawn from P(win) = sigmoid(a + phi tanh(d / sd)), sd the sample std of the drawn d; a fraction
    tie_frac of the comparisons replaced by ties (0.5)."""
    rng = np.random.default_rng(seed)
    d = rng.normal(mean_len, sd_len, n)
    t = np.tanh(d / d.std(ddof=1))
    p = (rng.random(n) < sigmoid(a + phi * t)).astype(float)
    p[rng.random(n) < tie_frac] = 0.5
    return p, d


@pytest.mark.parametrize(("seed", "n", "a", "phi", "tie_frac"), [(0, 805, 0.4, 1.2, 0.1), (1, 300, -0.7, 2.0, 0.0)])
def test_lc_matches_independent_logistic_fits(seed, n, a, phi, tie_frac):
    p, d = simulate(seed, n, a, phi, tie_frac=tie_frac)
    out = M.length_controlled_win_rate(p.tolist(), d.tolist())
    assert out["fit"] == "mle"
    for theta, length_coef in (scipy_fit(p, d), sklearn_fit(p, d)):
        assert out["model_coefficient"] == pytest.approx(theta, abs=1e-4)
        assert out["length_coefficient"] == pytest.approx(length_coef, abs=1e-4)
        assert out["lc_win_rate"] == pytest.approx(1 / (1 + math.exp(-theta)), abs=1e-5)
    assert out["win_rate"] == pytest.approx(statistics.fmean(p), rel=1e-12)
    assert out["win_rate_standard_error"] == pytest.approx(statistics.stdev(p) / math.sqrt(n), rel=1e-10)
    assert out["length_sd"] == pytest.approx(statistics.stdev(d), rel=1e-12)
    assert out["n"] == n
    json.dumps(out)  # plain Python types
    assert all(type(out[k]) is float for k in ("lc_win_rate", "lc_standard_error", "length_coefficient", "win_rate"))


def test_lc_recovers_the_true_model():
    a, phi = 0.6, 1.5
    p, d = simulate(2, 4000, a, phi, mean_len=250.0)
    out = M.length_controlled_win_rate(p, d)
    se = out["lc_standard_error"]
    assert 0.003 < se < 0.02
    assert abs(out["lc_win_rate"] - sigmoid(a)) < 3 * se
    assert out["length_coefficient"] == pytest.approx(phi, abs=0.25)
    assert out["win_rate"] > sigmoid(a) + 0.05  # longer on average, so the raw rate is inflated


def test_policy_winning_only_by_length_gets_lc_near_half():
    # theta = 0: no better than the reference at equal length, but usually longer (d ~ N(300, 300))
    p, d = simulate(3, 3000, 0.0, 3.0, mean_len=300.0, sd_len=300.0)
    out = M.length_controlled_win_rate(p, d)
    assert out["win_rate"] > 0.75
    assert abs(out["lc_win_rate"] - 0.5) < max(3 * out["lc_standard_error"], 0.01)
    assert abs(out["lc_win_rate"] - 0.5) < 0.05
    assert out["length_coefficient"] > 2.0


def test_lc_swapping_policy_and_reference():
    # AlpacaEval's property win_rate(m, b) = 1 - win_rate(b, m): p -> 1 - p, d -> -d gives LC -> 1 - LC, same phi
    p, d = simulate(4, 500, 0.3, 1.0, tie_frac=0.2)
    fwd, back = M.length_controlled_win_rate(p, d), M.length_controlled_win_rate(1 - p, -d)
    assert back["lc_win_rate"] == pytest.approx(1 - fwd["lc_win_rate"], abs=1e-10)
    assert back["length_coefficient"] == pytest.approx(fwd["length_coefficient"], abs=1e-8)
    assert back["lc_standard_error"] == pytest.approx(fwd["lc_standard_error"], rel=1e-8)
    # a policy against itself (every outcome a tie) scores exactly 1/2
    same = M.length_controlled_win_rate(np.full(50, 0.5), np.random.default_rng(0).normal(0, 50, 50))
    assert same["lc_win_rate"] == pytest.approx(0.5, abs=1e-12)
    assert same["length_coefficient"] == pytest.approx(0.0, abs=1e-12)


def test_lc_accepts_tensors():
    p, d = simulate(5, 200, 0.2, 1.0)
    ref = M.length_controlled_win_rate(p, d)
    out = M.length_controlled_win_rate(torch.tensor(p, dtype=torch.float32), torch.tensor(d.round(), dtype=torch.int64))
    assert out["lc_win_rate"] == pytest.approx(ref["lc_win_rate"], abs=2e-3)  # d rounded to whole tokens


# ------------------------------------------------------------------------------------------------
# standard error


def test_lc_standard_error_is_the_sandwich_by_finite_differences():
    p, d = simulate(6, 300, 0.5, 1.0, tie_frac=0.3)
    out = M.length_controlled_win_rate(p, d)
    X = features(d)
    w = np.array([out["model_coefficient"], out["length_coefficient"]])

    def losses(w):  # per-comparison soft-label loss, [N]
        z = X @ w
        return p * np.logaddexp(0, -z) + (1 - p) * np.logaddexp(0, z)

    h, e = 1e-5, np.eye(2)
    scores = np.stack([(losses(w + h * e[j]) - losses(w - h * e[j])) / (2 * h) for j in range(2)], axis=1)
    hess = np.array(
        [
            [
                (
                    losses(w + h * e[j] + h * e[k]).sum()
                    - losses(w + h * e[j] - h * e[k]).sum()
                    - losses(w - h * e[j] + h * e[k]).sum()
                    + losses(w - h * e[j] - h * e[k]).sum()
                )
                / (4 * h * h)
                for k in range(2)
            ]
            for j in range(2)
        ]
    )
    n = len(p)
    cov = np.linalg.inv(hess) @ (scores.T @ scores) @ np.linalg.inv(hess) * n / (n - 2)
    lc = out["lc_win_rate"]
    assert out["lc_standard_error"] == pytest.approx(lc * (1 - lc) * math.sqrt(cov[0, 0]), rel=1e-4)


@pytest.mark.parametrize("tie_frac", [0.0, 0.4])
def test_lc_standard_error_matches_monte_carlo_spread(tie_frac):
    # The reported SE should be the spread of LC over repeated experiments. With 40% ties the model-based
    # (Fisher) SE would be ~35% too large; the sandwich is not.
    lcs, ses = [], []
    for rep in range(250):
        p, d = simulate(1000 + rep, 400, 0.5, 1.0, tie_frac=tie_frac)
        out = M.length_controlled_win_rate(p, d)
        lcs.append(out["lc_win_rate"])
        ses.append(out["lc_standard_error"])
    ratio = statistics.fmean(ses) / statistics.stdev(lcs)
    assert 0.87 < ratio < 1.13


# ------------------------------------------------------------------------------------------------
# degenerate inputs


def test_lc_zero_length_differences_give_the_raw_win_rate():
    p = [1, 0, 0.5, 1, 1, 0, 0.5, 1]
    for d in ([0] * len(p), [12] * len(p)):  # all equal: the length term is not identifiable
        out = M.length_controlled_win_rate(p, d)
        assert out["fit"] == "no_length_variation"
        assert out["lc_win_rate"] == out["win_rate"] == statistics.fmean(p)
        assert out["length_coefficient"] == 0.0
        assert out["lc_standard_error"] == pytest.approx(statistics.stdev(p) / math.sqrt(len(p)), rel=1e-12)
        assert out["model_coefficient"] == pytest.approx(math.log(0.625 / 0.375), rel=1e-12)
    one = M.length_controlled_win_rate([1.0], [35.0])
    assert one["lc_win_rate"] == 1.0
    assert one["lc_standard_error"] is None
    assert one["model_coefficient"] is None
    json.dumps(one)


@pytest.mark.parametrize("value", [1.0, 0.0])
def test_lc_all_outcomes_equal(value):
    n = 40
    d = np.random.default_rng(7).normal(50, 200, n)
    out = M.length_controlled_win_rate(np.full(n, value), d)
    assert out["fit"] == "all_outcomes_equal"
    assert out["lc_win_rate"] == out["win_rate"] == value
    assert out["length_coefficient"] == 0.0
    assert out["lc_standard_error"] == 0.0
    assert out["model_coefficient"] is None
    if value == 1.0:
        # the documented comparison: AlpacaEval's L1 fit at the C its CV picks here (1e4) has phi = 0 exactly
        # and sigmoid(theta) = 1 - 1/(C N): 1e-4/N below our 1.0
        theta, phi = sklearn_fit(np.full(n, value), d, C=1e4)
        assert phi == 0.0
        assert sigmoid(theta) == pytest.approx(1 - 1 / (1e4 * n), abs=1e-9)
        assert out["lc_win_rate"] - sigmoid(theta) == pytest.approx(1e-4 / n, rel=1e-6)


def test_lc_separated_by_length_uses_alpacaeval_l1_at_c_1e4():
    rng = np.random.default_rng(8)
    d = rng.normal(0, 100, 60)
    cases = [
        (d > 0).astype(float),  # wins exactly when longer
        (d < 30).astype(float),  # wins exactly when not much longer
    ]
    soft = (d > 0).astype(float)
    soft[np.argmin(np.abs(d))] = 0.5  # a tie on the boundary: quasi-separation, the MLE still does not exist
    cases.append(soft)
    for p in cases:
        out = M.length_controlled_win_rate(p, d)
        assert out["fit"] == "separated"
        assert out["lc_standard_error"] is None
        theta, phi = sklearn_fit(p, d, C=M.LC_SEPARATED_L1_C)
        assert out["model_coefficient"] == pytest.approx(theta, rel=1e-6, abs=1e-4)
        assert out["length_coefficient"] == pytest.approx(phi, rel=1e-6, abs=1e-4)
        assert out["lc_win_rate"] == pytest.approx(sigmoid(theta), abs=1e-6)
    # one comparison on the wrong side of the boundary: overlap, so the MLE exists and is used
    p = (d > 0).astype(float)
    p[np.argmax(d)] = 0.0
    out = M.length_controlled_win_rate(p, d)
    assert out["fit"] == "mle"
    theta, phi = scipy_fit(p, d)
    assert out["model_coefficient"] == pytest.approx(theta, abs=1e-4)
    assert out["length_coefficient"] == pytest.approx(phi, abs=1e-4)


def test_lc_l1_solver_matches_liblinear_when_not_separated():
    # the L1 path (proximal Newton with an exact 2-D subproblem) against liblinear, including a C that zeroes phi
    p, d = simulate(9, 200, 0.3, 1.0, tie_frac=0.1)
    X = features(d)
    for C in (0.01, 0.1, 1.0, 1e4):
        ours = M._fit_soft_logistic(X, p, lam=1.0 / (C * len(p)))
        assert ours == pytest.approx(sklearn_fit(p, d, C=C), abs=1e-6)


def test_lc_errors():
    with pytest.raises(ValueError, match="empty"):
        M.length_controlled_win_rate([], [])
    with pytest.raises(ValueError, match="same length"):
        M.length_controlled_win_rate([1, 0], [3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.length_controlled_win_rate([1, 1.5], [3, 4])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.length_controlled_win_rate([1, float("nan")], [3, 4])
    with pytest.raises(ValueError, match="finite"):
        M.length_controlled_win_rate([1, 0], [3, float("inf")])
