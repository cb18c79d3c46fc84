"""The figures of `alignctl report` (matplotlib Agg, no pyplot state): the reward-KL frontier, reward against
diversity, pass@k against k, pooled reliability diagrams, the matched-KL frontiers and the curves' mechanisms over
training steps, one colour per seed group.
Groups come from alignctl.report.tables, comparisons at equal KL from alignctl.report.matched_kl (read here by
attribute: id, label, runs, stats, reliability; grid, groups, band, at_kl)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alignctl.report.stats import summarize

DIVERSITY_METRICS = ("entropy_per_token", "distinct_2", "self_bleu")
PASS_AT_K = re.compile(r"^(.*?)pass@(\d+)$")
SPLIT_NAMES = {"": "held-out prompts", "ood_": "out-of-distribution prompts"}


def colour(index: int) -> Any:
    """The group's colour (tab10, cycling)."""
    from matplotlib import colormaps

    return colormaps["tab10"](index % 10)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def _values(groups: list[Any], metric: str) -> list[float]:
    """The metric's value in every run of the groups that has it."""
    return [r.metrics[metric] for g in groups for r in g.runs if metric in r.metrics]


def _half_width(stat: Any) -> float:
    return 0.0 if stat.half_width is None else stat.half_width


def _scatter_groups(ax: Any, groups: list[Any], x_metric: str, y_metric: str) -> bool:
    """Each seed's point faint, the group mean with 95% t-interval error bars on both axes (none for one seed).
    Returns whether anything was drawn."""
    drawn = False
    for i, g in enumerate(groups):
        if x_metric not in g.stats or y_metric not in g.stats:
            continue
        points = [(r.metrics[x_metric], r.metrics[y_metric]) for r in g.runs if {x_metric, y_metric} <= set(r.metrics)]
        ax.scatter([p[0] for p in points], [p[1] for p in points], color=colour(i), alpha=0.3, s=18, linewidths=0)
        x, y = g.stats[x_metric], g.stats[y_metric]
        ax.errorbar(
            x.mean, y.mean, xerr=_half_width(x), yerr=_half_width(y), fmt="o", color=colour(i), capsize=3, ms=6,
            label=f"{g.id}: {g.label} (n={len(g.runs)})",
        )
        drawn = True
    return drawn


def frontier(groups: list[Any], path: Path) -> Path | None:
    """reward_mean against kl_to_reference: group means with 95% CI bars, seeds faint, each run's curve.jsonl
    trajectory as a thin line, and the reference at KL 0. None when no run has both metrics."""
    x_metric, y_metric = "kl_to_reference", "reward_mean"
    if not any(x_metric in g.stats and y_metric in g.stats for g in groups):
        return None
    fig = _figure(6.5, 4.8)
    ax = fig.add_subplot()
    trajectories = False
    for i, g in enumerate(groups):
        for run in g.runs:
            steps = [row for row in run.curve if x_metric in row and y_metric in row]
            if steps:
                xs, ys = [r[x_metric] for r in steps], [r[y_metric] for r in steps]
                ax.plot(xs, ys, "-", color=colour(i), lw=0.8, alpha=0.5)
                trajectories = True
    if trajectories:  # one legend entry for all of them
        ax.plot([], [], "-", color="gray", lw=0.8, alpha=0.5, label="training trajectory (curve.jsonl)")
    _scatter_groups(ax, groups, x_metric, y_metric)
    _reference_point(ax, groups, None)
    return _save(_labelled(fig, ax, "KL(policy || reference)", "reward-KL frontier"), path)


def diversity(groups: list[Any], path: Path) -> Path | None:
    """reward_mean against entropy_per_token, distinct_2 and self_bleu (one panel each, those present)."""
    panels = [m for m in DIVERSITY_METRICS if any(m in g.stats and "reward_mean" in g.stats for g in groups)]
    if not panels:
        return None
    fig = _figure(4.2 * len(panels), 4.2)
    for j, metric in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), j + 1)
        _scatter_groups(ax, groups, metric, "reward_mean")
        ax.set_xlabel(metric + (" (lower: more diverse)" if metric == "self_bleu" else ""))
        ax.set_ylabel("reward (mean)")
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle("reward vs diversity (mean ± 95% t-interval over seeds)", fontsize=10)
    return _save(fig, path)


def pass_at_k_series(names: set[str]) -> dict[str, list[int]]:
    """{split prefix: sorted ks} of the policy's pass@k keys ("" held-out, "ood_" ...; reference_ keys excluded)."""
    series: dict[str, set[int]] = {}
    for name in names:
        match = PASS_AT_K.match(name)
        if match and not name.startswith("reference_"):
            series.setdefault(match[1], set()).add(int(match[2]))
    return {split: sorted(ks) for split, ks in sorted(series.items())}


