"""Evaluation metrics for `alignctl eval` (objectives.md section 12), as pure functions.

Inputs are plain Python numbers/lists, numpy arrays or torch tensors (any dtype, any device; they are
detached and computed on CPU in float64); outputs are Python floats, lists and dicts, ready for JSON.
No models, tokenizers or config objects: the sampler computes log-probs, entropies and rewards and
passes them here. Shapes use TRL's names: N = number of samples (or pairs, or prompts), T = completion
length (padded; `mask` marks the real completion tokens).

Conventions for empty or degenerate input, chosen once for the whole module:
- A metric that is a mean over samples raises ValueError on empty input (a mean of nothing is not 0).
- `distinct_n` is the exception the spec asks for: it returns 0.0 when there are no n-grams at all.
- Mismatched shapes/lengths and out-of-range values (probabilities outside [0, 1], c > n in pass@k)
  raise ValueError naming the argument.
- `pearson` returns None when either side is constant (r = 0/0). `length_controlled_win_rate` names its
  degenerate cases (no length variation, all outcomes equal, separation by length) in its `fit` field.

| function                   | definition                                                            |
|----------------------------|-----------------------------------------------------------------------|
| reward_stats               | mean and std (ddof=0 by default) of r(x, y)                           |
| sequence_kl                | mean_i (l_theta(y_i) - l_ref(y_i)), y_i ~ pi_theta                    |
| token_kl_sum               | mean_i sum_t KL_t(pi_theta || pi_ref) along the sampled y_i           |
| mean_token_entropy         | sum_{i,t} H_{i,t} / (number of completion tokens), pooled             |
| sequence_entropy           | -mean_i l_theta(y_i) and its per-token version -sum_i l / sum_i |y_i|  |
| distinct_n                 | corpus-level unique n-grams / total n-grams over whitespace tokens    |
| self_bleu                  | mean over samples of sentence BLEU-4 (sacrebleu, 'exp' smoothing) vs  |
|                            | the other samples of the same prompt, in [0, 1]                       |
| preference_probabilities   | p_i = sigmoid(chosen_i - rejected_i)                                  |
| preference_accuracy        | mean 1[p > 1/2] (+ tie_credit for p == 1/2)                           |
| expected_calibration_error | sum_b (n_b/n) |acc_b - conf_b|, conf = max(p, 1-p), correct=1[p>=1/2]|
| reliability_diagram        | per-bin counts, accuracies, confidences (+ ece)                       |
| win_rate                   | (wins + ties/2) / N, paired per prompt                                |
| best_of_n_win_rate         | win_rate of each prompt's best of n samples vs the baseline's best    |
| pass_at_k, mean_pass_at_k  | 1 - C(n-c, k)/C(n, k), averaged over problems                         |
| length_stats               | mean and median (mean of the two middle values for even N) of lengths |
| pearson                    | Pearson r of x and y (e.g. reward vs length); None if a side is const |
| length_controlled_win_rate | sigmoid(theta), (theta, phi) the soft-label logistic MLE of           |
|                            | P(win_i) = sigmoid(theta + phi tanh(d_i / std(d))), d = policy - ref  |
|                            | length: AlpacaEval 2's LC win rate without the difficulty term        |
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

# --------------------------------------------------------------------------------------------------
# input helpers


def _tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64)
    try:
        return torch.as_tensor(x, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{name} must be numeric (a list, array or tensor of numbers): {e}") from None


def _vec(x: Any, name: str) -> torch.Tensor:
    """1-D, non-empty, float64 on CPU."""
    t = _tensor(x, name)
    if t.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per sample), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty: the metric is a mean over samples and needs at least one")
    return t


def _pair(a: Any, b: Any, name_a: str, name_b: str) -> tuple[torch.Tensor, torch.Tensor]:
    ta, tb = _vec(a, name_a), _vec(b, name_b)
    if ta.shape != tb.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same length, got {ta.numel()} and {tb.numel()}")
    return ta, tb


def _masked(values: Any, mask: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, T] float64 values with masked-out positions set to 0 (so NaN/inf padding is ignored), bool mask."""
    v = _tensor(values, name)
    m = mask.detach().cpu() if isinstance(mask, torch.Tensor) else torch.as_tensor(mask)
    if v.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, T], got shape {tuple(v.shape)}")
    if m.shape != v.shape:
        raise ValueError(f"mask must have the shape of {name} {tuple(v.shape)}, got {tuple(m.shape)}")
    if v.shape[0] == 0:
        raise ValueError(f"{name} has no samples (N = 0)")
    m = m != 0
    return torch.where(m, v, torch.zeros((), dtype=v.dtype)), m


