"""`alignctl report`: run directories -> seed groups with 95% t-intervals -> a terminal table, report.md,
report.csv and figures (plots.py), and the groups compared at equal KL along their curves (matched_kl.py). Runs that
differ only in train.seed form a group; runs on different datasets or models are never mixed (one section each)."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alignctl.errors import UsageError
from alignctl.eval.curve import CURVE_FILE, read_curve
from alignctl.report import matched_kl
from alignctl.report.stats import CI_NAME, Stat, format_stat, intervals_overlap, summarize

# Config keys that never tell results apart: the seed (what a group averages over) and how a run was executed.
IGNORED_KEYS = ("train.seed", "train.num_threads", "train.resume", "train.overwrite", "tracking", "eval.reference",
                "launcher", "distributed", "comparison")  # fmt: skip
COMPARISON = "comparison."  # a preset's declared comparison (config.ComparisonConfig): describes a sweep, not a run
SECTION_PREFIXES = ("dataset.", "model.")  # runs that differ here are never compared in one table
# ... except in how the same model is trained or scored: a LoRA-rank or kernel sweep is one comparison
SAME_MODEL_KEYS = ("model.kernel", "model.lora.", "model.gradient_checkpointing", "model.attn_implementation",
                   "model.rollout")  # fmt: skip
BOOKKEEPING = {"num_prompts", "samples_per_prompt", "max_new_tokens", "num_pairs", "seed"}
MAIN_METRICS = (
    "reward_mean",
    "win_rate_vs_reference",
    "lc_win_rate_vs_reference",
    "judge_win_rate",
    "judge_lc_win_rate",
    "length_tokens_mean",
    "kl_to_reference",
    "entropy_per_token",
    "distinct_2",
    "self_bleu",
    "preference_accuracy",
    "ece",
    "pass@1",
)
LM_EVAL_ACCURACY = re.compile(r"lm_eval/[^/]+/acc(_norm)?")  # eval.json's lm_eval/<task>/<metric> keys
NOISE_METRICS = ("reward_mean", "pass@1")  # higher is better: the best group and who is within noise of it
PASS_AT_K = re.compile(r"^(reference_)?(.*?)pass@(\d+)$")  # (reference_)(split prefix, e.g. ood_)pass@k


# ---------------------------------------------------------------------------------------------------------------
# Reading run directories


class SkippedRun(Exception):
    """A run directory the report leaves out; the message says why."""


@dataclass
class Run:
    """One finished, evaluated run directory."""

    path: Path
    config: dict[str, Any]  # flattened: {"objective.name": "fdpo", "train.seed": 0, ...}
    metrics: dict[str, float]
    wandb_run_id: str | None = None
    step: int | None = None  # run.json's last trained step: where the report's figures go in the W&B history
    curve: list[dict[str, Any]] = field(default_factory=list)
    reliability: dict[str, Any] | None = None

    @property
    def seed(self) -> Any:
        return self.config.get("train.seed")


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """Each path itself if it holds config.yaml, else the directories under it that do (hidden folders such as
    .hydra/ and the insides of run directories are not searched). Sorted naturally (2-x before 10-x)."""
    found: dict[Path, Path] = {}  # resolved -> as given: a run reached by two paths is read once
    for root in paths:
        if not root.exists():
            raise UsageError(f"report: {root} does not exist")
        if not root.is_dir():
            raise UsageError(f"report: {root} is not a directory (give run directories or folders of them)")
        for dirpath, dirnames, filenames in os.walk(root):
            if "config.yaml" in filenames:
                found.setdefault(Path(dirpath).resolve(), Path(dirpath))
                dirnames[:] = []
            else:
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    return sorted(found.values(), key=natural_key)


def natural_key(path: Path) -> list[Any]:
    """Sort key that orders numbers by value: sweep/2-x before sweep/10-x."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": value}; lists become tuples (hashable, comparable)."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tuple(tree) if isinstance(tree, list) else tree}


