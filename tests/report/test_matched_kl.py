"""Matched-KL comparison of `alignctl report` on hand-made curves whose answers are worked out by hand here:
interpolation, the upper-frontier repair, the common grid, area and efficiency, the seed interval, the apart-beyond-
noise rule both ways, missing curves, a grid no run reaches, kl_grid=/kl_points=, and one `alignctl report` call."""

import csv
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from alignctl.cli import main as cli
from alignctl.errors import UsageError
from alignctl.report import matched_kl as mk
from alignctl.report import tables as report
from alignctl.report.stats import format_stat, summarize
from tests.report.test_report import assert_readable_png, make_run

T975_3 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2), written out


def curve(*points, key="reward_mean"):
    """curve.jsonl rows from (KL, value) points, one eval step apart, in the order given (training order)."""
    return [{"step": 40 * i, "kl_to_reference": kl, key: value} for i, (kl, value) in enumerate(points)]


def fake_run(name, rows, seed=0, metrics=None):
    return SimpleNamespace(path=Path("/sweep") / name, curve=rows, seed=seed, metrics=metrics or {})


def fake_group(gid, runs, label=None):
    return SimpleNamespace(id=gid, label=label or gid, runs=runs)


# ---------------------------------------------------------------------------------------------------------------
# one run: interpolation, repair, area


def test_linear_interpolation_between_corners():
    corners = [(0.0, 0.0), (1.0, 0.4), (3.0, 0.8)]
    assert mk.value_at(corners, 0.0) == 0.0
    assert mk.value_at(corners, 0.5) == pytest.approx(0.2)  # halfway up the first segment
    assert mk.value_at(corners, 1.0) == pytest.approx(0.4)
    assert mk.value_at(corners, 2.0) == pytest.approx(0.6)  # 0.4 + (0.8 - 0.4) * (2 - 1) / (3 - 1)
    assert mk.value_at(corners, 3.0) == pytest.approx(0.8)
    for outside in (-0.01, 3.01):
        with pytest.raises(ValueError, match="outside the frontier's range"):
            mk.value_at(corners, outside)
    assert mk.value_at([(0.7, 0.3)], 0.7) == 0.3


def test_a_non_monotone_curve_is_repaired_to_its_upper_frontier():
    # training order: KL falls back at step 120 (1.5 after 2.0) and the reward drops after KL 1.5
    points = [(0.0, 0.0), (1.0, 0.5), (2.0, 0.3), (1.5, 0.6), (3.0, 0.55), (0.5, 0.1), (1.0, 0.2)]
    corners = mk.upper_frontier(points)
    # KL order: (0, 0) (0.5, 0.1) (1.0, 0.5) [(1.0, 0.2): below] (1.5, 0.6) [(2.0, 0.3), (3.0, 0.55): below 0.6],
    # then flat at the best value up to the largest KL
    assert corners == [(0.0, 0.0), (0.5, 0.1), (1.0, 0.5), (1.5, 0.6), (3.0, 0.6)]
    values = [mk.value_at(corners, x / 10) for x in range(31)]
    assert all(b >= a for a, b in zip(values, values[1:])), "the repaired frontier is non-decreasing in KL"
    assert mk.value_at(corners, 2.0) == pytest.approx(0.6)  # not the 0.3 of the checkpoint that drifted there
    assert mk.value_at(corners, 0.75) == pytest.approx(0.3)  # between (0.5, 0.1) and (1.0, 0.5)
    # an already monotone curve is its own frontier
    assert mk.upper_frontier([(2.0, 0.9), (0.0, 0.1), (1.0, 0.4)]) == [(0.0, 0.1), (1.0, 0.4), (2.0, 0.9)]