def _probs(p: Any) -> torch.Tensor:
    t = _vec(p, "p")
    if not bool(torch.all((t >= 0.0) & (t <= 1.0))):  # also rejects NaN
        raise ValueError("p must hold probabilities in [0, 1] (no NaN)")
    return t


def _count(x: Any, name: str) -> int:
    try:
        return operator.index(x)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {x!r}") from None


# --------------------------------------------------------------------------------------------------
# reward, KL, entropy


def reward_stats(rewards: Any, ddof: int = 0) -> dict[str, float]:
    """Mean and standard deviation of the rewards r_phi(x, y) of the samples.

    std = sqrt(sum_i (r_i - mean)^2 / (N - ddof)); ddof=0 (population std, defined for N = 1) by default,
    ddof=1 for the sample std (what torch.std and TRL's `reward_std` use). Raises ValueError if N <= ddof.
    """
    r = _vec(rewards, "rewards")
    if r.numel() <= ddof:
        raise ValueError(f"reward_stats with ddof={ddof} needs more than {ddof} reward(s), got {r.numel()}")
    return {"mean": r.mean().item(), "std": r.std(correction=ddof).item()}


def sequence_kl(policy_logps: Any, ref_logps: Any) -> float:
    """Simple unbiased estimate of the sequence KL(pi_theta || pi_ref) from samples y_i ~ pi_theta (T = 1).

    KL_hat = (1/N) sum_i [l_theta(y_i) - l_ref(y_i)], with l = sum of completion-token log-probs
    (`policy_logps`, `ref_logps`: [N] sequence sums). A single estimate can be negative.
    """
    pol, ref = _pair(policy_logps, ref_logps, "policy_logps", "ref_logps")
    return (pol - ref).mean().item()


def token_kl_sum(per_token_kl: Any, mask: Any) -> float:
    """Lower-variance estimate of the sequence KL(pi_theta || pi_ref) from samples y_i ~ pi_theta.

    KL_hat = (1/N) sum_i sum_t mask_{i,t} KL_t(pi_theta || pi_ref)(s_{i,t}), where KL_t is the exact
    full-vocabulary KL at each prefix of the sampled trajectory (`per_token_kl`: [N, T]; `mask`: [N, T],
    nonzero on completion tokens; masked positions are ignored even if NaN). Same expectation as
    `sequence_kl` (chain rule of KL), lower variance.
    """
    kl, _ = _masked(per_token_kl, mask, "per_token_kl")
    return kl.sum(dim=1).mean().item()


def mean_token_entropy(per_token_entropy: Any, mask: Any) -> float:
    """Mean predictive entropy per completion token, pooled over all completion tokens of all samples.

    H_bar = sum_{i,t} mask_{i,t} H_{i,t} / sum_{i,t} mask_{i,t}, H_{i,t} = -sum_v pi(v|s_{i,t}) log pi(v|s_{i,t})
    (TRL's fused `entropy` field; [N, T]). Pooled, so longer samples weigh more (not a mean of per-sample
    means). Raises ValueError when the mask selects no token.
    """
    h, m = _masked(per_token_entropy, mask, "per_token_entropy")
    n_tokens = int(m.sum())
    if n_tokens == 0:
        raise ValueError("mean_token_entropy: mask selects no completion token")
    return (h.sum() / n_tokens).item()


def sequence_entropy(policy_logps: Any, lengths: Any) -> dict[str, float]:
    """Sampled estimates of the policy's entropy from y_i ~ pi_theta (T = 1).

    sequence  = -(1/N) sum_i l_theta(y_i)              (estimates the sequence entropy H(pi_theta(.|x)))
    per_token = -sum_i l_theta(y_i) / sum_i |y_i|      (pooled, comparable to `mean_token_entropy`)
    `policy_logps`: [N] sequence sums; `lengths`: [N] completion token counts (total must be > 0).
    """
    lp, n = _pair(policy_logps, lengths, "policy_logps", "lengths")
    if bool(torch.any(n < 0)) or n.sum().item() <= 0:
        raise ValueError("lengths must be non-negative with a positive total")
    return {"sequence": (-lp.mean()).item(), "per_token": (-lp.sum() / n.sum()).item()}