def metric_values(results: dict[str, Any]) -> dict[str, float]:
    """The metrics of an eval.json: finite int/float values (not bools), without bookkeeping keys such as
    num_prompts, seed or num_test_prompts."""
    return {
        key: float(value)
        for key, value in results.items()
        if isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and key not in BOOKKEEPING
        and not re.fullmatch(r"num_\w*prompts", key)
    }


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise SkippedRun(f"no {what}")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SkippedRun(f"{what} is not valid JSON ({e})") from None


def read_reliability(path: Path) -> dict[str, Any] | None:
    """reliability.json if it has the bins a pooled diagram needs, else None."""
    try:
        diagram = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    needed = {"edges", "counts", "accuracy", "confidence"}
    return diagram if isinstance(diagram, dict) and needed <= set(diagram) else None


def load_run(path: Path) -> Run:
    """A finished run directory with its config, eval.json metrics, curve and reliability bins; SkippedRun (with
    the reason) for a run that is not finished or has no readable eval.json."""
    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SkippedRun(f"config.yaml is not readable YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise SkippedRun("config.yaml is not a mapping")
    record = _read_json(path / "run.json", "run.json")
    status = record.get("status") if isinstance(record, dict) else None
    if status != "finished":
        raise SkippedRun(f"status is {status!r}, not finished")
    results = _read_json(path / "eval.json", "eval.json")
    if not isinstance(results, dict):
        raise SkippedRun(f"eval.json is not a JSON object (a {type(results).__name__})")
    return Run(
        path=path,
        config=flatten(config),
        metrics=metric_values(results),
        wandb_run_id=record.get("wandb_run_id"),
        step=record["step"] if isinstance(record.get("step"), int) and not isinstance(record["step"], bool) else None,
        curve=sorted(read_curve(path / CURVE_FILE), key=lambda row: row["step"]),
        reliability=read_reliability(path / "reliability.json"),
    )


# ---------------------------------------------------------------------------------------------------------------
# Statistics


def pool_reliability(diagrams: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool reliability diagrams over seeds: counts summed per bin, accuracy and confidence as count-weighted means,
    ECE = sum_b (n_b / n) |acc_b - conf_b| of the pooled bins."""
    edges = diagrams[0]["edges"]
    bins = len(diagrams[0]["counts"])
    counts, accuracy, confidence = [0] * bins, [None] * bins, [None] * bins
    for b in range(bins):
        used = [d for d in diagrams if d["counts"][b] and None not in (d["accuracy"][b], d["confidence"][b])]
        counts[b] = sum(d["counts"][b] for d in used)
        if counts[b]:
            accuracy[b] = sum(d["counts"][b] * d["accuracy"][b] for d in used) / counts[b]
            confidence[b] = sum(d["counts"][b] * d["confidence"][b] for d in used) / counts[b]
    n = sum(counts)
    ece = sum(c / n * abs(a - f) for c, a, f in zip(counts, accuracy, confidence) if c) if n else None
    return {"edges": edges, "counts": counts, "accuracy": accuracy, "confidence": confidence, "n": n, "ece": ece}


# ---------------------------------------------------------------------------------------------------------------
# Grouping: sections (dataset, model), groups (all but the seed), varying and fixed keys


@dataclass
class Group:
    """Runs whose configs differ only in the ignored keys (the seed); stats per metric over them."""

    id: str
    label: str
    values: dict[str, Any]  # the varying keys' values: what tells this group from the others
    runs: list[Run]
    stats: dict[str, Stat]
    reliability: dict[str, Any] | None = None  # pooled over the runs' reliability.json


@dataclass
class Section:
    """Runs on one (dataset, model) combination: their groups, the keys that vary and the ones that do not."""

    title: str | None  # the dataset/model values that set it apart; None when it is the only section
    suffix: str  # for figure filenames: "" or "-<dataset>-<model>"
    groups: list[Group]
    varying_keys: list[str]
    fixed: dict[str, Any]
    metrics: list[str]  # every metric of its runs, main ones first
    figures: list[Path] = field(default_factory=list)
    matched: matched_kl.MatchedKL | None = None  # its groups compared at equal KL
    matched_figure: Path | None = None
    declared: dict[str, Any] | None = None  # the comparison its runs' preset declared (claim, source, metrics, kl_grid)

    @property
    def runs(self) -> list[Run]:
        return [run for group in self.groups for run in group.runs]


def is_ignored(key: str) -> bool:
    """Keys that never tell results apart (the seed, threads, resume/overwrite, tracking, eval.reference)."""
    return any(key == k or key.startswith(k + ".") for k in IGNORED_KEYS)


def section_key(run: Run) -> tuple:
    """The run's dataset.* and model.* values (but SAME_MODEL_KEYS): runs with different ones are never mixed."""
    return tuple(sorted((k, v) for k, v in run.config.items()
                        if k.startswith(SECTION_PREFIXES) and not k.startswith(SAME_MODEL_KEYS)))  # fmt: skip


def group_key(run: Run) -> tuple:
    """The run's config without the ignored keys: runs with equal keys are seeds of one group."""
    return tuple(sorted((k, v) for k, v in run.config.items() if not is_ignored(k)))


def varying_keys(configs: list[dict[str, Any]]) -> list[str]:
    """Keys (not ignored) whose value differs between the configs or that some lack; in config order, `.name` first
    within each block."""
    keys = list(dict.fromkeys(k for c in configs for k in c if not is_ignored(k)))
    missing = object()
    varying = [k for k in keys if len({repr(c.get(k, missing)) for c in configs}) > 1]
    block_order = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in varying))
    return sorted(varying, key=lambda k: (block_order.index(k.rsplit(".", 1)[0]), not k.endswith(".name")))