def test_area_and_efficiency_against_a_hand_computation():
    corners = [(0.0, 0.0), (1.0, 0.4), (3.0, 0.8)]
    # from 0.5 to 2: trapezoids 0.5 * (0.2 + 0.4) / 2 = 0.15 and 1 * (0.4 + 0.6) / 2 = 0.5
    assert mk.area(corners, 0.5, 2.0) == pytest.approx(0.65)
    assert mk.efficiency(corners, 0.5, 2.0) == pytest.approx(0.65 / 1.5)
    # the repaired curve above: 0.5*(0+0.1)/2 + 0.5*(0.1+0.5)/2 + 0.5*(0.5+0.6)/2 + 1.5*0.6 = 1.35 over KL 0..3
    repaired = [(0.0, 0.0), (0.5, 0.1), (1.0, 0.5), (1.5, 0.6), (3.0, 0.6)]
    assert mk.area(repaired, 0.0, 3.0) == pytest.approx(0.025 + 0.15 + 0.275 + 0.9)
    assert mk.efficiency(repaired, 0.0, 3.0) == pytest.approx(1.35 / 3)
    assert mk.efficiency([(0.0, 0.25), (4.0, 0.25)], 1.0, 3.0) == pytest.approx(0.25)  # a flat frontier: its height


def test_curve_points_keep_finite_numbers_only():
    kls = [0.0, None, float("nan"), 1.0, 2]
    rewards = [0.1, 0.2, 0.3, True, 1]
    rows = [{"step": 40 * i, "kl_to_reference": kl, "reward_mean": r} for i, (kl, r) in enumerate(zip(kls, rewards))]
    assert mk.curve_points(rows, "reward_mean") == [(0.0, 0.1), (2.0, 1.0)]


# ---------------------------------------------------------------------------------------------------------------
# a section's groups: grid, intervals, efficiency, noise


def test_grid_spans_the_range_every_run_reaches():
    a = fake_run("0-a", curve((0.1, 0.0), (1.0, 0.5), (2.0, 0.6)))
    b = fake_run("1-b", curve((0.3, 0.2), (1.5, 0.4)))
    c = fake_run("2-c", curve((0.0, 0.0), (3.0, 0.9)))
    (result,) = mk.compare([fake_group("g1", [a, b]), fake_group("g2", [c])]).comparisons
    # the largest of the smallest KLs (0.3, run b) to the smallest of the largest KLs (1.5, run b)
    assert (result.start, result.end) == (0.3, 1.5)
    assert result.start_run is b and result.end_run is b
    assert result.grid == pytest.approx([0.3, 0.6, 0.9, 1.2, 1.5])
    assert result.grid[0] == 0.3 and result.grid[-1] == 1.5  # the ends exactly: every run reaches them
    (result,) = mk.compare([fake_group("g1", [a, b]), fake_group("g2", [c])], points=3).comparisons
    assert result.grid == pytest.approx([0.3, 0.9, 1.5])
    (result,) = mk.compare([fake_group("g1", [a, b]), fake_group("g2", [c])], grid=[0.5, 1.25]).comparisons
    assert result.grid == [0.5, 1.25]
    # run c: 0.9 * KL / 3 -> 0.15 at 0.5, 0.375 at 1.25; run a: 0.5 * 0.4 / 0.9 (its first segment), 0.5 + 0.1 * 0.25
    g1, g2 = result.groups
    assert g2.values == [[pytest.approx(0.15), pytest.approx(0.375)]]
    assert g1.values[0] == [pytest.approx(0.5 * 0.4 / 0.9), pytest.approx(0.5 + 0.1 * 0.25)]


def test_interval_and_efficiency_over_three_seeds_by_hand():
    slopes = (0.2, 0.3, 0.4)  # reward = slope * KL on KL 0..2, one run per seed
    runs = [fake_run(f"{s}-a", curve((0.0, 0.0), (1.0, c), (2.0, 2 * c)), seed=s) for s, c in enumerate(slopes)]
    (result,) = mk.compare([fake_group("g1", runs)]).comparisons
    assert result.grid == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    (group,) = result.groups
    at_1 = group.at_kl[2]  # KL 1.0: values 0.2, 0.3, 0.4 -> mean 0.3, sample std 0.1
    assert at_1.n == 3 and at_1.mean == pytest.approx(0.3) and at_1.std == pytest.approx(0.1)
    assert at_1.half_width == pytest.approx(T975_3 * 0.1 / math.sqrt(3))
    assert group.at_kl[0].half_width == 0.0  # all three start at 0
    # efficiency of slope * KL over KL 0..2: area 2 * slope, / 2 -> slope; over seeds: 0.3 ± the same half-width
    assert group.efficiencies == pytest.approx(list(slopes))
    assert group.efficiency.mean == pytest.approx(0.3)
    assert group.efficiency.half_width == pytest.approx(T975_3 * 0.1 / math.sqrt(3))
    # the figure's band: mean and interval at each KL it is drawn at
    xs, means, lows, highs = group.band
    j = xs.index(1.0)
    assert means[j] == pytest.approx(0.3) and highs[j] - means[j] == pytest.approx(at_1.half_width)


