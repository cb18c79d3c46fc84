"""Hydra composition: overrides -> typed RunConfig, with every failure turned into one clear line."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError,
)

from alignctl import config, objectives
from alignctl.errors import UsageError, fail

CONFIG_MODULE = "alignctl.conf"
RESOLVED_CONFIG = "config.yaml"  # the composed, validated config, written at the top of each run directory

config.register()
# Run directories name the divergence actually used, also when the config says divergence=auto.
OmegaConf.register_new_resolver(
    "divergence_used", lambda objective, divergence: config.resolve_divergence(objective, divergence), replace=True
)


def to_run_config(cfg: DictConfig) -> config.RunConfig:
    """Composed DictConfig -> RunConfig dataclass (runs every __post_init__ value rule). Keys the schema does not
    declare are an error also when added with `+`/`++` (Hydra adds them; to_object would drop them silently)."""
    _check_declared(cfg, "")
    try:
        return OmegaConf.to_object(cfg)
    except (config.ConfigError, OmegaConfBaseException) as e:
        raise UsageError(explain(e)) from None


def _check_declared(node: Any, prefix: str) -> None:
    """Every key of a structured node is a field of its dataclass, recursively."""
    if not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        declared = [f.name for f in dataclasses.fields(schema)]
        for key in node.keys():
            if key not in declared and not (prefix == "" and key == "hydra"):
                where = f" of {prefix.rstrip('.')}" if prefix else ""
                suggestion = _suggest(str(key)) if not prefix else ""
                raise UsageError(f"unknown key {prefix}{key}{suggestion}; valid keys{where}: {', '.join(declared)}")
    for key in node.keys():
        if key != "hydra":
            _check_declared(node._get_node(key), f"{prefix}{key}.")


def _suggest(key: str) -> str:
    """' (did you mean group.key?)' for a bare key that is a field of a group's schema, e.g. beta=0.1."""
    from alignctl.data import registry as data_registry
    from alignctl.rewards import registry as reward_registry

    schemas = {
        "objective": [config.objective_schema(e) for e in objectives.REGISTRY.values()],
        "divergence": [config.DivergenceConfig],
        "reward": [e.schema for e in reward_registry.REGISTRY.values()],
        "dataset": [e.schema for e in data_registry.REGISTRY.values()],
        "model": [*config.EMBEDDED_MODELS.values(), config.HFModelConfig],
        "train": [config.TrainConfig],
        "eval": [config.EvalConfig],
    }
    groups = [g for g, classes in schemas.items() if any(key in {f.name for f in dataclasses.fields(c)} for c in classes)]
    return f" (did you mean {' or '.join(f'{g}.{key}' for g in groups)}?)" if groups else ""


def compose_one(overrides: list[str]) -> config.RunConfig:
    try:
        with initialize_config_module(CONFIG_MODULE, version_base=None):
            cfg = hydra_compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise UsageError(explain(e)) from None
    return to_run_config(cfg)


# group -> how to give a path where an option name is expected
PATH_OPTIONS = {
    "dataset": "dataset=preference_file dataset.path={} (pairs) or dataset=prompt_file dataset.path={} (prompts)",
    "model": "model=hf model.path={}",
    "reward": "reward=classifier reward.path={}",
}


def validate(overrides: list[str], multirun: bool) -> list[config.RunConfig]:
    """Compose and validate every job (all combinations of a sweep) before any model or data loads."""
    for override in overrides:
        group, _, value = override.partition("=")
        if group in PATH_OPTIONS and ("/" in value or value.endswith((".jsonl", ".json", ".parquet", ".csv"))):
            raise UsageError(
                f"{group}={value} is not a {group} option but a path; use {PATH_OPTIONS[group].format(value, value)}"
            )
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        bad = next((o for o in overrides if _unparsable(o)), None)
        if bad is None:
            raise UsageError(_first_line(str(e))) from None
        raise UsageError(
            f"cannot parse the override {bad}: {_first_line(str(e))}; quote a value with special characters, "
            "e.g. 'key=\"value\"', or give a file path"
        ) from None
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if sweeps and not multirun:
        key = sweeps[0].get_key_element()
        raise UsageError(f"{key} lists several values; pass -m to sweep over them")
    jobs = BasicSweeper.split_arguments(parsed, max_batch_size=None)[0] if multirun else [overrides]
    return [compose_one(list(job)) for job in jobs]


def run_hydra(overrides: list[str], multirun: bool) -> None:
    """Hand the run (or sweep) to Hydra, which makes one directory per job and calls `_job` in each."""
    argv = ["alignctl", *(["--multirun"] if multirun else []), *overrides]
    saved, sys.argv = sys.argv, argv
    try:
        _hydra_entry()
    finally:
        sys.argv = saved


@hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name="config", version_base=None)
def _hydra_entry(cfg: DictConfig) -> None:
    from alignctl.train import train_and_evaluate

    try:
        train_and_evaluate(to_run_config(cfg), Path(HydraConfig.get().runtime.output_dir))
    except UsageError as e:  # a bad value found once the run started (e.g. nothing to resume): one line, exit 2
        fail(str(e))


def save_resolved(run_cfg: config.RunConfig, run_dir: Path) -> None:
    (run_dir / RESOLVED_CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.structured(run_cfg)))


# What `alignctl eval run_dir=...` may change: how to evaluate, never what was trained.
EVAL_OVERRIDES = ("eval.", "model.kernel=", "tracking=")


def load_run(run_dir: Path, overrides: list[str]) -> config.RunConfig:
    """The config a run directory was trained with, plus eval-only `key=value` overrides (e.g. eval.num_prompts=8)."""
    path = run_dir / RESOLVED_CONFIG
    if not path.is_file():
        raise UsageError(f"run_dir={run_dir} is not an alignctl run directory (no {RESOLVED_CONFIG})")
    for override in overrides:
        if not override.startswith(EVAL_OVERRIDES):
            raise UsageError(
                f"{override} would change what run_dir={run_dir} was trained with; eval of a run takes only eval.*, "
                "model.kernel and tracking overrides (train another run to change the rest)"
            )
    try:
        saved = OmegaConf.load(path)
        merged = OmegaConf.merge(_typed_skeleton(saved), saved)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"run_dir={run_dir}: {RESOLVED_CONFIG} is unreadable or corrupt ({explain(e)})") from None
    try:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as e:
        raise UsageError(explain(e)) from None
    return to_run_config(merged)


def _typed_skeleton(saved: Any) -> DictConfig:
    """A RunConfig node whose per-option groups carry the schema their saved option names."""
    if not isinstance(saved, DictConfig) or "objective" not in saved:
        raise ValueError("no objective section")
    skeleton = OmegaConf.structured(config.RunConfig)
    skeleton.objective = OmegaConf.structured(config.objective_schema(objectives.get(saved.objective.name)))
    from alignctl.data import registry as data_registry
    from alignctl.rewards import registry as reward_registry

    skeleton.dataset = OmegaConf.structured(data_registry.get(saved.dataset.name).schema)
    skeleton.model = OmegaConf.structured(config.model_schema(saved.model.name))
    skeleton.reward = OmegaConf.structured(reward_registry.get(saved.reward.name).schema)
    return skeleton


def explain(e: BaseException) -> str:
    """One line naming the field, the bad value and the valid choices."""
    if isinstance(e, config.ConfigError):
        return str(e)
    text = _first_line(str(e))
    if text.startswith(("LexerNoViableAltException: ", "mismatched input")):  # Hydra's override grammar
        override = text.split(": ", 1)[-1]
        return (f"cannot parse the override {override}; quote a value with special characters, e.g. "
                "'key=\"value\"', or give a file path")  # fmt: skip
    if isinstance(e, MissingConfigException) and e.missing_cfg_file and "/" in e.missing_cfg_file:
        group, option = e.missing_cfg_file.rsplit("/", 1)
        choices = ", ".join(sorted(o for o in (e.options or []))) or "(none)"
        return f"{group}={option} is not a valid option; choose one of: {choices}"
    cause = e.__cause__ or e.__context__
    if isinstance(e, HydraException) and isinstance(cause, OmegaConfBaseException):
        return explain(cause)
    if isinstance(e, (ConfigAttributeError, ConfigKeyError)) and getattr(e, "full_key", None):
        key = e.full_key
        parent, _, _ = key.rpartition(".")
        valid = _valid_keys(e)
        where = f" of {parent}" if parent else ""
        hint = "" if parent else _suggest(key)
        return f"unknown key {key}{hint}; valid keys{where}: {', '.join(valid)}" if valid else f"unknown key {key}{hint}"
    if isinstance(e, MissingMandatoryValue) and getattr(e, "full_key", None):
        return f"{e.full_key} is required here and has no value; set {e.full_key}=<value>"
    if isinstance(e, ValidationError) and getattr(e, "full_key", None):
        return f"{e.full_key}: {_first_line(getattr(e, 'msg', str(e)))}"
    return _first_line(str(e))


def _valid_keys(e: OmegaConfBaseException) -> list[str]:
    cls = getattr(e, "object_type", None)
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def _unparsable(override: str) -> bool:
    try:
        OverridesParser.create().parse_overrides([override])
    except HydraException:
        return True
    return False


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