def fixed_values(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """Keys (not ignored) that every config has, with the same value."""
    first = configs[0]
    return {
        k: v for k, v in first.items() if not is_ignored(k) and all(k in c and c[k] == v for c in configs[1:])
    }


def format_value(value: Any) -> str:
    """A config value as YAML writes it: null, true, 0.3, [a, b]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def label_for(values: dict[str, Any], skip_null: bool = False) -> str:
    """A group's name in override syntax: objective=fdpo divergence=js divergence.alpha=0.3 (skip_null: without
    the keys whose value is null)."""
    shown = {k: v for k, v in values.items() if not (skip_null and v is None)}
    if not shown:
        return "all runs"
    return " ".join(f"{k[: -len('.name')] if k.endswith('.name') else k}={format_value(v)}" for k, v in shown.items())


def assign_labels(groups: list[Group]) -> None:
    """Short labels (null values left out) where they still tell every group apart, else the full ones."""
    short = [label_for(g.values, skip_null=True) for g in groups]
    full = len(set(short)) < len(short) or (len(groups) > 1 and "all runs" in short)
    for group, label in zip(groups, short):
        group.label = label_for(group.values) if full else label


def order_metrics(names: set[str]) -> list[str]:
    """Main metrics first (MAIN_METRICS order), then pass@k by k, then the rest alphabetically."""

    def key(name: str) -> tuple:
        if name in MAIN_METRICS:
            return (0, MAIN_METRICS.index(name), "", 0)
        match = PASS_AT_K.match(name)
        if match:
            return (1, 0, f"{match[1] or ''}{match[2]}", int(match[3]))
        return (2, 0, name, 0)

    return sorted(names, key=key)


def main_metrics(metrics: list[str]) -> list[str]:
    """The table's columns: the MAIN_METRICS present, and the largest pass@k after pass@1."""
    shown = [m for m in MAIN_METRICS if m in metrics]
    ks = [int(m[len("pass@") :]) for m in metrics if re.fullmatch(r"pass@\d+", m)]
    if ks and max(ks) > 1:
        shown.append(f"pass@{max(ks)}")
    # lm-eval tasks' accuracy, the policy's beside the reference's (the alignment tax)
    for name in sorted(m for m in metrics if LM_EVAL_ACCURACY.fullmatch(m)):
        shown += [name] + ([f"reference_{name}"] if f"reference_{name}" in metrics else [])
    return shown