def two_groups(spread):
    """g1: reward 0.5 * KL; g2: 0.2 * KL (KL 0..2); each seed's slope is off by +-spread."""
    groups = []
    for gid, slope in (("g1", 0.5), ("g2", 0.2)):
        runs = [fake_run(f"{gid}-{s}", curve((0.0, 0.0), (2.0, 2 * (slope + d))), seed=s)
                for s, d in enumerate((-spread, 0.0, spread))]  # fmt: skip
        groups.append(fake_group(gid, runs))
    return groups


def test_noise_statement_says_apart_or_within_noise():
    (result,) = mk.compare(two_groups(spread=0.01)).comparisons
    lines = mk.statements(result)
    # at KL 0 every run is at 0: equal, intervals overlap; above it 0.5x ± small vs 0.2x ± small: disjoint
    assert lines[0] == "KL 0.000: no two groups apart beyond seed noise (every pair's 95% t-intervals overlap)"
    assert lines[-2] == "KL 2.000: apart beyond seed noise (95% t-intervals disjoint): g1 > g2"
    assert lines[-1] == "efficiency: apart beyond seed noise (95% t-intervals disjoint): g1 > g2"
    (noisy,) = mk.compare(two_groups(spread=0.4)).comparisons  # seeds spread 0.1..0.9 and -0.2..0.6 per KL: overlap
    assert mk.statements(noisy) == ["at every grid KL and in efficiency: no two groups apart beyond seed noise "
                                    "(every pair's 95% t-intervals overlap)"]  # fmt: skip


def test_noise_rule_is_the_reports_disjoint_intervals_pairwise():
    a, b, c = summarize([1.1, 1.2, 1.3]), summarize([0.5, 0.6, 0.7]), summarize([0.55, 0.6, 0.65])
    assert mk.apart_statement([("g1", b), ("g2", a), ("g3", c)]) == (
        "apart beyond seed noise (95% t-intervals disjoint): g2 > g1, g2 > g3; the other pairs within it"
    )
    one = summarize([2.0])
    assert mk.apart_statement([("g1", a), ("g2", b), ("g3", one)]).endswith(
        "; single seed, not a finding either way: g3"
    )
    assert mk.apart_statement([("g1", a), ("g2", one)]) == (
        "fewer than two groups with several seeds: no difference "
        "is a finding; single seed, not a finding either way: g2"
    )
    assert mk.apart_statement([("g1", a)]) == "one group: nothing to compare"


# ---------------------------------------------------------------------------------------------------------------
# missing curves, unreachable grids, pass@1


def test_runs_without_curves_are_left_out_and_named():
    with_curve = [fake_run(f"{s}-js", curve((0.0, 0.0), (1.0, 0.5)), seed=s) for s in (0, 1)]
    without = fake_run("2-js", [], seed=2)
    short = fake_run("3-rkl", curve((0.4, 0.1)), seed=0)  # one point: no KL range
    (result,) = mk.compare([fake_group("g1", [*with_curve, without]), fake_group("g2", [short])]).comparisons
    assert [g.group.id for g in result.groups] == ["g1"] and result.groups[0].runs == with_curve
    assert result.left_out == [without, short]
    assert mk.left_out_line(result) == ("Left out of reward_mean at equal KL (2 runs: no curve.jsonl with at least two "
                                        "kl_to_reference points): `2-js`, `3-rkl`.")  # fmt: skip
    nothing = mk.compare([fake_group("g1", [without])])
    assert nothing.comparisons == [] and nothing.note.startswith("No run has a curve.jsonl")
    with pytest.raises(UsageError, match=r"^kl_grid=\[0.5, 1\]: no run in toy has a curve.jsonl"):
        mk.compare([fake_group("g1", [without])], grid=[0.5, 1.0], where="toy")