# --------------------------------------------------------------------------------------------------
# diversity


def distinct_n(samples: Sequence[str] | Sequence[Sequence[Any]], n: int) -> float:
    """distinct-n, corpus-level: |unique n-grams| / |n-grams| pooled over all samples given (n = 1, 2).

    A sample is a string (split on whitespace) or a sequence of hashable tokens (e.g. token ids).
    n-grams never cross sample boundaries. Corpus-level: pass one prompt's samples for a per-prompt
    value and average those yourself. Returns 0.0 when there are no n-grams (no samples, or all
    samples shorter than n).
    """
    n = _count(n, "n")
    if n < 1:
        raise ValueError(f"distinct_n: n must be >= 1, got {n}")
    if isinstance(samples, str):
        raise ValueError("distinct_n expects a list of samples, got a single string")
    seen: set[tuple[Any, ...]] = set()
    total = 0
    for s in samples:
        tokens = s.split() if isinstance(s, str) else list(s)
        for i in range(len(tokens) - n + 1):
            seen.add(tuple(tokens[i : i + n]))
            total += 1
    return len(seen) / total if total else 0.0


# sacrebleu's sentence_bleu defaults, fixed here so the number means one thing.
SELF_BLEU_SETTINGS = {"smooth_method": "exp", "tokenize": "13a", "lowercase": False, "effective_order": True}


def self_bleu(groups: Sequence[Sequence[str]]) -> float:
    """Self-BLEU in [0, 1] (lower = more diverse).

    For every sample y_j of a prompt with samples {y_1..y_K}, K >= 2: BLEU-4 of y_j against the other K-1
    samples as references (sacrebleu sentence BLEU, smoothing 'exp' = Chen & Cherry 2014 method 3 as in
    mteval-v13a, tokenizer '13a', case-sensitive, effective order: samples shorter than 4 tokens are
    scored with the orders they have; no matching unigram gives exactly 0). The result is the mean over
    all such samples pooled across prompts (not a mean of per-prompt means), divided by 100.
    Groups with a single sample are skipped; raises ValueError if no group has two or more samples.
    """
    from sacrebleu.metrics import BLEU  # lazy: keep `import alignctl.eval.metrics` light

    if isinstance(groups, str):
        raise ValueError("self_bleu expects a list of groups (one list of strings per prompt)")
    bleu = BLEU(force=False, **SELF_BLEU_SETTINGS)
    scores: list[float] = []
    for g, group in enumerate(groups):
        if isinstance(group, str) or not all(isinstance(s, str) for s in group):
            raise ValueError(f"self_bleu: group {g} must be a list of strings")
        if len(group) < 2:
            continue
        for j, hyp in enumerate(group):
            refs = [s for k, s in enumerate(group) if k != j]
            # sacrebleu's 0-100 score can exceed 100 by float rounding (100.00000000000004): clip.
            scores.append(min(1.0, max(0.0, bleu.sentence_score(hyp, refs).score / 100.0)))
    if not scores:
        raise ValueError("self_bleu needs at least one group (prompt) with two or more samples")
    return math.fsum(scores) / len(scores)


# --------------------------------------------------------------------------------------------------
# implicit-reward classifier: accuracy and calibration


def preference_probabilities(chosen_rewards: Any, rejected_rewards: Any) -> list[float]:
    """p_i = sigmoid(chosen_i - rejected_i), computed in float64.

    The rewards are the implicit rewards with beta already applied, as TRL logs them:
    beta*g(u) with g = h = l_theta - l_ref for DPO, g = f' for f-DPO, TDPO's logits. [N] each.
    """
    c, r = _pair(chosen_rewards, rejected_rewards, "chosen_rewards", "rejected_rewards")
    return torch.sigmoid(c - r).tolist()


def preference_accuracy(p: Any, tie_credit: float = 0.0) -> float:
    """Reward accuracy: fraction of pairs with p > 1/2, i.e. chosen reward > rejected reward.

    Ties (p == 1/2 exactly, e.g. at initialisation where policy == reference) get `tie_credit`:
    0.0 by default, which matches TRL's `rewards/accuracies` (strict >); 0.5 counts them as coin flips.
    Note the ECE below counts a tie as correct (spec: correct = 1[p >= 1/2]).
    """
    t = _probs(p)
    if not 0.0 <= tie_credit <= 1.0:
        raise ValueError(f"tie_credit must lie in [0, 1], got {tie_credit}")
    return ((t > 0.5).sum().item() + tie_credit * (t == 0.5).sum().item()) / t.numel()


