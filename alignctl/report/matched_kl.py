"""Matched-KL comparison of `alignctl report`: the groups of a section compared along their reward-KL frontiers
(curve.jsonl, one point per eval.every_steps) at equal KL to the reference, not at the last step, where each arm
stands at its own KL.

Definitions (report.md states them too):

- **Curve.** A run's curve.jsonl rows that hold `kl_to_reference` and the metric as finite numbers (at least two
  of them; a run with fewer is left out and named). The metric is `reward_mean`; where the rows hold `pass@1`,
  pass@1 as well. curve.jsonl has no pass@1 key today (alignctl.eval.curve writes reward_mean, kl_to_reference,
  entropy_per_token): where the reward is binary (eval.json has pass@1, which eval writes only for a binary
  reward), the curve's reward_mean *is* the pass@1 of its samples (mean 0/1 score of n samples per prompt =
  c/n averaged over prompts), and the comparison is named pass@1.
- **Monotone repair: the upper frontier.** f(x) = the linear interpolation through the frontier's corners: the
  curve's points, in KL order, whose value is above every point at a lower or equal KL; after the last corner f
  stays at its value up to the run's largest KL. f is non-decreasing on [the run's smallest KL, its largest KL].
  Why this and not the raw trajectory or isotonic regression: a trajectory is no function of KL (KL falls back
  between evals; reward drops while KL rises, from the noise of a small curve sample or over-optimisation), and
  the frontier the papers draw is the upper envelope, the best a run reached within a KL budget: the question
  "what does this objective buy at this KL". A segment between two corners is reachable: the mixture
  lambda*pi_1 + (1-lambda)*pi_2 of the two checkpoints has exactly the interpolated reward and, KL being convex,
  at most the interpolated KL, so the frontier under-claims, never over-claims. Its cost: the maximum of noisy
  points leans upward, more for longer, noisier curves; isotonic regression (least-squares monotone fit) would
  not lean upward, but it averages an over-optimised tail into lower KL, answering another question.
- **Grid.** The range every compared run reaches: from the largest of the runs' smallest KLs to the smallest of
  their largest KLs, over every run with a curve in the section's groups; `points` evenly spaced values from one
  end to the other, both included (default 5), or the values of kl_grid=, each of which must lie in that range.
- **Interval.** At each grid KL, a group's value is the mean over its runs' f(KL) with the report's 95% Student-t
  interval over seeds (alignctl.report.stats.summarize: t_{0.975, n-1} * sample std / sqrt(n); none for n=1).
- **Divergence efficiency** (named after f-DPO's term; the formula is this report's): per run,
  (1 / (b - a)) * integral_a^b f(x) dx with a and b the grid's first and last KL, i.e. the frontier's mean height
  over the grid's span, in the metric's units; computed exactly (f is piecewise linear); then mean and interval
  over seeds as above.
- **Apart beyond seed noise.** The report's rule for two groups differing (tables.noise_statement): their 95%
  t-intervals are disjoint (alignctl.report.stats.intervals_overlap), applied here to every pair of groups with at
  least two seeds; a group with one seed has no interval and is never called apart.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from itertools import combinations, pairwise
from typing import Any

from alignctl.errors import UsageError
from alignctl.report.stats import CI_NAME, Stat, format_number, format_stat, intervals_overlap, summarize

KL_KEY = "kl_to_reference"
REWARD_KEY = "reward_mean"
PASS_KEY = "pass@1"
DEFAULT_POINTS = 5
MAX_POINTS = 50  # columns of one table
BAND_POINTS = 101  # KL values of the figure's mean frontier and band (plus the corners and grid values)
# report.csv's columns for the matched-KL rows, after its existing ones
CSV_COLUMNS = ("matched_metric", "matched_stat", "kl", "kl_start", "kl_end", "value", "value_std", "value_ci_low",
               "value_ci_high", "value_n")  # fmt: skip

Point = tuple[float, float]  # (KL, value)


# ---------------------------------------------------------------------------------------------------------------
# One run: curve -> upper frontier -> values at KL, area


def curve_points(curve: list[dict[str, Any]], key: str) -> list[Point]:
    """(KL, value) of the curve rows that hold kl_to_reference and `key` as finite numbers (not bools)."""

    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    return [(float(row[KL_KEY]), float(row[key])) for row in curve if number(row.get(KL_KEY)) and number(row.get(key))]


def upper_frontier(points: list[Point]) -> list[Point]:
    """The corners of the upper frontier of (KL, value) points: in KL order (the highest value first at equal KL),
    each point whose value is above every point before it, then (the largest KL, the best value) when the best
    point is not the last in KL. Interpolated linearly (`value_at`), it is non-decreasing in KL (module docstring:
    why this repair)."""
    if not points:
        raise ValueError("upper_frontier: no points")
    ordered = sorted(points, key=lambda p: (p[0], -p[1]))
    corners: list[Point] = []
    for kl, value in ordered:
        if not corners or value > corners[-1][1]:
            corners.append((kl, value))
    if corners[-1][0] < ordered[-1][0]:
        corners.append((ordered[-1][0], corners[-1][1]))
    return corners


def value_at(corners: list[Point], x: float) -> float:
    """The frontier's linear interpolation at KL x; x must lie between its first and last corner."""
    if not corners[0][0] <= x <= corners[-1][0]:
        raise ValueError(f"KL {x} is outside the frontier's range [{corners[0][0]}, {corners[-1][0]}]")
    for (x0, y0), (x1, y1) in pairwise(corners):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return corners[0][1]  # a single corner: x is its KL