def test_a_grid_no_run_reaches_is_one_line_or_a_usage_error_when_asked_for():
    low = fake_run("0-low", curve((0.0, 0.0), (1.0, 0.5)))
    high = fake_run("1-high", curve((2.0, 0.2), (3.0, 0.6)))
    (result,) = mk.compare([fake_group("g1", [low]), fake_group("g2", [high])]).comparisons
    assert result.grid == [] and result.groups
    assert result.note == (
        "reward_mean: the runs share no KL range (the largest smallest KL, 2.000 (1-high), is not below the smallest "
        "largest KL, 1.000 (0-low)): nothing to compare at equal KL."
    )
    assert mk.markdown_lines(mk.MatchedKL([result]), None, "##") == ["", "## Matched KL", "", result.note]
    with pytest.raises(UsageError, match=r"^kl_grid=\[0.5, 2.5\]: the runs share no KL range"):
        mk.compare([fake_group("g1", [low]), fake_group("g2", [high])], grid=[0.5, 2.5])
    other = fake_run("2-other", curve((0.0, 0.1), (2.0, 0.7)))
    with pytest.raises(UsageError, match=r"^kl_grid=\[0.5, 1.5\]: 1.5 is outside the KL range every run reaches for "
                                         r"reward_mean, 0.000 \(0-low\) to 1.000 \(0-low\)$"):  # fmt: skip
        mk.compare([fake_group("g1", [low]), fake_group("g2", [other])], grid=[0.5, 1.5])


def test_pass_at_1_from_curve_rows_or_from_a_binary_rewards_curve():
    carried = [fake_run(f"{s}", [{"step": 40 * i, "kl_to_reference": kl, "reward_mean": r, "pass@1": p}
                                 for i, (kl, r, p) in enumerate([(0.0, 0.1, 0.2), (1.0, 0.5, 0.4)])])
               for s in range(2)]  # fmt: skip
    reward, passed = mk.compare([fake_group("g1", carried)]).comparisons
    assert (reward.metric, passed.metric, passed.key) == ("reward_mean", "pass@1", "pass@1")
    assert passed.groups[0].at_kl[2].mean == pytest.approx(0.3)  # KL 0.5: halfway from 0.2 to 0.4
    binary = [fake_run(f"{s}", curve((0.0, 0.25), (1.0, 0.75)), metrics={"pass@1": 0.7}) for s in range(2)]
    (result,) = mk.compare([fake_group("g1", binary)]).comparisons
    assert (result.metric, result.key) == ("pass@1", "reward_mean") and "the reward is binary" in result.source
    once = [fake_run("0", [*curve((0.0, 0.1), (1.0, 0.3)), {"step": 80, "kl_to_reference": 1.5, "pass@1": 0.5}])]
    reward, passed = mk.compare([fake_group("g1", once)]).comparisons  # a single row with pass@1: no curve of it
    assert reward.grid and passed.note.startswith("pass@1: no run has a curve") and passed.left_out == once
    sentiment = [fake_run(f"{s}", curve((0.0, -0.5), (1.0, 0.75)), metrics={"pass@1": 0.7}) for s in range(2)]
    assert [c.metric for c in mk.compare([fake_group("g1", sentiment)]).comparisons] == ["reward_mean"]


def test_kl_grid_and_kl_points_arguments():
    assert mk.parse_options({"kl_grid": "[2, 0.5,1]"}) == {"kl_grid": [0.5, 1.0, 2.0]}
    assert mk.parse_options({"kl_grid": "0.5,1"}) == {"kl_grid": [0.5, 1.0]}
    assert mk.parse_options({"kl_points": "7"}) == {"kl_points": 7}
    assert mk.parse_options({}) == {}
    for keyed, expected in [({"kl_grid": "[a, 1]"}, "kl_grid='[a, 1]'"), ({"kl_grid": "[1]"}, "kl_grid='[1]'"),
                            ({"kl_grid": "[1, inf]"}, "finite"), ({"kl_grid": "[1, 1.0, 2]"}, "gives 1 twice"),
                            ({"kl_points": "1"}, "kl_points='1'"), ({"kl_points": "x"}, "kl_points='x'"),
                            ({"kl_grid": "[1, 2]", "kl_points": "3"}, "give one")]:  # fmt: skip
        with pytest.raises(UsageError, match=re.escape(expected)) as e:
            mk.parse_options(keyed)
        assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# alignctl report, end to end

