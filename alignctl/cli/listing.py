"""`alignctl ls [group]`: the config groups and their options, each with its one-line description."""

from __future__ import annotations

from importlib import resources

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from alignctl import objectives
from alignctl.config.schema import hyperparameter_rules
from alignctl.constraints import Rule
from alignctl.data import registry
from alignctl.errors import UsageError
from alignctl.models.schema import EMBEDDED_MODELS

GROUPS = ("objective", "divergence", "reward", "dataset", "model", "experiment", "launcher", "distributed")


def options(group: str) -> dict[str, str]:
    """Option name -> description: an objective's from its registry entry (alignctl.objectives), any other option's
    from the first comment line of its YAML that is not a `# @package` header."""
    if group == "objective":
        return {name: entry.description for name, entry in sorted(objectives.REGISTRY.items())}
    folder = resources.files("alignctl.conf") / group
    found = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            lines = [line for line in entry.read_text().splitlines() if not line.startswith("# @")]
            first = lines[0] if lines else ""
            found[entry.name[: -len(".yaml")]] = first.lstrip("# ").strip() if first.startswith("#") else ""
    return found


def show(group: str | None) -> None:
    console = Console()
    if group is None:
        table = Table("group", "options")
        for g in GROUPS:
            table.add_row(g, ", ".join(options(g)))
        table.add_row("model.reference", "null (the starting weights), a model dir or hub id, or soup: SALSA's weight "
                      "average of model.soup=[<dir>, <dir>] (model=tiny: seeds, e.g. [0,1]), also the starting policy")
        table.add_row("train", "train.max_steps, train.batch_size, train.learning_rate, train.seed, ... (alignctl train --help)")
        table.add_row("eval", "eval.enabled, eval.num_prompts, eval.samples_per_prompt, eval.seed, ... (alignctl eval --help)")
        console.print(table)
        return
    if group not in GROUPS:
        raise UsageError(f"ls {group}: unknown group; choose one of: {', '.join(GROUPS)}")
    if group == "objective":
        table = Table("objective", "description", "hyperparameters", "divergences (default first)", "data",
                      "reference model")  # fmt: skip
        for name, description in options(group).items():
            entry = objectives.get(name)
            hyper = ", ".join(f"{key}={default}" + (f" ({rule_text(rule)})" if rule else "")
                              for key, default, rule in hyperparameter_rules(entry))  # fmt: skip
            table.add_row(name, description, hyper or "-", ", ".join(divergences_default_first(entry)), entry.data,
                          reference_model(entry))  # fmt: skip
    elif group == "experiment":
        table = Table("experiment", "what it compares (the paper it follows)", "swept (alignctl train -m +experiment=...)")
        for name, description in options(group).items():
            params = OmegaConf.load(resources.files("alignctl.conf") / group / f"{name}.yaml").hydra.sweeper.params
            swept = "; ".join(f"{'arm' if key.lstrip('+').startswith('arm/') else key}: {value}"
                              for key, value in params.items())  # fmt: skip
            table.add_row(name, description, swept)
    elif group in ("model", "dataset"):
        table = Table(group, "description")
        table.add_column("path (hub id or local)", overflow="fold")
        for name, description in options(group).items():
            table.add_row(name, description, _default_path(group, name))
    else:
        table = Table(group, "description")
        for name, description in options(group).items():
            table.add_row(name, description)
        if group == "reward":  # options every reward has (alignctl/rewards/calibration.py)
            table.add_row("reward.calibrate", "any reward -> its quantile among reward.calibration_samples reference "
                          "samples of the prompt (InfAlign/CTRL); reward.transform=identity|bon|worst_of_n, reward.t, "
                          "reward.n; eval reports the raw reward (eval.best_of_n=N: best-of-N win rate)")  # fmt: skip
    console.print(table)


def divergences_default_first(entry: objectives.Objective) -> list[str]:
    return [entry.default_divergence] + [d for d in entry.divergences if d != entry.default_divergence]


def reference_model(entry: objectives.Objective) -> str:
    """Whether the objective's trainer loads a reference model."""
    if entry.reference_with:
        return f"only with {', '.join(entry.reference_with)}"
    return "yes" if entry.needs_reference else "no"


def rule_text(rule: Rule) -> str:
    """A value rule as a listing shows it: "> 0", "in [0, 0.5)"."""
    return rule.text.removeprefix("be ").removeprefix("lie ")


def _default_path(group: str, name: str) -> str:
    """Where a model or dataset option reads from by default: a hub id, "(built locally)", or what to set."""
    if group == "model":
        if name in EMBEDDED_MODELS:
            return "(built locally)"
        path = OmegaConf.load(resources.files("alignctl.conf") / "model" / f"{name}.yaml").get("path")
        return str(path) if path else "(model.path=...)"
    entry = registry.get(name)
    if entry.embedded_model is not None:
        return "(built locally)"
    path = entry.schema.__dataclass_fields__["path"].default
    return str(path) if path not in (None, "???") else "(dataset.path=...)"
