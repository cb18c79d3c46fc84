"""Hydra composition: overrides -> typed RunConfig, with every failure turned into one clear line."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from alignctl import objectives
from alignctl.config import run_names
from alignctl.config import schema as config
from alignctl.data import registry as data_registry
from alignctl.errors import ConfigError, UsageError
from alignctl.models import loading
from alignctl.models import schema as model_schemas
from alignctl.rewards import registry as reward_registry

CONFIG_MODULE = "alignctl.conf"
RESOLVED_CONFIG = "config.yaml"  # the composed, validated config, written at the top of each run directory

config.register()
# Run directories name the divergence actually used (also when the config says divergence=auto) and the overrides
# that set the run apart (conf/config.yaml).
OmegaConf.register_new_resolver(
    "run_name",
    lambda objective, divergence, overrides, exclude: run_names.run_name(
        objective, config.resolve_divergence(objective, divergence), overrides, exclude
    ),
    replace=True,
)


def to_run_config(cfg: DictConfig) -> config.RunConfig:
    """Composed DictConfig -> RunConfig dataclass (runs every __post_init__ value rule). Keys the schema does not
    declare are an error also when added with `+`/`++` (Hydra adds them; to_object would drop them silently)."""
    _check_declared(cfg, "")
    try:
        return OmegaConf.to_object(cfg)
    except (ConfigError, OmegaConfBaseException) as e:
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
                if moved_key(f"{prefix}{key}"):
                    raise UsageError(moved_key(f"{prefix}{key}", str(node[key])))
                where = f" of {prefix.rstrip('.')}" if prefix else ""
                suggestion = _suggest(str(key)) if not prefix else ""
                raise UsageError(f"unknown key {prefix}{key}{suggestion}; valid keys{where}: {', '.join(declared)}")
    for key in node.keys():
        if key != "hydra":
            _check_declared(node._get_node(key), f"{prefix}{key}.")


def _suggest(key: str) -> str:
    """' (did you mean group.key?)' for a bare key that is a field of a group's schema, e.g. beta=0.1."""

    schemas = {
        "objective": [config.objective_schema(e) for e in objectives.REGISTRY.values()],
        "divergence": [config.DivergenceConfig],
        "reward": [e.schema for e in reward_registry.REGISTRY.values()],
        "dataset": [e.schema for e in data_registry.REGISTRY.values()],
        "model": [*model_schemas.EMBEDDED_MODELS.values(), model_schemas.HFModelConfig],
        "train": [config.TrainConfig],
        "eval": [config.EvalConfig],
        "launcher": [config.LauncherConfig],
        "distributed": [config.DistributedConfig],
        "comparison": [config.ComparisonConfig],
    }
    groups = [g for g, classes in schemas.items() if any(key in {f.name for f in dataclasses.fields(c)} for c in classes)]
    return f" (did you mean {' or '.join(f'{g}.{key}' for g in groups)}?)" if groups else ""


# Keys that moved to another group: old key -> (new key, why). An old command line gets one line naming the new key
# (not Hydra's "unknown key"); an old run directory's config.yaml is read with the key moved (load_run).
MOVED_KEYS = {
    "objective.label_noise": ("dataset.label_noise", "label noise is now a dataset option, for every objective trained "
                              "on preference pairs or ranked candidates"),
}  # fmt: skip


def moved_key(key: str, value: str = "<value>") -> str | None:
    """The line for a moved key (`key=value` as the user gave it), or None if `key` did not move."""
    if key not in MOVED_KEYS:
        return None
    new, why = MOVED_KEYS[key]
    return f"{key}={value}: {why}; use {new}={value}"


def _check_moved(overrides: list[str]) -> None:
    for override in overrides:
        key, _, value = str(override).lstrip("+~").partition("=")
        problem = moved_key(key, value or "<value>")
        if problem:
            raise UsageError(problem)


def compose_one(overrides: list[str]) -> config.RunConfig:
    _check_moved(overrides)
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


# launcher option -> (a module its Hydra plugin needs, the pip package that provides it)
LAUNCHER_PLUGINS = {
    "local": [("hydra_plugins.hydra_joblib_launcher.joblib_launcher", "hydra-joblib-launcher"),
              ("joblib", "hydra-joblib-launcher")],
    "slurm": [("hydra_plugins.hydra_submitit_launcher.submitit_launcher", "hydra-submitit-launcher"),
              ("submitit", "hydra-submitit-launcher")],
}  # fmt: skip
LAUNCHER_PLUGINS["submitit_local"] = LAUNCHER_PLUGINS["slurm"]