def area(corners: list[Point], a: float, b: float) -> float:
    """The exact integral of the frontier from KL a to KL b (a <= b, both in its range): trapezoids between a, the
    corners strictly inside, and b (the frontier is linear between them)."""
    xs = [a, *(kl for kl, _ in corners if a < kl < b), b]
    return sum((x1 - x0) * (value_at(corners, x0) + value_at(corners, x1)) / 2 for x0, x1 in pairwise(xs))


def efficiency(corners: list[Point], a: float, b: float) -> float:
    """Divergence efficiency: the frontier's mean height over [a, b], area(a, b) / (b - a) (a < b)."""
    return area(corners, a, b) / (b - a)


def linspace(lo: float, hi: float, n: int) -> list[float]:
    """n evenly spaced values from lo to hi, both ends exactly (n >= 2)."""
    return [lo, *(lo + (hi - lo) * i / (n - 1) for i in range(1, n - 1)), hi]


# ---------------------------------------------------------------------------------------------------------------
# A section's groups: results


@dataclass
class GroupFrontier:
    """One group's runs with a curve: their frontiers, values at the grid, efficiencies, and the stats over seeds."""

    group: Any  # tables.Group (read by attribute: id, label, runs)
    index: int  # its position among the section's groups: its colour in the figures
    runs: list[Any]
    frontiers: list[list[Point]]
    values: list[list[float]] = field(default_factory=list)  # per run, per grid KL
    efficiencies: list[float] = field(default_factory=list)  # per run
    at_kl: list[Stat] = field(default_factory=list)  # per grid KL, over the runs
    efficiency: Stat | None = None
    band: tuple[list[float], list[float], list[float | None], list[float | None]] = ([], [], [], [])  # x, mean, lo, hi


@dataclass
class Comparison:
    """One metric compared at equal KL across a section's groups."""

    metric: str  # "reward_mean" or "pass@1": its name in report.md and report.csv
    key: str  # the curve.jsonl key it is read from
    source: str  # where the values come from, in words
    groups: list[GroupFrontier]
    left_out: list[Any]  # runs of the section without a usable curve for it
    start: float = math.nan  # the range every run reaches: the largest of the runs' smallest KLs ...
    end: float = math.nan  # ... to the smallest of their largest KLs
    start_run: Any = None  # the run whose smallest KL is `start`
    end_run: Any = None  # the run whose largest KL is `end`
    grid: list[float] = field(default_factory=list)
    note: str | None = None  # one line when there is nothing to compare (no common range)


