"""Seed statistics of `alignctl report`, shared by its tables (`tables`) and the matched-KL comparison
(`matched_kl`): the mean over seeds with its 95% Student-t interval, the rule that says two groups differ (disjoint
intervals), and how a mean ± half-width is written."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

CI_NAME = "95% t-interval over seeds"
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Stat:
    """Mean over seeds, sample std (n-1) and the half-width of the 95% t-interval; None where n=1."""

    mean: float
    std: float | None
    n: int
    half_width: float | None

    @property
    def ci_low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def ci_high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width


def summarize(values: list[float]) -> Stat:
    """Mean, sample std and the Student-t 95% interval t_{0.975, n-1} * std / sqrt(n); no interval for n=1."""
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("summarize: no values")
    mean = statistics.mean(values)  # exact (rational) sums: equal values give a std of exactly 0
    if n == 1:
        return Stat(mean, None, 1, None)
    std = statistics.stdev(values)
    t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1))
    return Stat(mean, std, n, t * std / math.sqrt(n))


def intervals_overlap(a: Stat, b: Stat) -> bool:
    """Whether two 95% intervals share a point (both must have one)."""
    return a.ci_low <= b.ci_high and b.ci_low <= a.ci_high


def format_number(x: float, like: float | None = None) -> str:
    """3 decimals, or 3 significant digits when `like` (default: x) is very large or very small."""
    ref = x if like is None else like
    return f"{x:.3g}" if ref != 0 and (abs(ref) >= 1000 or abs(ref) < 0.001) else f"{x:.3f}"


def format_stat(stat: Stat, group_n: int | None = None) -> str:
    """mean ± half-width (both with the mean's precision); 'n/a' where one seed gives no interval; (n=k) when the
    metric has fewer runs than the group."""
    mean = format_number(stat.mean)
    hw = "n/a" if stat.half_width is None else format_number(stat.half_width, like=stat.mean)
    text = f"{mean} ± {hw}"
    return text if group_n is None or stat.n == group_n else f"{text} (n={stat.n})"