DRIFTS = {  # (KL, reward) per curve step 0, 40, 80, 120; + d per seed (0, 0.01, 0.02) on the reward after step 0
    "js": [(0.0, 0.10), (1.0, 0.50), (2.0, 0.70), (2.2, 0.60)],  # stops early in KL; its last step drops
    "reverse_kl": [(0.0, 0.10), (1.5, 0.30), (3.0, 0.60), (4.0, 0.90)],  # drifts twice as far, ends higher
}


def make_drift_sweep(root, curves=True, declared=None):
    """declared: the `comparison` block every run's config carries (a preset's declared comparison)."""
    sweep = root / "sweep"
    for name, points in DRIFTS.items():
        for seed in (0, 1, 2):
            d = 0.01 * seed
            rows = [{"step": 40 * i, "kl_to_reference": kl, "reward_mean": r + (d if i else 0.0),
                     "entropy_per_token": 3.0} for i, (kl, r) in enumerate(points)]  # fmt: skip
            final_kl, final_reward = points[-1]
            config = {"divergence.name": name, "train.seed": seed, **({"comparison": declared} if declared else {})}
            make_run(sweep, f"{name}-{seed}", config=config,
                     metrics={"reward_mean": final_reward + d, "kl_to_reference": final_kl,
                              "distinct_2": 0.3 + d + (0.1 if name == "reverse_kl" else 0.0)},
                     curve=rows if curves else None)  # fmt: skip
    return sweep


def test_alignctl_report_has_the_matched_kl_section_and_figure(tmp_path, capsys):
    sweep = make_drift_sweep(tmp_path)
    assert cli.main(["report", str(sweep), "wandb=false"]) == 0
    md = (sweep / "report.md").read_text()
    section = md[md.index("## Matched KL") :]
    hw = T975_3 * 0.01 / math.sqrt(3)  # seeds differ by 0.01 in reward: sample std 0.01 (times the KL share)
    assert f"{hw:.3f}" == "0.025"
    # common range: 0 to 2.2 (js stops there); grid 0, 0.55, 1.1, 1.65, 2.2
    header = "| group | label | n | KL 0.000 | KL 0.550 | KL 1.100 | KL 1.650 | KL 2.200 | "
    header += "efficiency (KL 0.000–2.200) |"
    assert header in section
    # js at 1.1: 0.5 + 0.2 * 0.1 + d; at 2.2: flat at its best, 0.7 + d (the drop at its last step repaired);
    # efficiency: (0.3 + d/2 + 0.6 + d + 0.2 * (0.7 + d)) / 2.2 = (1.04 + 1.7 d) / 2.2 -> mean 0.48045
    js_eff = summarize([(1.04 + 1.7 * d) / 2.2 for d in (0.0, 0.01, 0.02)])
    at_055 = format_stat(summarize([0.1 + (0.4 + d) * 0.55 for d in (0.0, 0.01, 0.02)]))  # on its first segment
    js_row = f"| g1 | divergence=js | 3 | 0.100 ± 0.000 | {at_055} | 0.530 ± 0.025 | 0.640 ± 0.025 | "
    js_row += "0.710 ± 0.025 | "
    assert f"{js_row}{format_stat(js_eff)} |" in section
    # reverse_kl at 2.2: 0.3 + 0.3 * 0.7 / 1.5 + d = 0.44 + d
    assert "| g2 | divergence=reverse_kl | 3 | 0.100 ± 0.000 |" in section and "| 0.450 ± 0.025 |" in section
    assert "- KL 0.000: no two groups apart beyond seed noise" in section
    assert "- KL 2.200: apart beyond seed noise (95% t-intervals disjoint): g1 > g2" in section
    assert "- efficiency: apart beyond seed noise (95% t-intervals disjoint): g1 > g2" in section
    # ... while at the last step reverse_kl is ahead beyond noise: what the matched comparison corrects
    assert "reward_mean: best is g2 (divergence=reverse_kl)" in md
    assert "![matched_kl](matched_kl.png)" in section
    assert_readable_png(sweep / "matched_kl.png")
    assert "matched_kl.png" in capsys.readouterr().out
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert [r["kind"] for r in rows[:8]] == ["run"] * 6 + ["group"] * 2  # the existing rows first, unchanged
    group = [r for r in rows if r["kind"] == "matched_kl_group" and r["group"] == "g1"]
    at = sorted((r for r in group if r["matched_stat"] == "at_kl"), key=lambda r: float(r["kl"]))
    assert [float(r["kl"]) for r in at] == pytest.approx([0.0, 0.55, 1.1, 1.65, 2.2])
    assert float(at[2]["value"]) == pytest.approx(0.53) and float(at[2]["value_ci_high"]) == pytest.approx(0.53 + hw)
    assert at[2]["value_n"] == "3" and at[2]["matched_metric"] == "reward_mean" and at[2]["seed"] == "0 1 2"
    (eff,) = [r for r in group if r["matched_stat"] == "efficiency"]
    assert (float(eff["kl_start"]), float(eff["kl_end"])) == (0.0, 2.2)
    assert float(eff["value"]) == pytest.approx(js_eff.mean) and eff["kl"] == ""
    runs = [r for r in rows if r["kind"] == "matched_kl_run" and r["matched_stat"] == "at_kl" and r["kl"] == "2.2"]
    assert sorted(float(r["value"]) for r in runs) == pytest.approx([0.44, 0.45, 0.46, 0.70, 0.71, 0.72])