@dataclass
class MatchedKL:
    """A section's matched-KL comparisons, or the one line that says why there are none."""

    comparisons: list[Comparison]
    note: str | None = None


def _usable(run: Any, key: str) -> list[Point]:
    points = curve_points(run.curve, key)
    return points if len({kl for kl, _ in points}) >= 2 else []


def metrics_to_compare(runs: list[Any]) -> list[tuple[str, str, str]]:
    """(name, curve key, source in words) of the metrics the section's curves allow: reward_mean, named pass@1
    where every run with a curve has a binary reward (eval.json has pass@1, and the curve's rewards are 0/1 means);
    and pass@1 where curve rows carry it."""
    with_curve = [r for r in runs if _usable(r, REWARD_KEY)]
    carried = any(PASS_KEY in row for r in runs for row in r.curve)
    binary = bool(with_curve) and all(
        PASS_KEY in r.metrics and all(0.0 <= v <= 1.0 for _, v in _usable(r, REWARD_KEY)) for r in with_curve
    )
    if binary and not carried:
        return [(PASS_KEY, REWARD_KEY, "curve.jsonl's reward_mean, which is pass@1 here: the reward is binary "
                 "(eval.json has pass@1), so the mean 0/1 score of the curve's samples is their pass@1")]  # fmt: skip
    found = [(REWARD_KEY, REWARD_KEY, "curve.jsonl's reward_mean")]
    return found + ([(PASS_KEY, PASS_KEY, "curve.jsonl's pass@1")] if carried else [])


def compare(groups: list[Any], grid: list[float] | None = None, points: int | None = None,
            where: str | None = None) -> MatchedKL:  # fmt: skip
    """The section's groups compared at equal KL (module docstring: the definitions). `grid`: the KL values asked
    for (kl_grid=), each of which must be reached by every run with a curve, else a UsageError naming kl_grid;
    `points`: how many evenly spaced values (kl_points=, default 5). Without curves, or without a KL range every
    run reaches, the result holds one line saying so (a UsageError only when `grid` was given)."""
    runs = [r for g in groups for r in g.runs]
    metrics = metrics_to_compare(runs)
    if not any(_usable(r, REWARD_KEY) for r in runs):
        note = (f"No run has a curve.jsonl with at least two {KL_KEY} points (train with eval.every_steps=N): "
                "nothing to compare at equal KL.")  # fmt: skip
        if grid is not None:
            raise UsageError(f"kl_grid={format_grid(grid)}: no run{_in(where)} has a curve.jsonl with at least two "
                             f"{KL_KEY} points (train with eval.every_steps=N)")  # fmt: skip
        return MatchedKL([], note)
    return MatchedKL([_compare_metric(groups, m, grid, points, where) for m in metrics])


def _in(where: str | None) -> str:
    return f" in {where}" if where else ""


