"""Hydra composition: overrides -> typed RunConfig, with every failure turned into one clear line."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import signal
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
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError,
)

from alignctl import objectives

from alignctl.config import schema as config

from alignctl.run import distributed

from alignctl.run import rundir

from alignctl.config import run_names
from alignctl.errors import EXIT_USAGE, UsageError, fail

try:
    import fcntl
except ImportError:  # not POSIX: run directories are claimed (O_EXCL) but not locked against concurrent resumes
    fcntl = None

CONFIG_MODULE = "alignctl.conf"
RESOLVED_CONFIG = rundir.RESOLVED_CONFIG

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
        "launcher": [config.LauncherConfig],
        "distributed": [config.DistributedConfig],
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


# launcher option -> (a module its Hydra plugin needs, the pip package that provides it)
LAUNCHER_PLUGINS = {
    "local": [("hydra_plugins.hydra_joblib_launcher.joblib_launcher", "hydra-joblib-launcher"),
              ("joblib", "hydra-joblib-launcher")],
    "slurm": [("hydra_plugins.hydra_submitit_launcher.submitit_launcher", "hydra-submitit-launcher"),
              ("submitit", "hydra-submitit-launcher")],
}  # fmt: skip
LAUNCHER_PLUGINS["submitit_local"] = LAUNCHER_PLUGINS["slurm"]


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
    from alignctl.models import loading

    for job in jobs:
        loading.check_local_paths(job)
        if not distributed.in_ranks():  # in the ranks the parent checked it (or, plainly launched, _job checks it)
            distributed.check(job)
    return jobs


def _sweeper_params(overrides: list[str]) -> list[str]:
    """hydra.sweeper.params of the config the overrides compose (e.g. +experiment=...), as key=value overrides."""
    try:
        with initialize_config_module(CONFIG_MODULE, version_base=None):
            cfg = hydra_compose("config", overrides=_first_job(overrides), return_hydra_config=True)
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


# Hydra writes .hydra/ into the job's directory before the job runs, i.e. before alignctl has claimed it (two runs
# started in the same second get the same ${now:} name); the claimed directory gets it from _hydra_entry instead.
NO_HYDRA_SUBDIR = "hydra.output_subdir=null"


def run_hydra(overrides: list[str], jobs: list[config.RunConfig], multirun: bool) -> None:
    """Hand the run (or sweep) to Hydra, which makes one directory per job and calls `_job` in each. jobs: the
    validated configs of the run or of every job of the sweep."""
    ours = [] if _given(overrides, "hydra.output_subdir") else [NO_HYDRA_SUBDIR]
    if multirun:
        ours += _sweep_overrides(overrides, jobs)
    argv = ["alignctl", *(["--multirun"] if multirun else []), *ours, *overrides]
    saved, sys.argv = sys.argv, argv
    try:
        _hydra_entry()
    except KeyboardInterrupt:  # Ctrl-C while a parallel launcher waits for its jobs
        if not multirun or jobs[0].launcher.name == "basic":
            raise
        print(_sweep_stopped(jobs[0].launcher.name, argv), file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        sys.argv = saved


def _sweep_stopped(launcher: str, argv: list[str]) -> str:
    """The line Ctrl-C leaves while a parallel launcher waits: where the sweep stands and how to continue it."""
    sweep_dir = [o.split("=", 1)[1].strip("'") for o in argv if o.lstrip("+").startswith("hydra.sweep.dir=")][-1]
    again = f"run it again with hydra.sweep.dir={sweep_dir}"
    if launcher == "slurm":  # submitit leaves the array to SLURM
        return (f"alignctl: stopped waiting for the sweep; its SLURM jobs go on (scancel stops them); once they have "
                f"ended, {again} to finish any left unfinished")  # fmt: skip
    return f"alignctl: sweep stopped by SIGINT; {again} to resume its jobs"  # each job stopped at a checkpoint


def _given(overrides: list[str], key: str) -> bool:
    return any(o.lstrip("+~").startswith(f"{key}=") for o in overrides)


def _sweep_overrides(overrides: list[str], jobs: list[config.RunConfig]) -> list[str]:
    """A sweep's own directory, claimed now (two sweeps started in the same second would otherwise share it and
    Hydra's multirun.yaml), or the one the user named, continued (train.resume=auto); job directories named by the
    swept values only."""
    extra = []
    if _given(overrides, "hydra.sweep.dir"):
        # the same sweep run again into its directory: finished jobs say so, unfinished ones resume
        if not _given(overrides, "train.resume") and not any(job.train.overwrite for job in jobs):
            extra.append("train.resume=auto")
    else:
        if any(job.train.resume == "true" for job in jobs):
            raise UsageError("train.resume=true continues an existing sweep: name it with hydra.sweep.dir=<dir>")
        with initialize_config_module(CONFIG_MODULE, version_base=None):
            template = hydra_compose("config", overrides=_first_job(overrides), return_hydra_config=True)
        claimed = rundir.claim_sweep_dir(Path(template.hydra.sweep.dir))
        extra.append(f"hydra.sweep.dir={_quoted(str(claimed))}")
    if not _given(overrides, "hydra.job.config.override_dirname.exclude_keys"):
        parsed = OverridesParser.create().parse_overrides(overrides)
        fixed = {o.get_key_element().lstrip("+~") for o in parsed if not o.is_sweep_override()}
        fixed |= {o.split("=", 1)[0] for o in extra if not o.startswith("hydra.")}  # train.resume=auto
        extra.append(f"hydra.job.config.override_dirname.exclude_keys=[{','.join(sorted(fixed))}]")
    return extra


def _first_job(overrides: list[str]) -> list[str]:
    parsed = OverridesParser.create().parse_overrides(overrides)
    return list(BasicSweeper.split_arguments(parsed, max_batch_size=None)[0][0])


def _quoted(value: str) -> str:
    """A value as Hydra's override grammar reads it back unchanged."""
    return "'" + value.replace("'", "\\'") + "'"


@hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name="config", version_base=None)
def _hydra_entry(cfg: DictConfig) -> None:
    """One job: claim its run directory, then train in it (or say why not: one line, exit 2). Under a parallel
    launcher the job runs in another process (a loky worker, a submitit job): its line goes to FailedJobs."""
    hydra_cfg = HydraConfig.get()
    planned = Path(hydra_cfg.runtime.output_dir)
    previous = rundir.stop_on_signals()
    parallel = cfg.launcher.name != "basic"
    try:
        if cfg.distributed.name != "none" and not distributed.in_ranks():
            _launch_ranks(cfg, hydra_cfg, planned, parallel)
        else:
            _job(cfg, hydra_cfg, planned)
    except UsageError as e:
        if not parallel:
            fail(str(e))
        FailedJobs.record(hydra_cfg, EXIT_USAGE, str(e))
    except rundir.Interrupted as e:  # before training (train_and_evaluate handles its own): nothing to save
        if parallel:
            FailedJobs.record(hydra_cfg, 128 + e.signum, f"stopped by {e} before the run started")
            return
        print(f"alignctl: stopped by {e} before the run started", file=sys.stderr, flush=True)
        raise SystemExit(128 + e.signum) from None
    except SystemExit as e:  # train_and_evaluate stopped by a signal, at a checkpoint (it printed its line)
        if not parallel or not isinstance(e.code, int) or e.code <= 128:
            raise
        name = signal.Signals(e.code - 128).name
        FailedJobs.record(hydra_cfg, e.code, f"stopped by {name}; run the sweep again with hydra.sweep.dir="
                                             f"{hydra_cfg.sweep.dir} to resume it")  # fmt: skip
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _job(cfg: DictConfig, hydra_cfg: DictConfig, planned: Path) -> None:
    """Claim, plan and train one job; bad input raises UsageError once the directory is released. One rank of a
    multi-process run: rank 0 claims and plans, and every rank trains in the directory it chose."""
    from alignctl.run.train import train_and_evaluate

    run_cfg = to_run_config(cfg)
    if not distributed.is_main():
        run_dir, plan = distributed.agree(None)
        if run_dir.resolve() != planned.resolve():  # this rank named its dir a second after rank 0 (${now:})
            rundir.move_log_files(planned, run_dir)
            rundir.remove_if_only_logs(planned)
        if plan.action != "finished":
            train_and_evaluate(run_cfg, run_dir, plan=plan)
        return
    dir_key = "hydra.sweep.dir" if hydra_cfg.mode == RunMode.MULTIRUN else "hydra.run.dir"
    claim: rundir.RunClaim | None = None
    plan: rundir.RunPlan | None = None
    started = discard = False

    def claim_and_plan() -> tuple[Path, rundir.RunPlan]:
        nonlocal claim, plan
        if distributed.in_ranks():  # started by a plain `accelerate launch`: no parent checked the batch split
            distributed.check_batch(run_cfg, distributed.world_size())
        claim = rundir.claim_run_dir(planned, run_cfg.train, auto_named=_auto_named(hydra_cfg), dir_key=dir_key)
        plan = rundir.plan_run(run_cfg, claim.path, dir_key)
        if plan.action == "finished":
            return claim.path, plan
        if claim.path != planned:  # an automatic name another run had claimed: continue in <name>-2, -3, ...
            rundir.move_log_files(planned, claim.path)
            if Path.cwd() == planned.resolve():  # hydra.job.chdir=true
                os.chdir(claim.path)
        if not claim.fresh and plan.action == "fresh":
            removed = rundir.clear_run_dir(claim.path)
            why = ("train.overwrite=true: removed the previous run" if run_cfg.train.overwrite else
                   "train.resume=auto: no checkpoint to resume; starting afresh, removed the earlier attempt")
            print(f"{why} from {claim.path} ({removed} entries)", file=sys.stderr)
        claim.describe()
        if NO_HYDRA_SUBDIR in hydra_cfg.overrides.hydra:
            _write_hydra_files(cfg, claim.path)
        return claim.path, plan

    try:
        run_dir, plan = distributed.agree(claim_and_plan) if distributed.in_ranks() else claim_and_plan()
        if plan.action == "finished":
            print(f"run {run_dir} already finished at step {plan.step}; nothing to do", file=sys.stderr)
            return
        started = True
        train_and_evaluate(run_cfg, run_dir, command=_rerun_command(hydra_cfg), plan=plan)
    except UsageError:  # a bad value found once the run started (e.g. nothing to resume): one line, exit 2
        # bad input found before the first step of a new run (data, reward, model): leave no empty run dir behind
        discard = (started and claim is not None and claim.fresh and plan.action == "fresh"
                   and not rundir.has_training_output(claim.path))  # fmt: skip
        raise
    finally:
        if claim is not None:
            claim.release(keep=started and not discard)
            if discard:
                shutil.rmtree(claim.path, ignore_errors=True)


