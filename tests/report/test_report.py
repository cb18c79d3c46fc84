"""`alignctl report`: fake run directories -> seed groups, t-intervals, sections, table, report.md/.csv, PNGs."""

import copy
import csv
import json
import math
import sys
import types

import numpy as np
import pytest
import yaml
from matplotlib.image import imread

from alignctl.cli import main as cli
from alignctl.errors import UsageError
from alignctl.report import plots as report_plots
from alignctl.report import tables as report

T975 = {2: 12.706204736174707, 3: 4.302652729911275}  # scipy.stats.t.ppf(0.975, n - 1), written out

BASE_CONFIG = {
    "objective": {"name": "fdpo", "beta": 0.1},
    "divergence": {"name": "js", "alpha": None},
    "reward": {"name": "sentiment"},
    "dataset": {"name": "toy_sentiment", "seed": 0, "num_test_prompts": 128},
    "model": {"name": "tiny", "kernel": "fused", "lora": {"r": 0, "target_modules": ["all-linear"]}},
    "train": {"seed": 0, "max_steps": 120, "batch_size": 16, "num_threads": 1, "resume": "false", "overwrite": False},
    "eval": {"enabled": True, "num_prompts": 64, "reference": None},
    "tracking": "wandb",
}


def make_run(root, name, *, config=None, metrics=None, status="finished", eval_text=None, curve=None,
             reliability=None, wandb_run_id=None):
    """A run directory as `alignctl train` leaves it: config.yaml, run.json, eval.json (+ curve, reliability)."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    cfg = copy.deepcopy(BASE_CONFIG)
    for key, value in (config or {}).items():
        block, _, leaf = key.partition(".")
        if leaf:
            cfg[block][leaf] = value
        else:
            cfg[block] = value
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))  # Hydra's copy: never a run of its own
    (run / "run.json").write_text(json.dumps({"status": status, "step": 120, "wandb_run_id": wandb_run_id}))
    results = {"num_prompts": 64, "seed": 0, "num_test_prompts": 128, "kernel": "fused", "ece": None,
               "preference_metrics_skipped": False, **(metrics or {})}
    if eval_text is not None:
        (run / "eval.json").write_text(eval_text)
    elif metrics is not False:
        (run / "eval.json").write_text(json.dumps(results))
    if curve:
        (run / "curve.jsonl").write_text("".join(json.dumps(row) + "\n" for row in curve) + '{"step": 9')
    if reliability:
        (run / "reliability.json").write_text(json.dumps(reliability))
    return run


def diagram(counts, accuracy, confidence):
    """A reliability.json: 10 bins over [0, 1]."""
    return {"edges": [i / 10 for i in range(11)], "counts": counts, "accuracy": accuracy, "confidence": confidence,
            "n": sum(counts), "ece": 0.0}


REWARDS = {"js": [0.50, 0.55, 0.62], "reverse_kl": [0.40, 0.46, 0.49], "alpha": [0.10, 0.12, 0.11]}
KLS = {"js": [2.0, 2.4, 2.2], "reverse_kl": [3.1, 3.3, 2.9], "alpha": [0.5, 0.6, 0.7]}


def make_sweep(root, divergences=("js", "reverse_kl", "alpha"), seeds=(0, 1, 2), **extra):
    """A sweep of f-DPO over divergences x seeds, with curves, reliability bins and pass@k."""
    sweep = root / "20261201-101500-sweep"
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    job = 0
    for d in divergences:
        for seed in seeds:
            metrics = {
                "reward_mean": REWARDS[d][seed], "reward_std": 0.2, "reference_reward_mean": 0.05,
                "kl_to_reference": KLS[d][seed], "win_rate_vs_reference": 0.6 + 0.01 * seed,
                "entropy_per_token": 3.0 - 0.1 * seed, "distinct_2": 0.5 + 0.02 * seed, "self_bleu": 0.3 + 0.01 * seed,
                "preference_accuracy": 0.7, "pass@1": 0.2 + 0.05 * seed, "pass@2": 0.3 + 0.05 * seed,
                "pass@4": 0.4 + 0.05 * seed, "reference_pass@1": 0.1, "reference_pass@2": 0.15,
                "reference_pass@4": 0.2, "ood_pass@1": 0.1, "ood_pass@4": 0.2,
            }
            config = {"divergence.name": d, "divergence.alpha": 0.3 if d == "alpha" else None, "train.seed": seed,
                      "train.num_threads": 1 + seed}
            curve = [{"step": s, "reward_mean": metrics["reward_mean"] * s / 120, "kl_to_reference": metrics[
                "kl_to_reference"] * s / 120} for s in (120, 40, 80)]
            rel = diagram([0] * 5 + [3, 2, 1, 0, 4], [None] * 5 + [0.6, 0.5, 1.0, None, 0.75],
                          [None] * 5 + [0.55, 0.65, 0.72, None, 0.95])
            make_run(sweep, f"{job}-fdpo-{d}", config=config, metrics=metrics, curve=curve, reliability=rel, **extra)
            job += 1
    return sweep


@pytest.fixture
def no_figures(monkeypatch):
    """Tests about numbers and text skip drawing (the figure tests below draw)."""
    monkeypatch.setattr(report_plots, "write_figures", lambda groups, out_dir, suffix="": [])
    monkeypatch.setattr(report_plots, "matched_kl", lambda comparisons, path: None)


# ---------------------------------------------------------------------------------------------------------------
# statistics


def test_summarize_is_mean_sample_std_and_t_interval():
    values = [1.0, 2.0, 4.0]
    mean = 7 / 3
    std = math.sqrt(((1 - mean) ** 2 + (2 - mean) ** 2 + (4 - mean) ** 2) / 2)
    stat = report.summarize(values)
    assert stat.n == 3
    assert stat.mean == pytest.approx(mean)
    assert stat.std == pytest.approx(std)
    assert stat.half_width == pytest.approx(T975[3] * std / math.sqrt(3))
    assert (stat.ci_low, stat.ci_high) == pytest.approx((mean - stat.half_width, mean + stat.half_width))
    two = report.summarize([0.5, 0.7])
    assert two.half_width == pytest.approx(T975[2] * math.sqrt(0.02) / math.sqrt(2))


def test_one_seed_has_no_interval_not_a_zero_one():
    stat = report.summarize([0.42])
    assert (stat.mean, stat.n, stat.std) == (0.42, 1, None)
    assert (stat.half_width, stat.ci_low, stat.ci_high) == (None, None, None)
    assert report.format_stat(stat) == "0.420 ± n/a"


def test_equal_values_have_an_exact_zero_interval():
    stat = report.summarize([0.7, 0.7, 0.7])
    assert stat.std == 0.0 and stat.half_width == 0.0
    assert report.format_stat(stat) == "0.700 ± 0.000"
    assert report.format_stat(report.summarize([2e-5, 4e-5])) == "3e-05 ± 0.000127"


def test_labels_leave_out_nulls_only_while_groups_stay_apart():
    groups = [report.Group("g1", "", {"model.reference": None}, [], {}),
              report.Group("g2", "", {"model.reference": "/ref"}, [], {})]
    report.assign_labels(groups)
    assert [g.label for g in groups] == ["model.reference=null", "model.reference=/ref"]
    groups = [report.Group("g1", "", {"divergence.name": "js", "divergence.alpha": None}, [], {}),
              report.Group("g2", "", {"divergence.name": "alpha", "divergence.alpha": 0.3}, [], {})]
    report.assign_labels(groups)
    assert [g.label for g in groups] == ["divergence=js", "divergence=alpha divergence.alpha=0.3"]


def test_metric_values_keep_numbers_only():
    got = report.metric_values({"reward_mean": 0.5, "pass@1": 1, "ece": None, "kernel": "fused", "num_prompts": 64,
                                "num_ood_prompts": 8, "samples_per_prompt": 4, "seed": 0, "num_pairs": 10,
                                "max_new_tokens": 24, "preference_metrics_skipped": True, "x": float("nan")})
    assert got == {"reward_mean": 0.5, "pass@1": 1.0}


def test_pool_reliability_sums_counts_and_weights_means():
    a = diagram([0] * 5 + [2, 0, 0, 0, 2], [None] * 5 + [0.5, None, None, None, 1.0],
                [None] * 5 + [0.55, None, None, None, 0.95])
    b = diagram([0] * 5 + [6, 0, 0, 0, 0], [None] * 5 + [0.5 + 1 / 3, None, None, None, None],
                [None] * 5 + [0.55, None, None, None, None])
    pooled = report.pool_reliability([a, b])
    assert pooled["counts"][5] == 8 and pooled["counts"][9] == 2 and pooled["n"] == 10
    assert pooled["accuracy"][5] == pytest.approx((2 * 0.5 + 6 * (0.5 + 1 / 3)) / 8)
    assert pooled["confidence"][5] == pytest.approx(0.55)
    assert pooled["accuracy"][0] is None
    expected = 8 / 10 * abs(pooled["accuracy"][5] - 0.55) + 2 / 10 * abs(1.0 - 0.95)
    assert pooled["ece"] == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------------------------
# reading, grouping, sections


def test_groups_runs_by_everything_but_the_seed(tmp_path, capsys, no_figures):
    sweep = make_sweep(tmp_path, wandb_run_id=None)
    sections = report.report([sweep], sweep, wandb=False)
    assert len(sections) == 1
    (section,) = sections
    assert [g.label for g in section.groups] == [  # null values left out: the labels still tell groups apart
        "divergence=js", "divergence=reverse_kl", "divergence=alpha divergence.alpha=0.3"]
    for group, d in zip(section.groups, ("js", "reverse_kl", "alpha")):
        assert sorted(r.seed for r in group.runs) == [0, 1, 2]
        rewards = REWARDS[d]
        mean = sum(rewards) / 3
        std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / 2)
        stat = group.stats["reward_mean"]
        assert stat.mean == pytest.approx(mean)
        assert stat.half_width == pytest.approx(T975[3] * std / math.sqrt(3))
        assert group.stats["kl_to_reference"].mean == pytest.approx(sum(KLS[d]) / 3)
        assert "num_prompts" not in group.stats and "seed" not in group.stats and "ece" not in group.stats


def test_varying_keys_are_columns_and_identical_keys_are_fixed(tmp_path, capsys, no_figures):
    sweep = make_sweep(tmp_path)
    (section,) = report.report([sweep], tmp_path / "out", wandb=False)
    assert section.varying_keys == ["divergence.name", "divergence.alpha"]
    assert section.fixed["objective.name"] == "fdpo" and section.fixed["train.max_steps"] == 120
    assert not any(k in section.fixed for k in ("train.seed", "train.num_threads", "tracking", "eval.reference"))
    header, rows = report.table_rows(section)
    assert header[:5] == ["group", "divergence.name", "divergence.alpha", "n", "seeds"]
    assert header[5:] == ["reward_mean", "win_rate_vs_reference", "kl_to_reference", "entropy_per_token",
                          "distinct_2", "self_bleu", "preference_accuracy", "pass@1", "pass@4"]
    assert rows[0][:5] == ["g1", "js", "null", "3", "0, 1, 2"]
    out = capsys.readouterr().out
    assert "fixed: objective: name=fdpo, beta=0.1" in out
    assert "lora.target_modules=[all-linear]" in out  # printed as text, not eaten as rich markup
    assert "95% t-interval over seeds" in out
    md = (tmp_path / "out" / "report.md").read_text()
    assert "**Fixed:** objective: name=fdpo, beta=0.1" in md
    assert "| group | divergence.name | divergence.alpha | n | seeds | reward_mean |" in md
    assert "95% t-interval over seeds" in md


def test_search_skips_hydra_folders_and_sorts_naturally(tmp_path):
    for i in (10, 2, 1):
        make_run(tmp_path / "sweep", f"{i}-fdpo-js", config={"train.seed": i})
    assert [p.name for p in report.find_run_dirs([tmp_path])] == ["1-fdpo-js", "2-fdpo-js", "10-fdpo-js"]
    single = tmp_path / "sweep" / "2-fdpo-js"
    assert report.find_run_dirs([single]) == [single]


def test_unusable_runs_are_skipped_with_one_warning_each(tmp_path, capsys, no_figures):
    make_run(tmp_path, "0-good", metrics={"reward_mean": 0.5, "kl_to_reference": 1.0})
    bad = {
        "1-corrupt": dict(eval_text="{not json"),
        "2-missing": dict(metrics=False),
        "3-list": dict(eval_text="[1, 2]"),
        "4-running": dict(status="running", metrics={"reward_mean": 0.9}),
        "5-trained": dict(status="trained", metrics={"reward_mean": 0.9}),
    }
    for name, kwargs in bad.items():
        make_run(tmp_path, name, **kwargs)
    (section,) = report.report([tmp_path], tmp_path, wandb=False)
    assert [r.path.name for r in section.runs] == ["0-good"]
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == len(bad)
    for line, (name, why) in zip(warnings, [("1-corrupt", "not valid JSON"), ("2-missing", "no eval.json"),
                                            ("3-list", "not a JSON object"), ("4-running", "'running', not finished"),
                                            ("5-trained", "'trained', not finished")]):
        assert name in line and why in line and line.startswith("alignctl: warning: skipping")
    assert (tmp_path / "report.md").is_file() and "Skipped:" in (tmp_path / "report.md").read_text()


def test_no_finished_run_is_a_usage_error(tmp_path, capsys):
    make_run(tmp_path, "0-running", status="running", metrics=False)
    with pytest.raises(UsageError, match="no finished run with an eval.json under .*" + tmp_path.name):
        report.report([tmp_path], tmp_path, wandb=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no finished run"):
        report.report([tmp_path / "empty"], tmp_path, wandb=False)


def test_how_one_model_is_trained_or_scored_is_one_comparison(tmp_path, no_figures):
    """A LoRA-rank or kernel sweep is compared in one table; another model (model.name) is a section of its own."""
    metrics = {"reward_mean": 0.5, "kl_to_reference": 1.0}
    make_run(tmp_path, "r8", config={"model": {"name": "tiny", "kernel": "fused", "lora": {"r": 8}}}, metrics=metrics)
    make_run(tmp_path, "r16", config={"model": {"name": "tiny", "kernel": "naive", "lora": {"r": 16}}}, metrics=metrics)
    make_run(tmp_path, "other", config={"model": {"name": "hf", "kernel": "fused", "lora": {"r": 8}}}, metrics=metrics)
    sections = report.report([tmp_path], tmp_path / "out", wandb=False)
    assert sorted(len(s.groups) for s in sections) == [1, 2]


def test_different_datasets_are_separate_sections(tmp_path, capsys):
    metrics = {"reward_mean": 0.5, "kl_to_reference": 1.0}
    for seed in (0, 1):
        make_run(tmp_path, f"sent-js-{seed}", config={"train.seed": seed}, metrics=metrics)
        make_run(tmp_path, f"sent-rkl-{seed}", config={"train.seed": seed, "divergence.name": "reverse_kl"},
                 metrics=metrics)
        make_run(tmp_path, f"arith-js-{seed}", config={"train.seed": seed, "dataset": {"name": "toy_arith", "seed": 0}},
                 metrics={"reward_mean": 0.9, "kl_to_reference": 2.0, "pass@1": 0.3})
    sections = report.report([tmp_path], tmp_path / "out", wandb=False)
    assert [s.title for s in sections] == ["dataset.name=toy_arith, dataset.num_test_prompts=null",
                                           "dataset.name=toy_sentiment, dataset.num_test_prompts=128"]
    assert [len(s.groups) for s in sections] == [1, 2]
    assert all(len({r.config["dataset.name"] for r in s.runs}) == 1 for s in sections)
    assert sections[0].suffix == "-toy_arith-null" and sections[1].suffix == "-toy_sentiment-128"
    out = tmp_path / "out"
    assert (out / "frontier-toy_arith-null.png").is_file() and (out / "frontier-toy_sentiment-128.png").is_file()
    assert not (out / "frontier.png").exists()
    md = (out / "report.md").read_text()
    assert md.count("never mixed") == 1 and md.count("\n## dataset.name=") == 2
    assert "2 separate sections" in capsys.readouterr().out
    assert [g.id for s in sections for g in s.groups] == ["g1", "g2", "g3"]


# ---------------------------------------------------------------------------------------------------------------
# noise statement


def fake_group(label, values):
    stats = {"reward_mean": report.summarize(values)}
    return report.Group(f"g{label}", label, {}, [None] * len(values), stats)


def test_noise_statement_names_best_and_overlapping_groups():
    groups = [fake_group("a", [0.50, 0.55, 0.62]), fake_group("b", [0.40, 0.46, 0.49]),
              fake_group("c", [0.10, 0.12, 0.11])]
    text = report.noise_statement(groups, "reward_mean")
    assert text.startswith("reward_mean: best is ga (a): 0.557 ± ")
    assert "Within seed noise of ga at 3 seeds (95% t-intervals overlap): gb (b)." in text
    assert "beyond seed noise (intervals disjoint): gc (c)." in text
    assert report.noise_statement(groups, "pass@1") is None


def test_noise_statement_at_one_seed_says_differences_are_not_findings():
    groups = [fake_group("a", [0.5]), fake_group("b", [0.4])]
    text = report.noise_statement(groups, "reward_mean")
    assert "best is ga (a)" in text and "every group has a single seed" in text
    assert "single-seed differences are not findings" in text
    mixed = report.noise_statement([fake_group("a", [0.5, 0.6]), fake_group("b", [0.4, 0.5]), fake_group("c", [0.9])],
                                   "reward_mean")
    assert "best is gc (c)" in mixed and "single-seed differences are not findings" in mixed
    among = report.noise_statement([fake_group("a", [0.500, 0.502]), fake_group("b", [0.499, 0.501]),
                                    fake_group("c", [0.1, 0.1001]), fake_group("d", [0.9])], "reward_mean")
    assert "best is gd (d)" in among and "Among groups with several seeds the best is ga (a)" in among
    assert "overlap): gb (b). Below it beyond seed noise (intervals disjoint): gc (c)." in among
    partial = report.noise_statement([fake_group("a", [0.5, 0.6]), fake_group("b", [0.1])], "reward_mean")
    assert "Within seed noise of ga at 2 seeds" in partial
    assert "Single seed, not a finding either way: gb (b)." in partial


def test_report_md_has_the_noise_statement(tmp_path, capsys, no_figures):
    sweep = make_sweep(tmp_path)
    report.report([sweep], sweep, wandb=False)
    md = (sweep / "report.md").read_text()
    assert "- reward_mean: best is g1 (divergence=js): 0.557 ± " in md
    assert "Within seed noise of g1 at 3 seeds (95% t-intervals overlap): g2 (divergence=reverse_kl)." in md
    assert "- pass@1: best is" in md
    out = capsys.readouterr().out
    assert "reward_mean: best is g1 (divergence=js)" in out
    assert report.wrap_header("win_rate_vs_reference") == "win_rate_vs_\nreference"
    assert report.wrap_header("divergence.name") == "divergence.\nname" and report.wrap_header("pass@1") == "pass@1"


# ---------------------------------------------------------------------------------------------------------------
# outputs: CSV and PNGs


def test_csv_has_a_row_per_run_then_per_group(tmp_path, capsys, no_figures):
    sweep = make_sweep(tmp_path, divergences=("js", "reverse_kl"))
    make_run(sweep, "9-fdpo-alpha", config={"divergence.name": "alpha", "divergence.alpha": 0.5},
             metrics={"reward_mean": 0.3, "kl_to_reference": 0.4})
    report.report([sweep], sweep, wandb=False)
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    runs = [r for r in rows if r["kind"] == "run"]
    groups = [r for r in rows if r["kind"] == "group"]
    assert len(runs) == 7 and len(groups) == 3
    assert rows.index(groups[0]) == 7  # runs first
    assert [r["group"] for r in runs] == ["g1"] * 3 + ["g2"] * 3 + ["g3"]
    assert runs[0]["run_dir"].endswith("0-fdpo-js") and runs[0]["seed"] == "0"
    assert float(runs[1]["reward_mean"]) == pytest.approx(REWARDS["js"][1])
    assert runs[0]["divergence.name"] == "js" and "objective.name" not in runs[0]
    assert float(runs[0]["ood_pass@4"]) == pytest.approx(0.2)  # all metrics, not just the table's
    g1 = groups[0]
    mean = sum(REWARDS["js"]) / 3
    hw = T975[3] * math.sqrt(sum((r - mean) ** 2 for r in REWARDS["js"]) / 2) / math.sqrt(3)
    assert float(g1["reward_mean"]) == pytest.approx(mean)
    assert float(g1["reward_mean_ci_low"]) == pytest.approx(mean - hw)
    assert float(g1["reward_mean_ci_high"]) == pytest.approx(mean + hw)
    assert g1["reward_mean_n"] == "3" and g1["seed"] == "0 1 2" and g1["label"] == "divergence=js"
    single = groups[2]
    assert single["reward_mean_n"] == "1" and single["reward_mean_ci_low"] == "" and single["reward_mean_std"] == ""


def assert_readable_png(path):
    image = imread(path)
    assert image.size > 0 and image.shape[0] > 50 and image.shape[1] > 50
    assert not np.all(image == image.reshape(-1, image.shape[-1])[0]), f"{path} is all one colour"


def test_every_figure_is_written_and_readable(tmp_path, capsys):
    sweep = make_sweep(tmp_path)
    (section,) = report.report([sweep], sweep, wandb=False)
    names = ["frontier.png", "diversity.png", "pass_at_k.png", "reliability.png"]
    assert [p.name for p in section.figures] == names
    for name in names:
        assert_readable_png(sweep / name)
        assert f"![{name[:-4]}]({name})" in (sweep / "report.md").read_text()
    g = section.groups[0]
    assert g.reliability["counts"][5] == 9 and g.reliability["n"] == 30


def test_figures_without_pass_at_k_or_reliability_are_not_written(tmp_path, capsys):
    make_run(tmp_path, "0", metrics={"reward_mean": 0.5, "kl_to_reference": 1.0, "distinct_2": 0.4})
    make_run(tmp_path, "1", config={"divergence.name": "reverse_kl"},
             metrics={"reward_mean": 0.4, "kl_to_reference": 2.0})
    (section,) = report.report([tmp_path], tmp_path, wandb=False)
    assert [p.name for p in section.figures] == ["frontier.png", "diversity.png"]
    for p in section.figures:
        assert_readable_png(p)
    assert not (tmp_path / "pass_at_k.png").exists() and not (tmp_path / "reliability.png").exists()
    assert "single-seed differences are not findings" in (tmp_path / "report.md").read_text()


# ---------------------------------------------------------------------------------------------------------------
# W&B


def fake_wandb(monkeypatch, fail=False):
    calls = []

    class FakeRun:
        def log(self, row, step=None):
            calls.append(("log", sorted(row), step))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        if fail:
            raise RuntimeError("no W&B here\nsecond line")
        calls.append(("init", kwargs))
        return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init, Image=lambda path: path))
    return calls


def test_figures_are_logged_to_each_runs_wandb_run(tmp_path, monkeypatch, capsys):
    calls = fake_wandb(monkeypatch)
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = make_run(tmp_path, "0", metrics={"reward_mean": 0.5, "kl_to_reference": 1.0}, wandb_run_id="abc123")
    (run / "wandb").mkdir()
    make_run(tmp_path, "1", metrics={"reward_mean": 0.5, "kl_to_reference": 1.0}, wandb_run_id="nofolder")
    report.report([tmp_path], tmp_path, wandb=True)
    inits = [c[1] for c in calls if c[0] == "init"]
    assert len(inits) == 1
    assert inits[0]["id"] == "abc123" and inits[0]["dir"] == str(run) and inits[0]["resume"] == "allow"
    assert inits[0]["mode"] == "offline"
    assert ("log", ["report/frontier"], 120) in calls and calls[-1] == ("finish",)


def test_wandb_off_switch_disabled_mode_and_failure(tmp_path, monkeypatch, capsys):
    calls = fake_wandb(monkeypatch)
    run = make_run(tmp_path, "0", metrics={"reward_mean": 0.5, "kl_to_reference": 1.0}, wandb_run_id="abc123")
    (run / "wandb").mkdir()
    assert cli.main(["report", str(tmp_path), "wandb=false"]) == 0
    monkeypatch.setenv("WANDB_MODE", "disabled")
    report.report([tmp_path], tmp_path)
    assert calls == []
    monkeypatch.setenv("WANDB_MODE", "offline")
    fake_wandb(monkeypatch, fail=True)
    capsys.readouterr()
    report.report([tmp_path], tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not log" in err[0] and "abc123" in err[0] and "no W&B here" in err[0]


# ---------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_report_writes_into_the_path_given(tmp_path, capsys, no_figures):
    sweep = make_sweep(tmp_path, divergences=("js", "reverse_kl"))
    assert cli.main(["report", str(sweep), "wandb=false"]) == 0
    out = capsys.readouterr().out
    assert "divergence." in out and "0.557 ± 0.150" in out
    assert (sweep / "report.md").is_file() and (sweep / "report.csv").is_file()
    other = tmp_path / "elsewhere"
    assert cli.main(["report", str(sweep / "0-fdpo-js"), str(sweep / "3-fdpo-reverse_kl"), f"out={other}",
                     "wandb=false"]) == 0
    assert len([r for r in csv.DictReader((other / "report.csv").open()) if r["kind"] in ("run", "group")]) == 4


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    return exc.value.code, capsys.readouterr().err.strip()


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    make_run(tmp_path, "run", status="running", metrics=False)
    cases = [
        (["report"], "at least one"),
        (["report", str(tmp_path / "nope")], "does not exist"),
        (["report", str(tmp_path / "run" / "config.yaml")], "not a directory"),
        (["report", str(tmp_path), str(tmp_path)], "out=<dir>"),
        (["report", str(tmp_path), "wandb=maybe"], "wandb='maybe'"),
        (["report", str(tmp_path), "colour=red"], "unknown report option"),
        (["report", str(tmp_path), "--fast"], "--fast"),
    ]
    for argv, expected in cases:
        code, err = run_cli(capsys, *argv)
        assert code == 2 and len(err.splitlines()) == 1 and expected in err, (argv, err)
    code, err = run_cli(capsys, "report", str(tmp_path))
    assert code == 2 and err.splitlines()[-1].startswith("alignctl: error: report: no finished run with an eval.json")
    assert str(tmp_path) in err.splitlines()[-1]


def test_figures_reach_a_real_offline_wandb_run(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = make_run(tmp_path, "0", metrics={"reward_mean": 0.5, "kl_to_reference": 1.0}, wandb_run_id="rep0rt01")
    (run / "wandb").mkdir()
    (section,) = report.report([tmp_path], tmp_path / "out")
    assert "could not log" not in capsys.readouterr().err
    (offline,) = (run / "wandb").glob("offline-run-*-rep0rt01")
    assert list((offline / "files" / "media" / "images" / "report").glob("frontier_*.png"))


def test_a_run_reached_by_two_paths_is_read_once(tmp_path):
    run = make_run(tmp_path / "sweep", "0-fdpo-js")
    assert report.find_run_dirs([tmp_path, run, tmp_path / "sweep" / ".." / "sweep"]) == [run]


def test_length_judge_and_lm_eval_columns_with_intervals(tmp_path, capsys):
    """What a paper reports from one sweep: length, the judge's win rate and its length-controlled twin, and an
    lm-eval task's accuracy for the policy beside the reference's, each a seed mean with its interval; and the
    reward-vs-length figure."""
    sweep = tmp_path / "sweep"
    values = {"dpo": [(0.60, 0.55, 30.0, 0.40), (0.64, 0.57, 32.0, 0.42), (0.62, 0.56, 31.0, 0.44)],
              "simpo": [(0.50, 0.52, 20.0, 0.30), (0.52, 0.50, 21.0, 0.31), (0.51, 0.51, 22.0, 0.32)]}  # fmt: skip
    for name, rows in values.items():
        for seed, (judge, lc, length, acc) in enumerate(rows):
            make_run(sweep, f"{name}-{seed}", config={"objective": {"name": name}, "train.seed": seed},
                     metrics={"reward_mean": 0.1 * seed, "kl_to_reference": 1.0, "judge_win_rate": judge,
                              "judge_lc_win_rate": lc, "length_tokens_mean": length,
                              "reference_length_tokens_mean": 18.0, "reference_reward_mean": 0.0,
                              "lm_eval/toy_mc/acc": acc, "reference_lm_eval/toy_mc/acc": 0.35})  # fmt: skip
    (section,) = report.report([sweep], tmp_path / "out", wandb=False)
    headers, rows = report.table_rows(section)
    for column in ("judge_win_rate", "judge_lc_win_rate", "length_tokens_mean", "lm_eval/toy_mc/acc",
                   "reference_lm_eval/toy_mc/acc"):  # fmt: skip
        assert any(column.replace("_", "") in h.replace("_", "").replace("\n", "") for h in headers), (column, headers)
    dpo = next(g for g in section.groups if "dpo" in g.label and "simpo" not in g.label)
    stat = dpo.stats["judge_win_rate"]
    assert stat.mean == pytest.approx(0.62) and stat.half_width == pytest.approx(4.303 * 0.02 / 3**0.5, rel=1e-3)
    assert dpo.stats["reference_lm_eval/toy_mc/acc"].mean == pytest.approx(0.35)
    assert (tmp_path / "out" / "length.png").is_file()