def reliability_diagram(p: Any, n_bins: int = 10) -> dict[str, Any]:
    """Per-bin statistics of the implicit-reward classifier (spec section 12).

    conf_i = max(p_i, 1 - p_i), correct_i = 1[p_i >= 1/2]. Bins: n_bins equal-width bins over [0, 1] with
    edges e_b = b/n_bins; bin b holds e_b <= conf < e_{b+1}, and the last bin is closed (holds 1.0).
    Since conf >= 1/2, bins below 1/2 are always empty; conf = 1/2 falls in the bin starting at 0.5.
    Returns lists of length n_bins: `counts` n_b, `accuracy` acc_b = mean correct, `confidence`
    conf_b = mean conf (None for empty bins), plus `edges` (n_bins + 1), `n` and `ece`.
    """
    n_bins = _count(n_bins, "n_bins")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    t = _probs(p)
    conf = torch.maximum(t, 1.0 - t)
    correct = (t >= 0.5).to(torch.float64)
    edges = [b / n_bins for b in range(n_bins + 1)]
    # right=True: index = number of inner edges <= conf, so conf == e_b goes to bin b; 1.0 > all inner edges.
    idx = torch.searchsorted(torch.tensor(edges[1:-1], dtype=torch.float64), conf, right=True)
    counts = torch.bincount(idx, minlength=n_bins)
    acc_sum = torch.bincount(idx, weights=correct, minlength=n_bins)
    conf_sum = torch.bincount(idx, weights=conf, minlength=n_bins)
    n = t.numel()
    accuracy: list[float | None] = []
    confidence: list[float | None] = []
    ece = 0.0
    for b in range(n_bins):
        nb = int(counts[b])
        if nb == 0:
            accuracy.append(None)
            confidence.append(None)
            continue
        acc_b, conf_b = acc_sum[b].item() / nb, conf_sum[b].item() / nb
        accuracy.append(acc_b)
        confidence.append(conf_b)
        ece += nb / n * abs(acc_b - conf_b)
    return {
        "edges": edges,
        "counts": [int(c) for c in counts],
        "accuracy": accuracy,
        "confidence": confidence,
        "n": n,
        "ece": ece,
    }


def expected_calibration_error(p: Any, n_bins: int = 10) -> float:
    """ECE = sum_b (n_b/n) |acc_b - conf_b| with conf = max(p, 1-p), correct = 1[p >= 1/2].

    Equal-width bins over [0, 1], left-closed, last bin closed at 1.0 (see `reliability_diagram`).
    """
    return reliability_diagram(p, n_bins)["ece"]