def test_report_without_curves_says_so_in_one_line(tmp_path, capsys):
    sweep = make_drift_sweep(tmp_path, curves=False)
    report.report([sweep], sweep, wandb=False)
    md = (sweep / "report.md").read_text()
    section = md[md.index("## Matched KL") :].split("\n\n")
    assert section[1].startswith("No run has a curve.jsonl") and "\n" not in section[1]
    assert not (sweep / "matched_kl.png").exists()
    assert not [r for r in csv.DictReader((sweep / "report.csv").open()) if r["kind"].startswith("matched")]


def test_report_with_a_kl_grid(tmp_path, capsys):
    sweep = make_drift_sweep(tmp_path)
    (section,) = report.report([sweep], tmp_path / "out", wandb=False, kl_grid=[0.5, 2.0])
    (result,) = section.matched.comparisons
    assert result.grid == [0.5, 2.0]
    assert "| KL 0.500 | KL 2.000 | efficiency (KL 0.500–2.000) |" in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(UsageError, match=r"^kl_grid=\[1, 3\]: 3 is outside the KL range every run reaches"):
        report.report([sweep], tmp_path / "never", wandb=False, kl_grid=[1.0, 3.0])
    assert not (tmp_path / "never").exists()  # checked before anything is written


def test_kl_arguments_through_the_cli(tmp_path, capsys):
    sweep = make_drift_sweep(tmp_path)
    assert cli.main(["report", str(sweep), "wandb=false", "kl_points=3", f"out={tmp_path / 'three'}"]) == 0
    assert "| KL 0.000 | KL 1.100 | KL 2.200 |" in (tmp_path / "three" / "report.md").read_text()
    for bad, expected in ((["kl_grid=[1,3]"], "kl_grid=[1, 3]: 3 is outside the KL range every run reaches"),
                          (["kl_points=1"], "kl_points='1' for report; valid: a whole number from 2 to"),
                          (["kl_points=3", "kl_grid=[1,2]"], "kl_grid= and kl_points= for report: give one")):
        with pytest.raises(SystemExit) as e:
            cli.main(["report", str(sweep), "wandb=false", f"out={tmp_path / 'bad'}", *bad])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and "\n" not in err and expected in err, err
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------------------------------------------
# the curve's mechanisms over steps (report.plots.mechanisms)


