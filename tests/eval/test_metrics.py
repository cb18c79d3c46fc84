"""Tests for alignctl.eval.metrics: each metric against an independent computation written here."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections import Counter
from fractions import Fraction

import pytest
import sacrebleu
import torch

from alignctl.eval import metrics as M

# ------------------------------------------------------------------------------------------------
# reward, KL, entropy


def test_reward_stats_matches_statistics_module():
    r = [0.3, -1.2, 2.5, 0.0, 0.7]
    out = M.reward_stats(r)
    assert out["mean"] == pytest.approx(statistics.fmean(r))
    assert out["std"] == pytest.approx(statistics.pstdev(r))
    assert M.reward_stats(r, ddof=1)["std"] == pytest.approx(statistics.stdev(r))
    # tensors of any dtype, with grad, are accepted
    t = torch.tensor(r, dtype=torch.float32, requires_grad=True)
    assert M.reward_stats(t)["mean"] == pytest.approx(statistics.fmean(r), rel=1e-6)
    assert M.reward_stats([4.0]) == {"mean": 4.0, "std": 0.0}


def test_reward_stats_edge_cases():
    with pytest.raises(ValueError, match="empty"):
        M.reward_stats([])
    with pytest.raises(ValueError, match="ddof=1"):
        M.reward_stats([1.0], ddof=1)
    with pytest.raises(ValueError, match="1-D"):
        M.reward_stats([[1.0, 2.0]])


def test_sequence_kl_is_mean_log_ratio():
    pol = [-3.0, -5.5, -1.25]
    ref = [-4.0, -5.0, -2.0]
    expected = ((-3.0 + 4.0) + (-5.5 + 5.0) + (-1.25 + 2.0)) / 3  # = 1.25 / 3
    assert M.sequence_kl(pol, ref) == pytest.approx(expected)
    with pytest.raises(ValueError, match="same length"):
        M.sequence_kl([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        M.sequence_kl([], [])


def test_token_kl_sum_hand_and_padding():
    kl = [[0.1, 0.2, float("nan")], [0.5, float("inf"), float("nan")]]
    mask = [[1, 1, 0], [1, 0, 0]]
    assert M.token_kl_sum(kl, mask) == pytest.approx(((0.1 + 0.2) + 0.5) / 2)
    with pytest.raises(ValueError, match="shape"):
        M.token_kl_sum([[0.1, 0.2]], [[1, 1, 1]])
    with pytest.raises(ValueError, match="2-D"):
        M.token_kl_sum([0.1, 0.2], [1, 1])


def _markov_pair(seed: int, V: int):
    g = torch.Generator().manual_seed(seed)
    init_p = torch.softmax(torch.randn(V, generator=g, dtype=torch.float64), -1)
    trans_p = torch.softmax(torch.randn(V, V, generator=g, dtype=torch.float64), -1)
    init_q = torch.softmax(torch.randn(V, generator=g, dtype=torch.float64), -1)
    trans_q = torch.softmax(torch.randn(V, V, generator=g, dtype=torch.float64), -1)
    return (init_p, trans_p), (init_q, trans_q)


def test_both_kl_estimators_agree_with_exact_sequence_kl():
    """Markov-chain 'LMs' over V=3 tokens, T=3: exact KL by enumerating all 27 sequences vs the estimators."""
    V, T, N = 3, 3, 20000
    (ip, tp), (iq, tq) = _markov_pair(0, V)

    def logprob(seq, init, trans):
        lp = math.log(init[seq[0]])
        for a, b in zip(seq, seq[1:]):
            lp += math.log(trans[a, b])
        return lp

    exact = sum(
        math.exp(logprob(s, ip, tp)) * (logprob(s, ip, tp) - logprob(s, iq, tq))
        for s in itertools.product(range(V), repeat=T)
    )

    g = torch.Generator().manual_seed(1)
    ys = [torch.multinomial(ip.expand(N, V), 1, generator=g).squeeze(1)]
    for _ in range(T - 1):
        ys.append(torch.multinomial(tp[ys[-1]], 1, generator=g).squeeze(1))
    y = torch.stack(ys, 1)  # [N, T]
    pol = ip.log()[y[:, 0]] + tp.log()[y[:, :-1], y[:, 1:]].sum(1)
    ref = iq.log()[y[:, 0]] + tq.log()[y[:, :-1], y[:, 1:]].sum(1)

    def kl_rows(p, q):  # full-vocabulary KL per row
        return (p * (p.log() - q.log())).sum(-1)

    per_tok = torch.stack([kl_rows(ip, iq).expand(N)] + [kl_rows(tp, tq)[y[:, t]] for t in range(T - 1)], 1)

    simple = M.sequence_kl(pol, ref)
    lowvar = M.token_kl_sum(per_tok, torch.ones(N, T))
    se_simple = (pol - ref).std().item() / math.sqrt(N)
    se_lowvar = per_tok.sum(1).std().item() / math.sqrt(N)
    assert exact > 0.05
    assert abs(simple - exact) < 4 * se_simple
    assert abs(lowvar - exact) < 4 * se_lowvar
    assert se_lowvar < se_simple  # the point of the second estimator


def test_mean_token_entropy_pooled_and_ignores_padding():
    h = torch.tensor([[1.0, 2.0, float("nan")], [3.0, float("nan"), float("nan")]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert M.mean_token_entropy(h, mask) == pytest.approx((1.0 + 2.0 + 3.0) / 3)  # pooled, not (1.5 + 3)/2
    # entropy computed from a distribution here, independently
    probs = torch.softmax(torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(0)), -1)
    ent = -(probs * probs.log()).sum(-1)
    manual = sum(-sum(p * math.log(p) for p in probs[i, t].tolist()) for i in range(2) for t in range(4)) / 8
    assert M.mean_token_entropy(ent, torch.ones(2, 4)) == pytest.approx(manual, rel=1e-6)
    with pytest.raises(ValueError, match="no completion token"):
        M.mean_token_entropy(h, torch.zeros(2, 3))


def test_sequence_entropy():
    out = M.sequence_entropy([-3.0, -5.0], [2, 3])
    assert out == pytest.approx({"sequence": 4.0, "per_token": 8.0 / 5.0})
    with pytest.raises(ValueError, match="lengths"):
        M.sequence_entropy([-1.0], [0])


# ------------------------------------------------------------------------------------------------
# diversity


def _distinct_reference(samples, n):
    grams = Counter()
    for s in samples:
        toks = s.split() if isinstance(s, str) else list(s)
        its = itertools.tee(toks, n)
        for i, it in enumerate(its):
            for _ in range(i):
                next(it, None)
        grams.update(zip(*its))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def test_distinct_n_hand_example_is_corpus_level():
    texts = ["the cat the cat", "the  dog\n"]
    assert M.distinct_n(texts, 1) == pytest.approx(3 / 6)  # {the, cat, dog} / 6 tokens
    assert M.distinct_n(texts, 2) == pytest.approx(3 / 4)  # {the cat, cat the, the dog} / 4 bigrams
    # corpus-level: two identical unique-token samples give 1/2, a per-sample mean would give 1
    assert M.distinct_n(["a b", "a b"], 1) == pytest.approx(0.5)
    # n-grams never cross samples
    assert M.distinct_n(["a", "b"], 2) == 0.0


def test_distinct_n_matches_itertools_reference():
    rng = random.Random(0)
    vocab = list("abcdefg")
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 12))) for _ in range(30)]
    ids = [[rng.randrange(5) for _ in range(rng.randint(0, 9))] for _ in range(30)]
    for n in (1, 2, 3):
        assert M.distinct_n(texts, n) == pytest.approx(_distinct_reference(texts, n))
        assert M.distinct_n(ids, n) == pytest.approx(_distinct_reference(ids, n))


def test_distinct_n_edge_cases():
    assert M.distinct_n([], 1) == 0.0
    assert M.distinct_n(["", "   "], 1) == 0.0
    with pytest.raises(ValueError, match="n must be >= 1"):
        M.distinct_n(["a"], 0)
    with pytest.raises(ValueError, match="single string"):
        M.distinct_n("a b c", 1)


def test_self_bleu_identical_and_disjoint():
    s = "the movie was a quiet delight from start to end"
    assert M.self_bleu([[s, s, s]]) == pytest.approx(1.0)
    assert 0.0 <= M.self_bleu([[s, s]]) <= 1.0
    assert M.self_bleu([["alpha beta gamma delta", "one two three four five"]]) == 0.0


def test_self_bleu_hand_computed_bleu4_with_exp_smoothing():
    # a b c d e vs a b c d f: precisions 4/5, 3/4, 2/3, 1/2; equal lengths so BP = 1.
    b1 = (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert M.self_bleu([["a b c d e", "a b c d f"]]) == pytest.approx(b1)
    # a b c x d vs a b c y d: 4/5, 2/4, 1/3, 0/2 -> 'exp' smoothing replaces the zero by 1/(2 * 2).
    b2 = (4 / 5 * 2 / 4 * 1 / 3 * (1 / (2 * 2))) ** 0.25
    assert M.self_bleu([["a b c x d", "a b c y d"]]) == pytest.approx(b2)
    # 'floor' smoothing (0.1/2) would give a different number: the test pins the choice
    assert b2 != pytest.approx((4 / 5 * 2 / 4 * 1 / 3 * 0.05) ** 0.25)


def test_self_bleu_matches_sacrebleu_and_pools_over_samples():
    g1 = ["the film was great and fun", "the film was dull", "a great and fun film"]
    g2 = ["i loved the acting", "i hated the acting"]
    direct = [sacrebleu.sentence_bleu(h, [r for r in g if r is not h]).score / 100 for g in (g1, g2) for h in g]
    assert M.self_bleu([g1, g2]) == pytest.approx(sum(direct) / 5)  # pooled over 5 samples
    pair = [sacrebleu.sentence_bleu(g2[0], [g2[1]]).score, sacrebleu.sentence_bleu(g2[1], [g2[0]]).score]
    assert M.self_bleu([g2]) == pytest.approx(sum(pair) / 100 / 2)
    # single-sample groups are skipped
    assert M.self_bleu([["lonely sample"], g2, []]) == pytest.approx(M.self_bleu([g2]))


def test_self_bleu_edge_cases():
    with pytest.raises(ValueError, match="two or more samples"):
        M.self_bleu([["only one"], []])
    with pytest.raises(ValueError, match="two or more samples"):
        M.self_bleu([])
    with pytest.raises(ValueError, match="list of strings"):
        M.self_bleu(["not a group", "another"])


# ------------------------------------------------------------------------------------------------
# implicit-reward classifier


def test_preference_probabilities_and_accuracy():
    chosen, rejected = [2.0, 0.0, -1.0, 1000.0, -1000.0], [1.0, 0.0, 0.5, -1000.0, 1000.0]
    p = M.preference_probabilities(chosen, rejected)
    by_hand = [1 / (1 + math.exp(-(c - r))) if c - r > -700 else 0.0 for c, r in zip(chosen, rejected)]
    assert p == pytest.approx(by_hand)
    assert p[1] == 0.5 and p[3] == 1.0 and p[4] == 0.0
    # strict > by default (TRL's rewards/accuracies); ties earn tie_credit
    q = [0.9, 0.5, 0.2, 0.7]
    assert M.preference_accuracy(q) == pytest.approx(2 / 4)
    assert M.preference_accuracy(q, tie_credit=0.5) == pytest.approx(2.5 / 4)
    assert M.preference_accuracy(q, tie_credit=1.0) == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.preference_accuracy([0.2, 1.5])
    with pytest.raises(ValueError, match="empty"):
        M.preference_accuracy([])
    with pytest.raises(ValueError, match="same length"):
        M.preference_probabilities([1.0], [1.0, 2.0])


def test_ece_hand_computed():
    p = [0.95, 0.05, 0.85, 0.3, 0.5, 0.62, 1.0, 0.0]
    # conf    0.95  0.95  0.85  0.7  0.5  0.62  1.0  1.0
    # correct 1     0     1     0    1    1     1    0
    # bin 5 [.5,.6): {0.5:1}          gap |1 - 0.5|   = 0.5
    # bin 6 [.6,.7): {0.62:1}         gap |1 - 0.62|  = 0.38
    # bin 7 [.7,.8): {0.7:0}          gap |0 - 0.7|   = 0.7   (edge 0.7 belongs to the bin it starts)
    # bin 8 [.8,.9): {0.85:1}         gap |1 - 0.85|  = 0.15
    # bin 9 [.9,1]:  {.95:1,.95:0,1:1,1:0}  acc 0.5, conf 0.975, gap 0.475, n = 4
    expected = (0.5 + 0.38 + 0.7 + 0.15 + 4 * 0.475) / 8  # = 0.45375
    assert M.expected_calibration_error(p) == pytest.approx(expected)
    d = M.reliability_diagram(p)
    assert d["counts"] == [0, 0, 0, 0, 0, 1, 1, 1, 1, 4]
    assert d["accuracy"][:5] == [None] * 5 and d["confidence"][:5] == [None] * 5
    assert d["accuracy"][5:] == pytest.approx([1.0, 1.0, 0.0, 1.0, 0.5])
    assert d["confidence"][5:] == pytest.approx([0.5, 0.62, 0.7, 0.85, 0.975])
    assert d["edges"] == pytest.approx([b / 10 for b in range(11)])
    assert d["n"] == 8 and d["ece"] == pytest.approx(expected)


def test_ece_perfectly_calibrated_is_zero_and_overconfident_is_gap():
    assert M.expected_calibration_error([0.75, 0.75, 0.75, 0.25]) == pytest.approx(0.0)
    assert M.expected_calibration_error([0.99, 0.01]) == pytest.approx(abs(0.5 - 0.99))
    # all ties: conf 0.5, correct (p >= 1/2) -> |1 - 0.5|
    assert M.expected_calibration_error([0.5, 0.5]) == pytest.approx(0.5)


def test_ece_matches_loop_reference_on_random_p():
    rng = random.Random(3)
    p = [rng.random() for _ in range(500)]
    for n_bins in (1, 7, 10, 15):
        bins: dict[int, list[tuple[float, float]]] = {}
        for x in p:
            conf = max(x, 1 - x)
            b = min(math.floor(conf * n_bins), n_bins - 1)
            bins.setdefault(b, []).append((1.0 if x >= 0.5 else 0.0, conf))
        ref = sum(len(v) / len(p) * abs(sum(a for a, _ in v) / len(v) - sum(c for _, c in v) / len(v))
                  for v in bins.values())
        assert M.expected_calibration_error(p, n_bins=n_bins) == pytest.approx(ref)
        d = M.reliability_diagram(p, n_bins=n_bins)
        assert sum(d["counts"]) == len(p)
        weighted_acc = sum(c * a for c, a in zip(d["counts"], d["accuracy"]) if c) / len(p)
        assert weighted_acc == pytest.approx(sum(x >= 0.5 for x in p) / len(p))


def test_ece_edge_cases():
    with pytest.raises(ValueError, match="empty"):
        M.expected_calibration_error([])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.expected_calibration_error([0.5, float("nan")])
    with pytest.raises(ValueError, match="n_bins"):
        M.reliability_diagram([0.5], n_bins=0)


def test_plot_reliability_writes_png(tmp_path):
    d = M.reliability_diagram([0.95, 0.05, 0.85, 0.3, 0.5, 0.62, 1.0, 0.0])
    out = M.plot_reliability(d, tmp_path / "sub" / "reliability.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with pytest.raises(ValueError, match="lacks"):
        M.plot_reliability({"counts": []}, tmp_path / "x.png")


# ------------------------------------------------------------------------------------------------
# win rate and pass@k


def test_win_rate():
    assert M.win_rate([1, 2, 3, 4], [0, 2, 5, 4]) == pytest.approx((1 + 0.5 * 2) / 4)
    rng = random.Random(1)
    a = [rng.choice([0.0, 0.5, 1.0]) for _ in range(200)]
    b = [rng.choice([0.0, 0.5, 1.0]) for _ in range(200)]
    ref = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(a, b)) / 200
    assert M.win_rate(a, b) == pytest.approx(ref)
    assert M.win_rate(a, a) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same length"):
        M.win_rate([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        M.win_rate([], [])
    with pytest.raises(ValueError, match="NaN"):
        M.win_rate([float("nan")], [1.0])


def test_pass_at_k_spec_check():
    assert M.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert M.pass_at_k(10, 3, 5) == pytest.approx(11 / 12)


def test_pass_at_k_brute_force_subsets():
    for n in range(1, 8):
        for c in range(n + 1):
            items = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                brute = sum(any(items[i] for i in s) for s in subsets) / len(subsets)
                assert M.pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_large_n_is_stable():
    n, c, k = 2000, 7, 100
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert M.pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)
    assert M.pass_at_k(5000, 1, 1) == pytest.approx(1 / 5000)
    assert M.pass_at_k(5, 0, 3) == 0.0 and M.pass_at_k(5, 5, 1) == 1.0


def test_pass_at_k_edge_cases_and_mean():
    with pytest.raises(ValueError, match="k <= n"):
        M.pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="k <= n"):
        M.pass_at_k(3, 1, 0)
    with pytest.raises(ValueError, match="c <= n"):
        M.pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="integer"):
        M.pass_at_k(3.5, 1, 1)
    assert M.mean_pass_at_k([(10, 3), (10, 0), (4, 4)], 1) == pytest.approx((0.3 + 0.0 + 1.0) / 3)
    with pytest.raises(ValueError, match="no problems"):
        M.mean_pass_at_k([], 1)
