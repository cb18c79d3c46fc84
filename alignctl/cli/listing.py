"""`alignctl ls [group]`: the config groups and their options, each with its one-line description."""

from __future__ import annotations

from importlib import resources

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from alignctl import objectives
from alignctl.errors import UsageError

GROUPS = ("objective", "divergence", "reward", "dataset", "model", "experiment", "launcher", "distributed")


def options(group: str) -> dict[str, str]:
    """Option name -> description (the first comment line of its YAML that is not a `# @package` header)."""
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
            accepted = [entry.default_divergence] + [d for d in entry.divergences if d != entry.default_divergence]
            reference = "yes" if entry.needs_reference else "no"
            if entry.reference_with:
                reference = f"only with {', '.join(entry.reference_with)}"
            defaults = {k: v for k, v in (entry.loss.__kwdefaults__ or {}).items() if k != "divergence"}
            defaults |= dict(entry.data_options)
            hyper = ", ".join(f"{k}={v}" for k, v in defaults.items()) or "-"
            table.add_row(name, description, hyper, ", ".join(accepted), entry.data, reference)
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


def _default_path(group: str, name: str) -> str:
    """Where a model or dataset option reads from by default: a hub id, "(built locally)", or what to set."""
    from alignctl.config import schema as config
    from alignctl.data import registry

    if group == "model":
        if name in config.EMBEDDED_MODELS:
            return "(built locally)"
        path = OmegaConf.load(resources.files("alignctl.conf") / "model" / f"{name}.yaml").get("path")
        return str(path) if path else "(model.path=...)"
    entry = registry.get(name)
    if entry.embedded_model is not None:
        return "(built locally)"
    path = entry.schema.__dataclass_fields__["path"].default
    return str(path) if path not in (None, "???") else "(dataset.path=...)"