def build_groups(runs: list[Run], keys: list[str]) -> list[Group]:
    """Runs with equal group_key, in the order they first appear, with per-metric stats."""
    by_key: dict[tuple, list[Run]] = {}
    for run in runs:
        by_key.setdefault(group_key(run), []).append(run)
    groups = []
    for i, members in enumerate(by_key.values(), start=1):
        values = {k: members[0].config.get(k) for k in keys}
        names = {m for run in members for m in run.metrics}
        stats = {m: summarize([r.metrics[m] for r in members if m in r.metrics]) for m in order_metrics(names)}
        diagrams = [r.reliability for r in members if r.reliability]
        pooled = pool_reliability(diagrams) if diagrams else None
        groups.append(Group(f"g{i}", label_for(values), values, members, stats, pooled))
    assign_labels(groups)
    return groups


def split_sections(runs: list[Run]) -> list[Section]:
    """One Section per (dataset, model) combination, in the order they first appear; group ids run on across
    sections so each is unique in report.csv."""
    by_key: dict[tuple, list[Run]] = {}
    for run in runs:
        by_key.setdefault(section_key(run), []).append(run)
    apart = varying_keys([dict(key) for key in by_key]) if len(by_key) > 1 else []
    sections, next_id, used = [], 1, set()
    for key, members in by_key.items():
        configs = [r.config for r in members]
        keys = varying_keys(configs)
        groups = build_groups(members, keys)
        for group in groups:
            group.id, next_id = f"g{next_id}", next_id + 1
        title = ", ".join(f"{k}={format_value(dict(key).get(k))}" for k in apart) or None
        suffix = _unique(_slug(dict(key), apart), used)
        names = {m for r in members for m in r.metrics}
        sections.append(Section(title, suffix, groups, keys, fixed_values(configs), order_metrics(names)))
    return sections


def _slug(values: dict[str, Any], keys: list[str]) -> str:
    if not keys:
        return ""
    text = "-".join(format_value(values.get(k)).rsplit("/", 1)[-1] for k in keys)
    return "-" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-") or "section")


def _unique(suffix: str, used: set[str]) -> str:
    candidate, i = suffix, 2
    while candidate in used:
        candidate, i = f"{suffix}-{i}", i + 1
    used.add(candidate)
    return candidate


def duplicate_seeds(group: Group) -> list[Any]:
    """Seeds that more than one run of the group has (reruns: counted as separate samples)."""
    seeds = [run.seed for run in group.runs]
    return sorted({s for s in seeds if seeds.count(s) > 1}, key=str)


# ---------------------------------------------------------------------------------------------------------------
# Text: cells, the noise statement, the fixed line


def declared_comparison(section: Section) -> dict[str, Any] | None:
    """The comparison the section's runs declare (their preset's `comparison:`), when it has a claim and every run
    declares the same one; a warning and None when runs declare different ones."""
    declared = {repr(sorted((k[len(COMPARISON):], v) for k, v in r.config.items() if k.startswith(COMPARISON)))
                for r in section.runs}  # fmt: skip
    if len(declared) > 1:
        warn(f"the runs{f' of {section.title}' if section.title else ''} declare different comparisons (their "
             "comparison.* settings differ): none is used")  # fmt: skip
        return None
    run = section.runs[0]
    found = {k[len(COMPARISON):]: v for k, v in run.config.items() if k.startswith(COMPARISON)}
    if not found.get("claim"):
        return None
    missing = [m for m in found.get("metrics") or [] if not any(m in r.metrics for r in section.runs)]
    if missing:  # a typo in the preset must not pass as a claim with nothing to show
        warn(f"comparison.metrics names {', '.join(missing)}, which no run's eval.json has; its metrics: "
             f"{', '.join(section.metrics)}")  # fmt: skip
    return found


def section_metrics(section: Section) -> list[str]:
    """The metrics a section's noise statements cover: reward and pass@1, then those its comparison declares."""
    declared = (section.declared or {}).get("metrics") or []
    return list(dict.fromkeys([*NOISE_METRICS, *declared]))