def pass_at_k(groups: list[Any], path: Path) -> Path | None:
    """pass@k against k (log x) per group, mean with 95% CI band, and the reference's pass@k dashed; one panel per
    split (held-out, ood). None without pass@k metrics."""
    series = pass_at_k_series({m for g in groups for m in g.stats})
    if not series:
        return None
    fig = _figure(4.8 * len(series), 4.2)
    for j, (split, ks) in enumerate(series.items()):
        ax = fig.add_subplot(1, len(series), j + 1)
        for i, g in enumerate(groups):
            have = [k for k in ks if f"{split}pass@{k}" in g.stats]
            stats = [g.stats[f"{split}pass@{k}"] for k in have]
            if not have:
                continue
            ax.plot(have, [s.mean for s in stats], "o-", color=colour(i), ms=4, label=f"{g.id}: {g.label}")
            if all(s.half_width is not None for s in stats):
                ax.fill_between(have, [s.ci_low for s in stats], [s.ci_high for s in stats], color=colour(i), alpha=0.2)
        ref = {k: _values(groups, f"reference_{split}pass@{k}") for k in ks}
        ref = {k: sum(values) / len(values) for k, values in ref.items() if values}
        if ref:
            ax.plot(list(ref), list(ref.values()), "--", color="black", lw=1.2, label="reference")
        ax.set_xscale("log", base=2)
        ticks = [k for k in ks if k & (k - 1) == 0 or k == max(ks)]  # powers of 2 (and the largest k): readable
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.minorticks_off()
        ax.minorticks_off()
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k")
        ax.set_title(SPLIT_NAMES.get(split, split.rstrip("_")), fontsize=10)
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle("pass@k (mean, band: 95% t-interval over seeds)", fontsize=10)
    return _save(fig, path)