def _launch_ranks(cfg: DictConfig, hydra_cfg: DictConfig, planned: Path, parallel: bool) -> None:
    """distributed=ddp|fsdp|...: this job's ranks under `accelerate launch`, in the directory Hydra planned."""
    from alignctl.run.train import build_inputs

    run_cfg = to_run_config(cfg)
    distributed.check_machine(run_cfg)  # where the job runs (for launcher=slurm, the first place it can be checked)
    build_inputs(run_cfg)
    code = distributed.launch(run_cfg, list(hydra_cfg.overrides.task), planned)
    if not code:
        return
    if not parallel:
        raise SystemExit(code)
    FailedJobs.record(hydra_cfg, code, f"its {run_cfg.distributed.num_processes} processes ended with exit code "
                                       f"{code} (rank 0's line is above)")  # fmt: skip


class FailedJobs(Callback):
    """How the jobs of a parallel launcher end when not done (conf/launcher/*.yaml register this callback). Such a
    job runs in another process, where exiting would not reach the user: joblib SIGKILLs its other jobs, submitit
    turns it into a traceback. So the job leaves its exit code and one line in the sweep directory and ends
    normally; once every job has ended, the sweep prints each line and exits with the highest code (2: bad input,
    128 + N: stopped by signal N)."""

    FOLDER = ".alignctl-failed"

    @classmethod
    def record(cls, hydra_cfg: DictConfig, code: int, message: str) -> None:
        folder = Path(hydra_cfg.sweep.dir) / cls.FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        what = f" ({hydra_cfg.job.override_dirname})" if hydra_cfg.job.override_dirname else ""
        line = f"alignctl: {'error: ' if code == EXIT_USAGE else ''}job {hydra_cfg.job.num}{what}: {message}"
        (folder / str(hydra_cfg.job.num)).write_text(json.dumps({"code": code, "line": line}))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        shutil.rmtree(Path(config.hydra.sweep.dir) / self.FOLDER, ignore_errors=True)  # lines of an earlier launch

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.sweep.dir) / self.FOLDER
        paths = sorted(folder.iterdir(), key=lambda p: int(p.name)) if folder.is_dir() else []
        ended = [json.loads(p.read_text()) for p in paths]
        for job in ended:
            print(job["line"], file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
        if ended:
            raise SystemExit(max(job["code"] for job in ended))


def _auto_named(hydra_cfg: DictConfig) -> bool:
    """Whether the job's directory is named by Hydra's ${now:} template (not by the user)."""
    if hydra_cfg.mode == RunMode.MULTIRUN:
        template = _raw(hydra_cfg.sweep, "dir") + "/" + _raw(hydra_cfg.sweep, "subdir")
    else:
        template = _raw(hydra_cfg.run, "dir")
    return "${now:" in template


def _raw(node: DictConfig, key: str) -> str:
    return str(OmegaConf.to_container(node, resolve=False)[key])


def _write_hydra_files(task_cfg: DictConfig, run_dir: Path) -> None:
    """.hydra/{config,hydra,overrides}.yaml, as Hydra writes them, into the directory this job claimed."""
    hydra_root = OmegaConf.create(OmegaConf.to_container(HydraConfig.instance().cfg, resolve=False, enum_to_str=True))
    hydra_root.hydra.runtime.output_dir = str(run_dir.resolve())
    hydra_root.hydra.output_subdir = ".hydra"
    hydra_root.hydra.overrides.hydra = [o for o in hydra_root.hydra.overrides.hydra if o != NO_HYDRA_SUBDIR]
    out = run_dir / ".hydra"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(task_cfg))
    (out / "hydra.yaml").write_text(OmegaConf.to_yaml(hydra_root))
    (out / "overrides.yaml").write_text(OmegaConf.to_yaml(hydra_root.hydra.overrides.task))


def _rerun_command(hydra_cfg: DictConfig) -> list[str]:
    """The command that started this job, without its run-directory and resume choices (a sweep job: its own
    values, as a single run)."""
    if hydra_cfg.mode == RunMode.MULTIRUN:
        overrides = [*hydra_cfg.overrides.task]
    else:
        overrides = [a for a in sys.argv[1:] if a not in ("-m", "--multirun", NO_HYDRA_SUBDIR)]
    own = ("hydra.run.dir=", "hydra.sweep.dir=", "hydra.sweep.subdir=", "train.resume=", "train.overwrite=",
           "launcher=", "launcher.")  # a single run has no launcher
    return ["alignctl", "train", *(o for o in overrides if not o.lstrip("+").startswith(own))]


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