def declaration_lines(declared: dict[str, Any]) -> list[str]:
    """The declared comparison, as report.md and the terminal state it: claim, source, metrics, KL grid."""
    grid = ", ".join(matched_kl.format_grid_value(float(x)) for x in declared.get("kl_grid") or [])
    return [f"Declared before the runs (the preset's comparison): {declared['claim']}",
            f"Source: {declared.get('source') or 'not given'}. Metrics: {', '.join(declared.get('metrics') or [])}. "
            f"KL grid: {grid or 'evenly spaced (kl_points)'}."
            + (f" Not reached: {declared['grid_not_reached']}; compared at evenly spaced KL values instead."
               if declared.get("grid_not_reached") else "")]  # fmt: skip


def _at_declared_grid(section: Section, grid: list[float]) -> matched_kl.MatchedKL:
    """The comparison at the KL values the preset declared; where some run does not reach them, said (on the
    terminal and in report.md's declaration) and compared at evenly spaced values instead: the declared grid is
    never silently replaced."""
    try:
        return matched_kl.compare(section.groups, grid, None, section.title)
    except UsageError as e:
        reason = str(e).replace("kl_grid=", "comparison.kl_grid=", 1)
        warn(f"{reason}: compared at evenly spaced KL values instead")
        section.declared = {**section.declared, "grid_not_reached": reason}
        return matched_kl.compare(section.groups, None, None, section.title)


def noise_statement(groups: list[Group], metric: str) -> str | None:
    """The best group for `metric` (higher is better) and the groups whose 95% interval overlaps its interval, or
    that single-seed differences are not findings. None when no group has the metric."""
    have = [g for g in groups if metric in g.stats]
    if not have:
        return None
    best = max(have, key=lambda g: g.stats[metric].mean)
    head = f"{metric}: best is {_describe(best, metric)}"
    if len(have) == 1:
        return f"{head}; there is no other group to compare it with."
    several = [g for g in have if g.stats[metric].n >= 2]
    single = [g for g in have if g.stats[metric].n < 2]
    if best in single:
        if not several:
            return f"{head}, but every group has a single seed: single-seed differences are not findings " \
                "(run more train.seed values)."
        text = f"{head}, but it has a single seed: single-seed differences are not findings."
        if len(several) > 1:
            best_several = max(several, key=lambda g: g.stats[metric].mean)
            text += f" Among groups with several seeds the best is {_describe(best_several, metric)}. "
            text += _within_noise(best_several, several, metric)
        return text
    text = f"{head}. {_within_noise(best, several, metric)}"
    if single:
        text += f" Single seed, not a finding either way: {', '.join(_name(g) for g in single)}."
    return text


def _name(group: Group) -> str:
    return f"{group.id} ({group.label})"


def _describe(group: Group, metric: str) -> str:
    stat = group.stats[metric]
    return f"{_name(group)}: {format_stat(stat)} at n={stat.n}"


def _within_noise(best: Group, groups: list[Group], metric: str) -> str:
    """Which of `groups` (all with n >= 2) have a 95% interval that overlaps best's, and which lie beyond it."""
    others = [g for g in groups if g is not best]
    within = [_name(g) for g in others if intervals_overlap(g.stats[metric], best.stats[metric])]
    beyond = [_name(g) for g in others if not intervals_overlap(g.stats[metric], best.stats[metric])]
    ns = sorted({g.stats[metric].n for g in [best, *others]})
    at = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    text = f"Within seed noise of {best.id} at {at} seeds (95% t-intervals overlap): {', '.join(within) or 'none'}."
    if beyond:
        text += f" Below it beyond seed noise (intervals disjoint): {', '.join(beyond)}."
    return text


def format_fixed(fixed: dict[str, Any]) -> str:
    """The fixed keys, compactly: `objective: beta=0.1 · train: max_steps=120, batch_size=16 · tracking=...`."""
    blocks: dict[str, list[str]] = {}
    for key, value in fixed.items():
        head, _, rest = key.partition(".")
        blocks.setdefault(head, []).append(f"{rest}={format_value(value)}" if rest else format_value(value))
    return " · ".join(f"{head}: {', '.join(items)}" for head, items in blocks.items())