def compose_jobs(overrides: list[str], multirun: bool) -> list[config.RunConfig]:
    """Compose and validate every job (all combinations of a sweep) before any model or data loads. The checks
    that need more than the config (distributed settings, teacher runs) follow in alignctl.run.launch.validate."""
    _check_moved(overrides)
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
        key, _, value = bad.partition("=")
        non_ascii = "" if value.isascii() else " (it has non-ASCII characters, which an override takes only quoted)"
        raise UsageError(
            f"cannot parse the override {bad}{non_ascii}; quote the value, e.g. {key}='{value}' (in the shell: "
            f"\"{key}='{value}'\"), or give a file path"
        ) from None
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if sweeps and not multirun:
        key = sweeps[0].get_key_element()
        raise UsageError(f"{key} lists several values; pass -m to sweep over them")
    _check_launcher(parsed, multirun)
    if not multirun:
        jobs = [compose_one(overrides)]
    else:
        # As Hydra's basic sweeper does: the config's hydra.sweeper.params (an experiment preset's arms and seeds),
        # then the command line's values, which replace a preset's for the same key
        parsed = OverridesParser.create().parse_overrides([*_sweeper_params(overrides), *overrides])
        jobs = [compose_one(list(job)) for job in BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]]
    for job in jobs:
        loading.check_local_paths(job)
    return jobs


def _sweeper_params(overrides: list[str]) -> list[str]:
    """hydra.sweeper.params of the config the overrides compose (e.g. +experiment=...), as key=value overrides."""
    try:
        with initialize_config_module(CONFIG_MODULE, version_base=None):
            cfg = hydra_compose("config", overrides=first_job(overrides), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise UsageError(explain(e)) from None
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    return [f"{key}={value}" for key, value in params.items()]


def _check_launcher(parsed: list, multirun: bool) -> None:
    """launcher=/launcher.* only with -m, one value each, and the chosen launcher's plugin importable (Hydra would
    otherwise say only that hydra/launcher has no such option)."""
    launcher = "basic"
    for o in parsed:
        key = o.get_key_element().lstrip("+~")
        if key != "launcher" and not key.startswith("launcher."):
            continue
        if not multirun:
            raise UsageError(f"{o.input_line} chooses how a sweep's jobs run, and this is a single run; pass -m to sweep")
        if o.is_sweep_override():
            raise UsageError(f"{key} lists several values; all jobs of a sweep run with one launcher: give one")
        if key == "launcher":
            launcher = o.value()
    for module, package in LAUNCHER_PLUGINS.get(launcher, []):
        try:
            importlib.import_module(module)
        except ImportError:
            raise UsageError(f"launcher={launcher} needs Hydra's launcher plugin {package}: pip install {package}") from None


def first_job(overrides: list[str]) -> list[str]:
    parsed = OverridesParser.create().parse_overrides(overrides)
    return list(BasicSweeper.split_arguments(parsed, max_batch_size=None)[0][0])


def save_resolved(run_cfg: config.RunConfig, run_dir: Path) -> None:
    (run_dir / RESOLVED_CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.structured(run_cfg)))


# Hydra writes .hydra/ into the job's directory before the job runs, i.e. before alignctl has claimed it (two runs
# started in the same second get the same ${now:} name); the claimed directory gets it from _hydra_entry instead.
NO_HYDRA_SUBDIR = "hydra.output_subdir=null"


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
        saved = _moved_saved_keys(OmegaConf.load(path))
        merged = OmegaConf.merge(_typed_skeleton(saved), saved)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"run_dir={run_dir}: {RESOLVED_CONFIG} is unreadable or corrupt ({explain(e)})") from None
    try:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(overrides))
    except OmegaConfBaseException as e:
        raise UsageError(explain(e)) from None
    return to_run_config(merged)


def _moved_saved_keys(saved: Any) -> Any:
    """A saved config with each MOVED_KEYS key at its new place (an ADPO run trained before label noise became
    dataset.label_noise saved objective.label_noise)."""
    if not isinstance(saved, DictConfig):
        return saved
    for old, (new, _) in MOVED_KEYS.items():
        group, _, key = old.rpartition(".")
        node = OmegaConf.select(saved, group)
        if isinstance(node, DictConfig) and key in node:
            value = node.pop(key)
            if OmegaConf.select(saved, new) is None:
                OmegaConf.update(saved, new, value)
    return saved


def _typed_skeleton(saved: Any) -> DictConfig:
    """A RunConfig node whose per-option groups carry the schema their saved option names."""
    if not isinstance(saved, DictConfig) or "objective" not in saved:
        raise ValueError("no objective section")
    skeleton = OmegaConf.structured(config.RunConfig)
    skeleton.objective = OmegaConf.structured(config.objective_schema(objectives.get(saved.objective.name)))

    skeleton.dataset = OmegaConf.structured(data_registry.get(saved.dataset.name).schema)
    skeleton.model = OmegaConf.structured(model_schemas.model_schema(saved.model.name))
    skeleton.reward = OmegaConf.structured(reward_registry.get(saved.reward.name).schema)
    return skeleton


def explain(e: BaseException) -> str:
    """One line naming the field, the bad value and the valid choices."""
    if isinstance(e, ConfigError):
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
        if moved_key(key):  # set by a preset's YAML, not the command line (compose_one caught that)
            return moved_key(key)
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