def _draw_reliability(ax: Any, diagram: dict[str, Any], colour_: Any) -> None:
    """plot_reliability's style on one axis: accuracy bars (count above), confidence dots, the diagonal."""
    edges, counts = diagram["edges"], diagram["counts"]
    width = edges[1] - edges[0]
    full = [b for b, c in enumerate(counts) if c]
    left = 0.5 if all(c == 0 for b, c in enumerate(counts) if edges[b + 1] <= 0.5) else 0.0
    ax.plot([left, 1.0], [left, 1.0], "--", color="gray", lw=1)
    xs = [edges[b] + width / 2 for b in full]
    accs = [diagram["accuracy"][b] for b in full]
    ax.bar(xs, accs, width=width, edgecolor="black", color=colour_, alpha=0.7, label="accuracy")
    ax.plot(xs, [diagram["confidence"][b] for b in full], "o", color="tab:red", ms=4, label="mean confidence")
    for x, a, b in zip(xs, accs, full):
        ax.annotate(str(counts[b]), (x, a), ha="center", va="bottom", fontsize=6)
    ax.set_xlim(left, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("confidence")


def reliability(groups: list[Any], path: Path) -> Path | None:
    """One reliability diagram per group (pooled over its seeds) side by side, pooled ECE in each title."""
    pooled = [(i, g) for i, g in enumerate(groups) if g.reliability and g.reliability["n"]]
    if not pooled:
        return None
    fig = _figure(3.2 * len(pooled), 3.6)
    for j, (i, g) in enumerate(pooled):
        ax = fig.add_subplot(1, len(pooled), j + 1)
        _draw_reliability(ax, g.reliability, colour(i))
        ax.set_title(f"{g.id}: {g.label}\nECE {g.reliability['ece']:.3f} (n={g.reliability['n']})", fontsize=8)
        if j == 0:
            ax.set_ylabel("accuracy")
            ax.legend(loc="upper left", fontsize=6)
    fig.suptitle("reliability, pooled over each group's seeds", fontsize=9)
    return _save(fig, path)


def length(groups: list[Any], path: Path) -> Path | None:
    """reward_mean against the mean completion length in tokens ("did it just get longer?"), the reference's mean
    length and reward as a star. None when no run has both metrics."""
    x_metric, y_metric = "length_tokens_mean", "reward_mean"
    if not any(x_metric in g.stats and y_metric in g.stats for g in groups):
        return None
    fig = _figure(6.5, 4.8)
    ax = fig.add_subplot()
    _scatter_groups(ax, groups, x_metric, y_metric)
    _reference_point(ax, groups, "reference_length_tokens_mean")
    return _save(_labelled(fig, ax, "completion length (tokens, mean)", "reward vs length"), path)


def _reference_point(ax: Any, groups: list[Any], x_metric: str | None) -> None:
    """The reference's mean reward as a star, at x_metric's mean (None: at x = 0, its KL to itself)."""
    ys = _values(groups, "reference_reward_mean")
    xs = _values(groups, x_metric) if x_metric else [0.0]
    if xs and ys:
        ax.plot([sum(xs) / len(xs)], [sum(ys) / len(ys)], "*", color="black", ms=10, label="reference")


def _labelled(fig: Figure, ax: Any, xlabel: str, title: str) -> Figure:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("reward (mean)")
    ax.set_title(f"{title} (mean ± 95% t-interval over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def matched_kl(comparisons: list[Any], path: Path) -> Path | None:
    """The matched-KL figure: per group the mean of its runs' upper frontiers over the KL range every run reaches,
    with the band of the 95% t-interval over seeds at each KL (none for one seed), and the grid's values as points
    with error bars; one panel per compared metric (alignctl.report.matched_kl's Comparison, read by attribute).
    None when nothing was compared."""
    shown = [c for c in comparisons if c.groups and c.grid]
    if not shown:
        return None
    fig = _figure(5.6 * len(shown), 4.4)
    for j, c in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), j + 1)
        for g in c.groups:
            xs, means, lows, highs = g.band
            ax.plot(xs, means, "-", color=colour(g.index), lw=1.5,
                    label=f"{g.group.id}: {g.group.label} (n={len(g.runs)})")  # fmt: skip
            if all(v is not None for v in lows):
                ax.fill_between(xs, lows, highs, color=colour(g.index), alpha=0.2, linewidth=0)
            ax.errorbar(c.grid, [s.mean for s in g.at_kl], yerr=[_half_width(s) for s in g.at_kl], fmt="o",
                        color=colour(g.index), capsize=3, ms=4)  # fmt: skip
        ax.set_xlabel("KL(policy || reference)")
        ax.set_ylabel(f"{c.metric} (upper frontier)")
        ax.set_title(f"{c.metric} at equal KL", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("matched KL: mean upper frontier over seeds (band and bars: 95% t-interval)", fontsize=10)
    return _save(fig, path)


# curve.jsonl quantities that show how an objective moves the policy (issue: TDPO's Fig. 3, diversity over training)
MECHANISM_METRICS = ("entropy_per_token", "distinct_2", "seq_kl_chosen", "seq_kl_rejected")


def over_steps(runs: list[Any], metric: str) -> list[tuple[int, Any]]:
    """(step, Stat over the runs) at every step where every run of the group has `metric` in its curve."""
    per_run = [{row["step"]: row[metric] for row in run.curve if row.get(metric) is not None} for run in runs]
    if not per_run or not all(per_run):
        return []
    steps = sorted(set.intersection(*(set(values) for values in per_run)))
    return [(step, summarize([values[step] for values in per_run])) for step in steps]


def mechanisms(groups: list[Any], path: Path) -> Path | None:
    """The curve's entropy per token, distinct-2 and (pairwise objectives) sequential KL of held-out chosen and
    rejected completions over training steps: per group the mean over its seeds with the 95% t-interval band, one
    panel per quantity present. None when no run's curve has any."""
    panels = [(metric, [(i, g, over_steps(g.runs, metric)) for i, g in enumerate(groups)]) for metric in MECHANISM_METRICS]
    panels = [(metric, series) for metric, series in panels if any(points for _, _, points in series)]
    if not panels:
        return None
    fig = _figure(4.2 * len(panels), 4.0)
    for j, (metric, series) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), j + 1)
        for i, g, points in series:
            if not points:
                continue
            steps, stats = [step for step, _ in points], [stat for _, stat in points]
            ax.plot(steps, [st.mean for st in stats], "-", color=colour(i), lw=1.5,
                    label=f"{g.id}: {g.label} (n={len(g.runs)})")  # fmt: skip
            if all(st.half_width is not None for st in stats):
                ax.fill_between(steps, [st.ci_low for st in stats], [st.ci_high for st in stats], color=colour(i),
                                alpha=0.2, linewidth=0)  # fmt: skip
        ax.set_xlabel("training step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle("over training (curve.jsonl; mean ± 95% t-interval over seeds)", fontsize=10)
    return _save(fig, path)


def write_figures(groups: list[Any], out_dir: Path, suffix: str = "") -> list[Path]:
    """frontier, length, diversity, pass_at_k, reliability and mechanisms PNGs (those with data) as
    <name><suffix>.png."""
    makers = {"frontier": frontier, "length": length, "diversity": diversity, "pass_at_k": pass_at_k,
              "reliability": reliability, "mechanisms": mechanisms}  # fmt: skip
    written = [make(groups, out_dir / f"{name}{suffix}.png") for name, make in makers.items()]
    return [p for p in written if p is not None]