# ---------------------------------------------------------------------------------------------------------------
# Outputs: terminal table, report.md, report.csv


def table_rows(section: Section) -> tuple[list[str], list[list[str]]]:
    """The table's header and rows: group, varying keys, n, seeds, then main metrics as mean ± half-width."""
    metrics = main_metrics(section.metrics)
    header = ["group", *section.varying_keys, "n", "seeds", *metrics]
    rows = []
    for g in section.groups:
        seeds = ", ".join(format_value(s) for s in sorted((r.seed for r in g.runs), key=str))
        cells = [format_stat(g.stats[m], len(g.runs)) if m in g.stats else "—" for m in metrics]
        rows.append([g.id, *(format_value(g.values[k]) for k in section.varying_keys), str(len(g.runs)), seeds, *cells])
    return header, rows


def wrap_header(name: str, width: int = 13) -> str:
    """A long column name broken after `_` or `.` into lines of at most `width` (where it can be): the name stays
    whole when read line by line, and the column no wider than its "0.557 ± 0.150" cells."""
    lines, line = [], ""
    for part in re.findall(r"[^_.]+[_.]?|[_.]", name):
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
    return "\n".join([*lines, line])


def print_section(section: Section, console: Any) -> None:
    """The section's title, fixed line, table and noise statements on the terminal (rich)."""
    from rich.table import Table
    from rich.text import Text

    header, rows = table_rows(section)
    caption = f"mean ± half-width of the {CI_NAME}; n/a: one seed"
    table = Table(caption=caption)
    first_metric = 1 + len(section.varying_keys)
    for i, name in enumerate(header):  # fold: a squeezed column breaks its header, never truncates it
        table.add_column(wrap_header(name), justify="right" if i >= first_metric else "left", overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # plain text: a value such as [all-linear] is no markup
    if section.title:
        console.rule(Text(section.title, style="bold"), align="left")
    if section.declared:
        for line in declaration_lines(section.declared):
            console.print(line, markup=False, highlight=False)
    console.print(Text(f"fixed: {format_fixed(section.fixed)}", style="dim"))
    console.print(table)
    for metric in section_metrics(section):
        text = noise_statement(section.groups, metric)
        if text:
            console.print(text, markup=False, highlight=False)
    if section.matched is not None:
        matched_kl.print_matched(section.matched, console)


def markdown(sections: list[Section], paths: list[Path], skipped: list[tuple[Path, str]], mixed: str | None) -> str:
    """report.md: what was read, how intervals are computed, then per section the fixed line, the table, the noise
    statement, the figures and the Matched KL part."""
    runs = sum(len(s.runs) for s in sections)
    groups = sum(len(s.groups) for s in sections)
    lines = [
        "# alignctl report",
        "",
        f"{runs} finished runs in {groups} groups from {', '.join(f'`{p}`' for p in paths)}. Runs whose configs differ "
        "only in `train.seed` form a group. Cells: mean ± half-width of the "
        f"{CI_NAME} (Student t, n-1 degrees of freedom, sample std); n/a: a single seed, no interval.",
    ]
    if mixed:
        lines += ["", mixed]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"`{p}` ({why})" for p, why in skipped) + "."]
    for section in sections:
        header, rows = table_rows(section)
        lines += [""] + ([f"## {section.title}", ""] if section.title else [])
        if section.declared:
            lines += [f"**{line}**" if i == 0 else line for i, line in enumerate(declaration_lines(section.declared))]
            lines += [""]
        lines += [f"**Fixed:** {format_fixed(section.fixed)}", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        statements = [s for s in (noise_statement(section.groups, m) for m in section_metrics(section)) if s]
        lines += [""] + [f"- {s}" for s in statements]
        lines += [""] + [f"![{p.stem}]({p.name})" for p in section.figures]
        if section.matched is not None:
            heading = "###" if section.title else "##"  # under the section's own heading, if it has one
            lines += matched_kl.markdown_lines(section.matched, section.matched_figure, heading)
    lines += [
        "",
        "`report.csv`: one row per run (kind=run: its metrics), then one per group (kind=group: per metric the mean, "
        "and `<metric>_std`, `<metric>_ci_low`, `<metric>_ci_high`, `<metric>_n`; empty where one seed gives none).",
        "Then the matched-KL numbers, one per row: kind=matched_kl_run (a run's frontier `value`) and "
        "kind=matched_kl_group (`value`: the mean over seeds, `value_std`, `value_ci_low`, `value_ci_high`, "
        "`value_n`), with `matched_metric`, `matched_stat` (at_kl: at the KL in `kl`; efficiency: over `kl_start` to "
        "`kl_end`).",
    ]
    return "\n".join(lines) + "\n"


def write_csv(sections: list[Section], path: Path) -> None:
    """report.csv: kind, section, group, label, run_dir, seed, the config keys that vary, then per metric its value
    (run rows) or mean (group rows), _std, _ci_low, _ci_high, _n (group rows); then the matched-KL rows (tidy, in
    matched_kl.CSV_COLUMNS after those: matched_kl.csv_records)."""
    runs = [r for s in sections for r in s.runs]
    config_keys = varying_keys([r.config for r in runs]) if len(runs) > 1 else []
    metrics = order_metrics({m for r in runs for m in r.metrics})
    columns = ["kind", "section", "group", "label", "run_dir", "seed", *config_keys]
    columns += [c for m in metrics for c in (m, f"{m}_std", f"{m}_ci_low", f"{m}_ci_high", f"{m}_n")]
    columns += [c for c in matched_kl.CSV_COLUMNS if c not in columns]  # after the existing columns, unchanged

    def blank(x: Any) -> Any:
        return "" if x is None else x

    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for s in sections:
            for g in s.groups:
                for r in g.runs:
                    row = {"kind": "run", "section": s.title or "", "group": g.id, "label": g.label}
                    row |= {"run_dir": str(r.path), "seed": format_value(r.seed)}
                    row |= {k: format_value(r.config.get(k)) for k in config_keys}
                    writer.writerow(row | r.metrics)
        for s in sections:
            for g in s.groups:
                seeds = " ".join(format_value(r.seed) for r in g.runs)
                row = {"kind": "group", "section": s.title or "", "group": g.id, "label": g.label, "seed": seeds}
                row |= {k: format_value(g.runs[0].config.get(k)) for k in config_keys}
                for m, st in g.stats.items():
                    row |= {m: st.mean, f"{m}_std": blank(st.std), f"{m}_n": st.n}
                    row |= {f"{m}_ci_low": blank(st.ci_low), f"{m}_ci_high": blank(st.ci_high)}
                writer.writerow(row)
        for s in sections:
            for g, r, compared, values in matched_kl.csv_records(s.matched) if s.matched is not None else []:
                row = {"section": s.title or "", "group": g.id, "label": g.label}
                if r is None:
                    row |= {"seed": " ".join(format_value(x.seed) for x in compared)}
                    row |= {k: format_value(g.runs[0].config.get(k)) for k in config_keys}
                else:
                    row |= {"run_dir": str(r.path), "seed": format_value(r.seed)}
                    row |= {k: format_value(r.config.get(k)) for k in config_keys}
                writer.writerow(row | values)


# ---------------------------------------------------------------------------------------------------------------
# W&B


def log_figures_to_wandb(sections: list[Section], enabled: bool = True) -> int:
    """Log each section's figures as wandb.Image to every run of it that has a W&B run (run.json's wandb_run_id and
    a wandb/ folder), unless disabled (wandb=false, WANDB_MODE=disabled). A failure is a one-line warning. Returns
    the number of W&B runs logged to."""
    if not enabled or os.environ.get("WANDB_MODE") == "disabled":
        return 0
    targets = [(r, [*s.figures, *([s.matched_figure] if s.matched_figure else [])]) for s in sections for r in s.runs
               if r.wandb_run_id and (r.path / "wandb").is_dir()]  # fmt: skip
    targets = [(r, figures) for r, figures in targets if figures]
    logged = 0
    for run, figures in targets:
        try:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            wb = wandb.init(
                dir=str(run.path),
                id=run.wandb_run_id,
                resume="allow",
                mode=os.environ.get("WANDB_MODE", "offline"),
                project=os.environ.get("WANDB_PROJECT", "alignctl"),
                reinit="finish_previous",
            )
            wb.log({f"report/{p.stem}": wandb.Image(str(p)) for p in figures}, step=run.step)
            wb.finish()
            logged += 1
        except Exception as e:  # noqa: BLE001 - the report is written; W&B is a copy of its figures
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            warn(f"could not log the report's figures to W&B run {run.wandb_run_id} of {run.path}: {first}")
    return logged


# ---------------------------------------------------------------------------------------------------------------
# The command


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"alignctl: warning: {message}", file=sys.stderr)