def plot_reliability(diagram: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Write the reliability diagram from `reliability_diagram` as a PNG (matplotlib Agg, no pyplot state).

    Bars: accuracy per non-empty bin (count above each bar); dots: mean confidence; dashed: the diagonal.
    Creates missing parent directories; returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    missing = {"edges", "counts", "accuracy", "confidence"} - set(diagram)
    if missing:
        raise ValueError(f"plot_reliability: diagram lacks {sorted(missing)}; build it with reliability_diagram")
    edges, counts = diagram["edges"], diagram["counts"]
    width = edges[1] - edges[0]
    full = [b for b, c in enumerate(counts) if c]
    fig = Figure(figsize=(4.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    left = 0.5 if all(c == 0 for b, c in enumerate(counts) if edges[b + 1] <= 0.5) else 0.0
    ax.plot([left, 1.0], [left, 1.0], "--", color="gray", lw=1, label="perfect calibration")
    xs = [edges[b] + width / 2 for b in full]
    accs = [diagram["accuracy"][b] for b in full]
    ax.bar(xs, accs, width=width, edgecolor="black", color="tab:blue", alpha=0.7, label="accuracy")
    ax.plot(xs, [diagram["confidence"][b] for b in full], "o", color="tab:red", label="mean confidence")
    for x, a, b in zip(xs, accs, full):
        ax.annotate(str(counts[b]), (x, a), ha="center", va="bottom", fontsize=7)
    ax.set_xlim(left, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("confidence max(p, 1 - p)")
    ax.set_ylabel("accuracy 1[p >= 1/2]")
    if title is None and "ece" in diagram:
        title = f"ECE = {diagram['ece']:.4f} (n = {diagram.get('n', sum(counts))})"
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out


# --------------------------------------------------------------------------------------------------
# win rate and pass@k


def win_rate(policy_rewards: Any, baseline_rewards: Any) -> float:
    """Paired win rate against a baseline under a judge/reward: (wins + ties/2) / N.

    policy_rewards[i] and baseline_rewards[i] score the two completions for prompt i ([N] each); a win is
    policy > baseline, a tie is exact equality. (Order randomisation belongs to a pairwise judge, not here.)
    """
    pol, base = _pair(policy_rewards, baseline_rewards, "policy_rewards", "baseline_rewards")
    if bool(torch.isnan(pol).any() | torch.isnan(base).any()):
        raise ValueError("win_rate: rewards contain NaN")
    wins = (pol > base).sum().item()
    ties = (pol == base).sum().item()
    return (wins + 0.5 * ties) / pol.numel()


def best_of_n_win_rate(policy_rewards: Any, baseline_rewards: Any, n: int) -> float:
    """InfAlign's best-of-N win rate: rewards grouped by prompt (n consecutive samples each, [P * n] per side); the
    best of each prompt's n policy samples against the best of its n baseline samples, as `win_rate`."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    pol, base = _pair(policy_rewards, baseline_rewards, "policy_rewards", "baseline_rewards")
    if pol.numel() % n:
        raise ValueError(f"policy_rewards has {pol.numel()} values, not a multiple of n={n} (n per prompt)")
    return win_rate(pol.view(-1, n).max(1).values, base.view(-1, n).max(1).values)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), n samples of which c are correct.

    Computed stably as 1 - prod_{i=n-c+1}^{n} (1 - k/i) (no large binomials). Requires 0 <= c <= n and
    1 <= k <= n. Example: n=10, c=3 gives pass@1 = 0.3, pass@5 = 11/12.
    """
    n, c, k = _count(n, "n"), _count(c, "c"), _count(k, "k")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n (draw at least k samples), got n={n}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """Mean of pass_at_k(n, c, k) over problems given as (n, c) pairs; raises ValueError if empty."""
    values = [pass_at_k(n, c, k) for n, c in counts]
    if not values:
        raise ValueError("mean_pass_at_k: no problems given")
    return math.fsum(values) / len(values)


# --------------------------------------------------------------------------------------------------
# length: statistics, correlation with reward, length-controlled win rate


def length_stats(lengths: Any) -> dict[str, float]:
    """Mean and median of completion lengths ([N]; tokens or characters, the caller decides).

    median = the middle of the sorted lengths, or the mean of the two middle ones when N is even (as
    `statistics.median`; not `torch.median`, which returns the lower one). Lengths must be finite and >= 0.
    """
    t = _vec(lengths, "lengths")
    if not bool(torch.all(torch.isfinite(t) & (t >= 0))):
        raise ValueError("lengths must be finite and non-negative (no NaN)")
    s = torch.sort(t).values
    mid = s.numel() // 2
    median = s[mid].item() if s.numel() % 2 else (s[mid - 1].item() + s[mid].item()) / 2
    return {"mean": t.mean().item(), "median": median}


def pearson(x: Any, y: Any) -> float | None:
    """Pearson correlation r = sum_i dx_i dy_i / sqrt(sum_i dx_i^2 * sum_i dy_i^2), dx = x - mean(x), dy likewise.

    For the correlation between reward and length: pearson(rewards, lengths). Returns None when either side is
    constant (all values exactly equal, N = 1 included): r is 0/0 there. Clipped to [-1, 1] against rounding.
    Raises ValueError on empty or non-finite input and when x and y differ in length.
    """
    tx, ty = _pair(x, y, "x", "y")
    if not bool(torch.all(torch.isfinite(tx)) & torch.all(torch.isfinite(ty))):
        raise ValueError("pearson: x and y must be finite (no NaN or inf)")
    # Exact test, not sum(dx^2) == 0: the float mean of a constant vector can differ from it in the last bit.
    if tx.min() == tx.max() or ty.min() == ty.max():
        return None
    dx, dy = tx - tx.mean(), ty - ty.mean()
    r = (dx * dy).sum() / (torch.sqrt((dx * dx).sum()) * torch.sqrt((dy * dy).sum()))
    return min(1.0, max(-1.0, r.item()))


# AlpacaEval fits its GLM with sklearn's LogisticRegressionCV (L1, liblinear, C picked by 5-fold CV from
# Cs = np.logspace(-4, 4, 10)); 1e4 is the largest C of that grid, the one its CV picks when every held-out
# fold is separated too (always when all outcomes are wins). Used here only when the MLE does not exist.
LC_SEPARATED_L1_C = 1e4


def _glm_objective(w: Any, X: Any, p: Any, lam: float) -> float:
    """Mean soft-label logistic loss + lam * |w|_1 (numpy arrays, float64)."""
    import numpy as np

    z = X @ w
    return float(np.mean(p * np.logaddexp(0.0, -z) + (1.0 - p) * np.logaddexp(0.0, z)) + lam * np.abs(w).sum())


def _lasso_qp_2d(H: Any, b: Any, lam: float) -> Any:
    """argmin_z 0.5 z'Hz + b'z + lam |z|_1 for a 2x2 positive definite H, exactly: the minimiser lies on one of
    the faces (support, signs); solve each face in closed form and keep the sign-consistent one of least value."""
    import numpy as np

    def value(z: Any) -> float:
        return float(0.5 * z @ H @ z + b @ z + lam * np.abs(z).sum())

    best, best_val = np.zeros(2), 0.0
    for support in ((0,), (1,), (0, 1)):
        idx = list(support)
        for signs in itertools.product((-1.0, 1.0), repeat=len(idx)):
            s = np.array(signs)
            z = np.zeros(2)
            try:
                z[idx] = -np.linalg.solve(H[np.ix_(idx, idx)], b[idx] + lam * s)
            except np.linalg.LinAlgError:
                continue
            if np.all(np.sign(z[idx]) == s) and (v := value(z)) < best_val:
                best, best_val = z, v
    return best


def _fit_soft_logistic(X: Any, p: Any, lam: float = 0.0) -> Any:
    """w minimising mean_i [p_i softplus(-x_i w) + (1 - p_i) softplus(x_i w)] + lam |w|_1, for 2 features.

    Proximal Newton (liblinear's newGLMNET scheme for L1 logistic regression) with the 2-D subproblem solved
    exactly and an Armijo line search; with lam = 0 it is plain damped Newton (IRLS). Converges to the unique
    minimiser when X has full rank and either lam > 0 or the data overlap (the MLE exists).
    """
    import numpy as np

    n = X.shape[0]
    w = np.zeros(2)
    f = _glm_objective(w, X, p, lam)
    for _ in range(100):
        q = np.exp(-np.logaddexp(0.0, -(X @ w)))  # sigmoid, as AlpacaEval's _logistic
        g = X.T @ (q - p) / n
        H = (X * (q * (1.0 - q))[:, None]).T @ X / n
        H = H + np.eye(2) * 1e-14 * max(1.0, float(np.trace(H)))  # keeps a saturated H invertible
        z = w - np.linalg.solve(H, g) if lam == 0.0 else _lasso_qp_2d(H, g - H @ w, lam)
        step = z - w
        decrease = float(g @ step + lam * (np.abs(z).sum() - np.abs(w).sum()))  # < 0 unless optimal
        if decrease >= -1e-28:
            break
        alpha = 1.0
        while alpha >= 2.0**-30:
            w_new = w + alpha * step
            f_new = _glm_objective(w_new, X, p, lam)
            if f_new <= f + 1e-4 * alpha * decrease:
                break
            alpha *= 0.5
        else:
            break  # no decrease representable in float64 any more: converged to rounding
        w, f = w_new, f_new
        if np.max(np.abs(alpha * step)) <= 1e-10 * (1.0 + np.max(np.abs(w))):
            break  # the remaining error is below the last (quadratically shrinking) step
    return w


def length_controlled_win_rate(outcomes: Any, length_diffs: Any) -> dict[str, Any]:
    """Length-controlled (LC) win rate: AlpacaEval 2's GLM without the instruction-difficulty term.

    outcomes[i] in [0, 1]: the judge's preference for the policy in comparison i (1 policy wins, 0 it loses,
    0.5 tie, anything between for soft judges); length_diffs[i] = len(policy output) - len(reference output)
    (tokens or characters, the caller decides; AlpacaEval uses characters). [N] each.

    Model, fitted by maximum likelihood with soft labels (the cross-entropy of sigmoid(eta_i) against p_i, which
    is what AlpacaEval's trick computes: each comparison twice, as a win with sample weight p_i and as a loss
    with weight 1 - p_i, so a tie is half a win and half a loss):
        P(policy beats reference | i) = sigmoid(eta_i),  eta_i = theta + phi * tanh(d_i / sd),
        sd = std(d, ddof=1)  (not centred: d = 0 stays 0),
    and LC = sigmoid(theta), the predicted win rate with the length difference set to zero. Returns fractions:
    `lc_win_rate`, `lc_standard_error`, `win_rate` (mean of outcomes) and `win_rate_standard_error`
    (std(outcomes, ddof=1)/sqrt(N), AlpacaEval's `standard_error`; None for N = 1), `length_coefficient` phi
    (> 0: the judge prefers the longer output), `model_coefficient` theta (None where infinite), `length_sd`
    sd (None for N = 1), `n` and `fit`. The fit is Newton's method (IRLS) in float64 to convergence.

    lc_standard_error is a delta-method SE, LC (1 - LC) SE(theta), with SE(theta) from the
    heteroskedasticity-robust (HC1) sandwich H^-1 [sum_i (p_i - q_i)^2 x_i x_i'] H^-1 * N/(N - 2),
    H = sum_i q_i (1 - q_i) x_i x_i', x_i = (1, tanh(d_i/sd)), q_i the fitted probabilities. Robust because
    soft labels are not Bernoulli draws (ties make the model-based SE too large); with no length term the
    same formula is exactly win_rate_standard_error. It treats sd as fixed. None when N <= 2 or separated.

    `fit` names the case taken; degenerate inputs are handled deliberately:
    - "mle": the usual case, the unpenalised maximum-likelihood fit.
    - "no_length_variation": all length differences equal (all zero included) or N = 1: phi is not
      identifiable (tanh(d/sd) is constant or undefined), so the model is sigmoid(theta) alone, whose fit is the
      raw mean: LC = win_rate, phi = 0.0, SE = win_rate_standard_error. (AlpacaEval would divide by sd = 0.)
    - "all_outcomes_equal": every outcome 1 (or every outcome 0), lengths varying: the MLE does not exist
      (theta -> +-inf). We return the limit: LC = win_rate (1.0 or 0.0), phi = 0.0, SE = 0.0, theta None.
      AlpacaEval's fit on all wins gives the same phi (exactly 0: its L1 optimality condition holds because
      |mean tanh| < 1) and LC = 1 - 1/(1e4 N), since its CV then picks C = 1e4 and the L1 optimum has
      sigmoid(-theta) = 1/(C N): a difference of 1e-4/N. (On all losses its code, run with sklearn 1.9,
      returns 0.5: its CV picks C = 1e-4 and all-zero weights, an artifact we do not copy.)
    - "separated": outcomes mixed but perfectly separated by length (every comparison the policy wins, even
      partly, has tanh(d/sd) >= every one it loses, even partly, or the reverse): the MLE does not exist
      (|phi| -> inf, theta undetermined). We then regularise as AlpacaEval does, with the largest C of its grid:
      minimise ||(theta, phi)||_1 + C sum_i loss_i, C = 1e4 (`LC_SEPARATED_L1_C`), solved exactly (what
      sklearn's LogisticRegression(l1, liblinear, fit_intercept=False) on AlpacaEval's duplicated rows gives at
      a tight tol). Its CV picks 1e4 on such data when the held-out folds are separated too, not always, and
      then reports the liblinear optimum at tol 1e-4; separation leaves theta to the regulariser, so treat
      this LC as unreliable either way. SE None.
    Empty input, mismatched lengths, outcomes outside [0, 1] or NaN, non-finite length_diffs: ValueError.

    Relation to AlpacaEval 2's published LC win rate (src/alpaca_eval/metrics/glm_winrate.py, GLM
    "length_controlled_v1", read at tatsu-lab/alpaca_eval@cd543a1): the same model form (theta for model minus
    baseline, phi times tanh of the length difference divided by its ddof=1 standard deviation, not centred),
    the same soft-label likelihood (ties = 0.5 are half a win and half a loss), the same counterfactual
    (predict with the length difference set to 0, then average over comparisons; without the difficulty term
    every comparison has the same prediction sigmoid(theta)). It is their simpler GLM
    "length_controlled_minimal" (`np.tanh(std_delta_len) + not_gamed_baseline.astype(float) - 1`) up to the
    fit. Differences: (1) no instruction-difficulty term (psi_m - psi_b) gamma_x: gamma_x is precomputed for
    AlpacaEval's 805 instructions only, so our LC is sigmoid(theta), not mean_x sigmoid(theta + delta_psi
    gamma_x); (2) no "regularize to baseline": their v1 also fits the annotations of verbose- and
    concise-prompted versions of their baseline (gpt4_1106_preview), downloaded from the hub, with sample
    weight 0.1 and theta = 0, which pulls phi and the difficulty weight towards the baseline's; (3) their fit is
    L1-penalised, C chosen by 5-fold GroupKFold CV over logspace(-4, 4, 10) by soft log loss, solved by
    liblinear at tol 1e-4; ours is the unpenalised MLE (C -> inf), so it agrees when their CV picks a large C
    and differs by the L1 shrinkage of theta towards 0 (LC towards 0.5) when it picks a small one, typically
    with few comparisons; (4) sign: they regress on tanh((baseline - model length)/sd), so their length
    weight is minus our phi; (5) lengths are whatever the caller passes (they use characters, str.len);
    (6) fractions, not percentages (they multiply by 100); (7) their `lc_standard_error` is the sem (ddof=1)
    of the per-instruction LC predictions, i.e. the spread of instruction difficulty, without estimation
    uncertainty; without the difficulty term it would be exactly 0, so ours is the delta-method SE above;
    (8) NaN outcomes raise here (they drop NaN preferences from the fit); (9) degenerate inputs as above.
    """
    import numpy as np

    p_t, d_t = _pair(outcomes, length_diffs, "outcomes", "length_diffs")
    if not bool(torch.all((p_t >= 0.0) & (p_t <= 1.0))):  # also rejects NaN
        raise ValueError("outcomes must be preferences in [0, 1] (1 policy wins, 0 loses, 0.5 tie; no NaN)")
    if not bool(torch.all(torch.isfinite(d_t))):
        raise ValueError("length_diffs must be finite (no NaN or inf)")
    p, d = p_t.numpy(), d_t.numpy()
    n = p.size
    win = math.fsum(p.tolist()) / n
    win_se = float(np.std(p, ddof=1)) / math.sqrt(n) if n > 1 else None
    out: dict[str, Any] = {"n": n, "win_rate": win, "win_rate_standard_error": win_se}

    def result(lc: float, se: float | None, phi: float, theta: float | None, sd: float | None, fit: str):
        return {
            "lc_win_rate": lc,
            "lc_standard_error": se,
            "length_coefficient": phi,
            "model_coefficient": theta,
            "length_sd": sd,
            "fit": fit,
            **out,
        }

    def logit_or_none(x: float) -> float | None:
        return math.log(x / (1.0 - x)) if 0.0 < x < 1.0 else None

    if n < 2 or d.min() == d.max():
        sd = float(np.std(d, ddof=1)) if n > 1 else None
        return result(win, win_se, 0.0, logit_or_none(win), sd, "no_length_variation")
    sd = float(np.std(d, ddof=1))
    won, lost = p > 0.0, p < 1.0  # comparisons that count (at least partly) as a win / as a loss
    if not won.any() or not lost.any():
        return result(win, 0.0, 0.0, None, sd, "all_outcomes_equal")

    t = np.tanh(d / sd)
    X = np.stack([np.ones(n), t], axis=1)
    separated = t[lost].max() <= t[won].min() or t[won].max() <= t[lost].min()
    if separated:
        theta, phi = _fit_soft_logistic(X, p, lam=1.0 / (LC_SEPARATED_L1_C * n))
        lc = float(np.exp(-np.logaddexp(0.0, -theta)))
        return result(lc, None, float(phi), float(theta), sd, "separated")

    theta, phi = _fit_soft_logistic(X, p)
    lc = float(np.exp(-np.logaddexp(0.0, -theta)))
    se = None
    if n > 2:
        q = np.exp(-np.logaddexp(0.0, -(X @ np.array([theta, phi]))))
        H_inv = np.linalg.inv((X * (q * (1.0 - q))[:, None]).T @ X)
        meat = (X * ((p - q) ** 2)[:, None]).T @ X
        var_theta = float((H_inv @ meat @ H_inv)[0, 0]) * n / (n - 2)
        se = lc * (1.0 - lc) * math.sqrt(max(var_theta, 0.0))
    return result(lc, se, float(phi), float(theta), sd, "mle")