def test_mechanisms_over_steps_are_seed_means_with_t_intervals_at_the_steps_every_run_has(tmp_path):
    from alignctl.report import plots

    a = fake_run("a", [{"step": 0, "seq_kl_rejected": 0.0}, {"step": 10, "seq_kl_rejected": 1.0},
                       {"step": 20, "seq_kl_rejected": 4.0}])  # fmt: skip
    b = fake_run("b", [{"step": 0, "seq_kl_rejected": 0.0}, {"step": 10, "seq_kl_rejected": 3.0}], seed=1)
    c = fake_run("c", [{"step": 0, "seq_kl_rejected": 0.0}, {"step": 10, "seq_kl_rejected": 2.0}], seed=2)
    points = plots.over_steps([a, b, c], "seq_kl_rejected")
    assert [step for step, _ in points] == [0, 10]  # step 20: only run a has it
    at_10 = points[1][1]
    assert at_10.mean == 2.0 and at_10.std == 1.0  # values 1, 3, 2
    assert at_10.half_width == pytest.approx(T975_3 / math.sqrt(3))
    assert plots.over_steps([a, fake_run("d", [{"step": 0, "reward_mean": 1.0}])], "seq_kl_rejected") == []

    groups = [fake_group("g1", [a, b, c], label="dpo"), fake_group("g2", [a], label="tdpo2")]
    path = plots.mechanisms(groups, tmp_path / "mechanisms.png")
    assert path == tmp_path / "mechanisms.png"
    assert_readable_png(path)
    assert plots.mechanisms([fake_group("g", [fake_run("e", [{"step": 0, "reward_mean": 0.1}])])],
                            tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()  # fmt: skip


DECLARED = {"claim": "JS's frontier lies above reverse KL's", "source": "a paper, Fig. 2",
            "metrics": ["reward_mean", "distinct_2"], "kl_grid": [0.5, 2.0]}  # fmt: skip


def test_a_declared_comparison_sets_the_grid_and_is_stated(tmp_path, capsys):
    """The preset's comparison (config.ComparisonConfig): its KL grid is the report's when the command line gives
    none, its claim, source, metrics and grid open the section, its metrics get noise statements; the command
    line's grid still wins; and runs declaring different comparisons use none (a warning)."""
    sweep = make_drift_sweep(tmp_path, declared=DECLARED)
    (section,) = report.report([sweep], tmp_path / "out", wandb=False)
    assert section.matched.comparisons[0].grid == [0.5, 2.0]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "**Declared before the runs (the preset's comparison): JS's frontier lies above reverse KL's**" in md
    assert "Source: a paper, Fig. 2. Metrics: reward_mean, distinct_2. KL grid: 0.5, 2." in md
    assert "- distinct_2: best is g2 (divergence=reverse_kl)" in md  # higher is better, as declared
    assert "comparison" not in " ".join(section.varying_keys) and "comparison.claim" not in section.fixed
    out = capsys.readouterr().out
    assert "Declared before the runs (the preset's comparison): JS's frontier" in out
    (given,) = report.report([sweep], tmp_path / "given", wandb=False, kl_points=3)
    assert len(given.matched.comparisons[0].grid) == 3
    (other,) = [r for r in sweep.iterdir() if r.name == "js-0"]
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["comparison"]["kl_grid"] = [1.0]
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    (mixed,) = report.report([sweep], tmp_path / "mixed", wandb=False)
    assert mixed.declared is None and len(mixed.matched.comparisons[0].grid) == 5
    assert "declare different comparisons" in capsys.readouterr().err


def test_a_declared_grid_no_run_reaches_is_said_and_replaced_by_even_points(tmp_path, capsys):
    sweep = make_drift_sweep(tmp_path, declared={**DECLARED, "kl_grid": [1.0, 3.0]})
    (section,) = report.report([sweep], tmp_path / "out", wandb=False)
    assert len(section.matched.comparisons[0].grid) == 5  # kl_points' default, over the range every run reaches
    md = (tmp_path / "out" / "report.md").read_text()
    assert ("KL grid: 1, 3. Not reached: comparison.kl_grid=[1, 3]: 3 is outside the KL range every run reaches"
            in md)  # fmt: skip
    assert "compared at evenly spaced KL values instead" in capsys.readouterr().err


def test_a_declared_metric_no_run_has_is_warned(tmp_path, capsys):
    sweep = make_drift_sweep(tmp_path, declared={**DECLARED, "metrics": ["reward_mean", "distinct2"]})
    report.report([sweep], tmp_path / "out", wandb=False)
    err = capsys.readouterr().err
    assert "comparison.metrics names distinct2, which no run's eval.json has; its metrics: reward_mean," in err