def load_runs(paths: list[Path]) -> tuple[list[Run], list[tuple[Path, str]]]:
    """The finished runs under the paths, and the skipped ones with their reasons (each warned about on stderr)."""
    runs, skipped = [], []
    for path in find_run_dirs(paths):
        try:
            runs.append(load_run(path))
        except SkippedRun as e:
            skipped.append((path, str(e)))
            warn(f"skipping {path}: {e}")
    if not runs:
        raise UsageError(f"report: no finished run with an eval.json under {', '.join(str(p) for p in paths)}")
    return runs, skipped


def mixed_line(sections: list[Section]) -> str | None:
    """The one line that says runs on different datasets/models are reported apart; None for one section."""
    if len(sections) < 2:
        return None
    return (
        f"Runs differ in dataset or model: {len(sections)} separate sections "
        f"({'; '.join(s.title for s in sections)}), never mixed in one table."
    )


def report(paths: list[Path], out_dir: Path, wandb: bool = True, console: Any = None,
           kl_grid: list[float] | None = None, kl_points: int | None = None) -> list[Section]:  # fmt: skip
    """Read the runs under `paths`, group them, compare each section's groups at equal KL (at the KL values
    `kl_grid`, else at `kl_points` evenly spaced ones: matched_kl.compare), print the table and write report.md,
    report.csv and the figures into out_dir. Returns the sections."""
    from rich.console import Console

    from alignctl.report import plots as report_plots  # matplotlib: only when figures are drawn

    console = console or Console()
    runs, skipped = load_runs(paths)
    sections = split_sections(runs)
    for section in sections:  # before anything is written: a kl_grid= no run reaches is a usage error
        section.declared = declared_comparison(section)
        declared_grid = (section.declared or {}).get("kl_grid")
        if kl_grid is None and kl_points is None and declared_grid:
            section.matched = _at_declared_grid(section, [float(x) for x in declared_grid])
        else:
            section.matched = matched_kl.compare(section.groups, kl_grid, kl_points, section.title)
    for section in sections:
        for group in section.groups:
            dupes = duplicate_seeds(group)
            if dupes:
                warn(f"{group.id} ({group.label}) has several runs with train.seed={dupes}: each counts as a sample")
    out_dir.mkdir(parents=True, exist_ok=True)
    mixed = mixed_line(sections)
    if mixed:
        console.print(mixed, markup=False, highlight=False)
    for section in sections:
        section.figures = report_plots.write_figures(section.groups, out_dir, section.suffix)
        section.matched_figure = report_plots.matched_kl(section.matched.comparisons,
                                                         out_dir / f"matched_kl{section.suffix}.png")  # fmt: skip
        print_section(section, console)
    (out_dir / "report.md").write_text(markdown(sections, paths, skipped, mixed))
    write_csv(sections, out_dir / "report.csv")
    log_figures_to_wandb(sections, enabled=wandb)
    files = ["report.md", "report.csv", *(p.name for s in sections for p in s.figures)]
    files += [s.matched_figure.name for s in sections if s.matched_figure]
    console.print(f"wrote {out_dir}/: {', '.join(files)}", markup=False, highlight=False)
    return sections