def _compare_metric(groups: list[Any], metric: tuple[str, str, str], grid: list[float] | None, points: int | None,
                    where: str | None) -> Comparison:  # fmt: skip
    name, key, source = metric
    found, left_out = [], []
    for i, g in enumerate(groups):
        usable = [(r, _usable(r, key)) for r in g.runs]
        left_out += [r for r, p in usable if not p]
        usable = [(r, p) for r, p in usable if p]
        if usable:
            found.append(GroupFrontier(g, i, [r for r, _ in usable], [upper_frontier(p) for _, p in usable]))
    result = Comparison(name, key, source, found, left_out)
    runs = [(r, f) for g in found for r, f in zip(g.runs, g.frontiers)]
    if not runs:  # pass@1 in a few curve rows only: no run has two KL points with it
        if grid is not None:
            raise UsageError(f"kl_grid={format_grid(grid)}: no run{_in(where)} has two curve points with {name}")
        result.note = f"{name}: no run has a curve with at least two {KL_KEY} points holding it: nothing to compare."
        return result
    result.start_run, first = max(((r, f[0][0]) for r, f in runs), key=lambda t: t[1])
    result.end_run, last = min(((r, f[-1][0]) for r, f in runs), key=lambda t: t[1])
    result.start, result.end = first, last
    if first >= last:
        bounds = (f"the largest smallest KL, {format_number(first)} ({result.start_run.path.name}), is not below the "
                  f"smallest largest KL, {format_number(last)} ({result.end_run.path.name})")  # fmt: skip
        if grid is not None:
            raise UsageError(f"kl_grid={format_grid(grid)}: the runs{_in(where)} share no KL range to compare {name} "
                             f"at: {bounds}")  # fmt: skip
        result.note = f"{name}: the runs share no KL range ({bounds}): nothing to compare at equal KL."
        return result
    if grid is not None:
        outside = [x for x in grid if not first <= x <= last]
        if outside:
            raise UsageError(f"kl_grid={format_grid(grid)}: {', '.join(format_grid_value(x) for x in outside)} "
                             f"{'is' if len(outside) == 1 else 'are'} outside the KL range every run{_in(where)} "
                             f"reaches for {name}, {format_number(first)} ({result.start_run.path.name}) to "
                             f"{format_number(last)} ({result.end_run.path.name})")  # fmt: skip
        result.grid = sorted(grid)
    else:
        result.grid = linspace(first, last, points or DEFAULT_POINTS)
    a, b = result.grid[0], result.grid[-1]
    dense = sorted({*linspace(first, last, BAND_POINTS), *result.grid,
                    *(kl for g in found for f in g.frontiers for kl, _ in f if first < kl < last)})  # fmt: skip
    for g in found:
        g.values = [[value_at(f, x) for x in result.grid] for f in g.frontiers]
        g.at_kl = [summarize([v[j] for v in g.values]) for j in range(len(result.grid))]
        g.efficiencies = [efficiency(f, a, b) for f in g.frontiers]
        g.efficiency = summarize(g.efficiencies)
        stats = [summarize([value_at(f, x) for f in g.frontiers]) for x in dense]
        g.band = (dense, [s.mean for s in stats], [s.ci_low for s in stats], [s.ci_high for s in stats])
    return result


# ---------------------------------------------------------------------------------------------------------------
# The noise rule, text, rows


def apart_statement(named: list[tuple[str, Stat]]) -> str:
    """Which groups are apart beyond seed noise: every pair of groups with n >= 2 whose 95% t-intervals are disjoint,
    written `higher > lower` (the report's rule, stats.intervals_overlap); single-seed groups are never a finding."""
    several = sorted([(n, s) for n, s in named if s.n >= 2], key=lambda t: -t[1].mean)
    single = [n for n, s in named if s.n < 2]
    if len(named) < 2:
        return "one group: nothing to compare"
    tail = f"; single seed, not a finding either way: {', '.join(single)}" if single else ""
    if len(several) < 2:
        return f"fewer than two groups with several seeds: no difference is a finding{tail}"
    pairs = list(combinations(several, 2))
    apart = [f"{a} > {b}" for (a, sa), (b, sb) in pairs if not intervals_overlap(sa, sb)]
    if not apart:
        return f"no two groups apart beyond seed noise (every pair's 95% t-intervals overlap){tail}"
    rest = "; the other pairs within it" if len(apart) < len(pairs) else ""
    return f"apart beyond seed noise (95% t-intervals disjoint): {', '.join(apart)}{rest}{tail}"


def format_grid_value(x: float) -> str:
    return f"{x:g}"


def format_grid(grid: list[float]) -> str:
    return "[" + ", ".join(format_grid_value(x) for x in grid) + "]"


def left_out_line(result: Comparison) -> str | None:
    """The one line naming the runs without a usable curve for the metric, or None."""
    if not result.left_out:
        return None
    names = ", ".join(f"`{r.path.name}`" for r in result.left_out)
    return (f"Left out of {result.metric} at equal KL ({len(result.left_out)} run{'s' * (len(result.left_out) > 1)}: "
            f"no curve.jsonl with at least two {KL_KEY} points): {names}.")  # fmt: skip


def table(result: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and rows: group, label, n, the metric at each grid KL (mean ± half-width), the efficiency."""
    span = f"{format_number(result.grid[0])}–{format_number(result.grid[-1])}"
    header = ["group", "label", "n", *(f"KL {format_number(x)}" for x in result.grid), f"efficiency (KL {span})"]
    rows = [[g.group.id, g.group.label, str(len(g.runs)), *(format_stat(s) for s in g.at_kl), format_stat(g.efficiency)]
            for g in result.groups]  # fmt: skip
    return header, rows


def statements(result: Comparison) -> list[str]:
    """One line per grid KL and one for the efficiency: which groups are apart beyond seed noise (one line for all
    when they all say the same)."""
    said = [(f"KL {format_number(x)}", apart_statement([(g.group.id, g.at_kl[j]) for g in result.groups]))
            for j, x in enumerate(result.grid)]  # fmt: skip
    said.append(("efficiency", apart_statement([(g.group.id, g.efficiency) for g in result.groups])))
    if len({text for _, text in said}) == 1:
        return [f"at every grid KL and in efficiency: {said[0][1]}"]
    return [f"{where}: {text}" for where, text in said]


DEFINITIONS = (
    "Each run's curve.jsonl (reward and KL to the reference every eval.every_steps) is compared at equal KL rather "
    "than at its last step. Monotone repair: each run's upper frontier, the linear interpolation through its curve "
    "points that beat every point at lower KL, flat after its best point (the best it reached within a KL budget; "
    "a segment is reachable by mixing its two checkpoints). Grid: evenly spaced KL values, both ends included, over "
    "the range every run reaches (the largest of the runs' smallest KLs to the smallest of their largest KLs), or "
    f"kl_grid=. Cells: mean ± half-width of the {CI_NAME} (Student t, n-1 degrees of freedom) of the runs' frontier "
    "values; n/a: a single seed. Efficiency (divergence efficiency): per run, the area under its frontier from the "
    "grid's first to its last KL divided by that KL span (its mean height there), then mean ± half-width over "
    "seeds. Apart beyond seed noise: the two groups' 95% t-intervals are disjoint, as above."
)


def markdown_lines(matched: MatchedKL, figure: Any, heading: str) -> list[str]:
    """The "Matched KL" part of a section in report.md: definitions, per metric the table, the left-out runs and the
    apart-beyond-noise lines, then the figure; or the one line saying why there is nothing to compare."""
    lines = ["", f"{heading} Matched KL", ""]
    if matched.note:
        return [*lines, matched.note]
    if all(result.note for result in matched.comparisons):  # no KL range to compare at: one line each, no more
        return lines + [result.note for result in matched.comparisons]
    lines.append(DEFINITIONS)
    for result in matched.comparisons:
        lines += ["", f"**{result.metric} at equal KL** ({result.source})", ""]
        if result.note:
            lines.append(result.note)
        else:
            header, rows = table(result)
            lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
            lines.append("")
            lines += [f"- {s}" for s in statements(result)]
        left = left_out_line(result)
        if left:
            lines += ["", left]
    if figure is not None:
        lines += ["", f"![{figure.stem}]({figure.name})"]
    return lines


def print_matched(matched: MatchedKL, console: Any) -> None:
    """The matched-KL tables and lines on the terminal (rich)."""
    from rich.table import Table
    from rich.text import Text

    if matched.note:
        console.print(matched.note, markup=False, highlight=False)
        return
    for result in matched.comparisons:
        if result.note:
            console.print(result.note, markup=False, highlight=False)
            continue
        header, rows = table(result)  # without the label column: the table above says what each group is
        t = Table(title=f"{result.metric} at equal KL (upper frontier; mean ± half-width of the {CI_NAME})")
        for i, name in enumerate(header[:1] + header[2:]):
            t.add_column(name, justify="right" if i >= 1 else "left", overflow="fold")
        for row in rows:
            t.add_row(*(Text(cell) for cell in row[:1] + row[2:]))
        console.print(t)
        for line in [*statements(result), left_out_line(result)]:
            if line:
                console.print(line, markup=False, highlight=False)


def csv_records(matched: MatchedKL) -> list[tuple[Any, Any, list[Any], dict[str, Any]]]:
    """report.csv's matched-KL rows, tidy: (group, run or None, the group's runs compared, {kind, CSV_COLUMNS...}):
    per run (kind=matched_kl_run) and per group (kind=matched_kl_group) its value at each grid KL (matched_stat=at_kl,
    kl=that KL) and its efficiency (matched_stat=efficiency, kl_start/kl_end: the span integrated over)."""
    records = []

    def blank(x: Any) -> Any:
        return "" if x is None else x

    for result in matched.comparisons:
        if result.note:
            continue
        span = {"kl_start": result.grid[0], "kl_end": result.grid[-1]}
        for kind in ("matched_kl_run", "matched_kl_group"):
            for g in result.groups:
                cells: list[tuple[dict[str, Any], list[float], Stat]] = [
                    ({"matched_stat": "at_kl", "kl": x}, [v[j] for v in g.values], g.at_kl[j])
                    for j, x in enumerate(result.grid)
                ]
                cells.append(({"matched_stat": "efficiency", **span}, g.efficiencies, g.efficiency))
                for where, per_run, stat in cells:
                    base = {"kind": kind, "matched_metric": result.metric, **where}
                    if kind == "matched_kl_run":
                        records += [(g.group, r, g.runs, base | {"value": v}) for r, v in zip(g.runs, per_run)]
                    else:
                        records.append((g.group, None, g.runs, base | {
                            "value": stat.mean, "value_std": blank(stat.std), "value_ci_low": blank(stat.ci_low),
                            "value_ci_high": blank(stat.ci_high), "value_n": stat.n}))  # fmt: skip
    return records


# ---------------------------------------------------------------------------------------------------------------
# The command line's kl_grid= and kl_points=

OPTIONS = ("kl_grid", "kl_points")


def parse_options(keyed: dict[str, str]) -> dict[str, Any]:
    """`kl_grid=[0.5,1,2]` (or 0.5,1,2) and `kl_points=N` of `alignctl report` -> report()'s keyword arguments
    kl_grid (sorted) and kl_points; a one-line UsageError naming the argument for a bad value."""
    got: dict[str, Any] = {}
    if "kl_grid" in keyed and "kl_points" in keyed:
        raise UsageError("kl_grid= and kl_points= for report: give one (kl_grid= sets the points itself)")
    if "kl_points" in keyed:
        text = keyed["kl_points"]
        if not re.fullmatch(r"\d+", text.strip()) or not 2 <= int(text) <= MAX_POINTS:
            raise UsageError(f"kl_points={text!r} for report; valid: a whole number from 2 to {MAX_POINTS}")
        got["kl_points"] = int(text)
    if "kl_grid" in keyed:
        text = keyed["kl_grid"]
        parts = [p.strip() for p in text.strip().removeprefix("[").removesuffix("]").split(",")]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) < 2 or not all(math.isfinite(v) for v in values) or len(values) > MAX_POINTS:
            raise UsageError(f"kl_grid={text!r} for report; valid: 2 to {MAX_POINTS} finite KL values, "
                             "e.g. kl_grid=[0.5,1,2]")  # fmt: skip
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise UsageError(f"kl_grid={text!r} for report gives {format_grid_value(twice[0])} twice")
        got["kl_grid"] = sorted(values)
    return got
