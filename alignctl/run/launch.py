"""Launching a validated run or sweep: Hydra makes one directory per job and calls `_job` there, which claims the
directory and trains in it; `distributed=` jobs start their ranks under accelerate; a parallel launcher's failed
jobs are reported once all have ended (FailedJobs)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from alignctl import ranks
from alignctl.config import compose
from alignctl.config.schema import RunConfig
from alignctl.data.sources import reading
from alignctl.errors import EXIT_USAGE, RunFailed, UsageError, fail
from alignctl.models import vllm_rollout
from alignctl.run import distributed, eval_checks, rundir, sources


def validate(overrides: list[str], multirun: bool) -> list[RunConfig]:
    """Every job of the run or sweep composed and checked before any model or data loads: the config's own rules
    (alignctl.config.compose), then what needs more than the config: teacher runs and their references, the settings
    a reward model (objective=reward_model) has no use for, what eval
    names (judges, lm-eval tasks, files: alignctl.run.eval_checks), what vLLM sampling needs, and the distributed settings against this
    machine. Then what the files the config names hold, read without loading any weights (after every job's other
    checks, so that a bad command line fails before transformers loads): the data file (empty, not UTF-8:
    alignctl.data.sources.reading.check_local_source), the models' vocabularies and LoRA targets
    (sources.check_models)."""
    jobs = compose.compose_jobs(overrides, multirun)
    for job in jobs:
        sources.check_teachers(job)
        eval_checks.check_reward_model(job)
        if job.model.rollout == "vllm":
            vllm_rollout.check_vllm("model.rollout")
        if job.eval.enabled:
            eval_checks.check(job.eval)
        if not ranks.launched():  # in the ranks the parent checked it (or, plainly launched, _job checks it)
            distributed.check(job)
    for job in jobs:  # each file is read once per process (memoized): a sweep over other keys reads it once
        reading.check_local_source(job.dataset)
        sources.check_models(job)
    return jobs


def run_hydra(overrides: list[str], jobs: list[RunConfig], multirun: bool) -> None:
    """Hand the run (or sweep) to Hydra, which makes one directory per job and calls `_job` in each. jobs: the
    validated configs of the run or of every job of the sweep."""
    ours = [] if _given(overrides, "hydra.output_subdir") else [compose.NO_HYDRA_SUBDIR]
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


def _sweep_overrides(overrides: list[str], jobs: list[RunConfig]) -> list[str]:
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
        with initialize_config_module(compose.CONFIG_MODULE, version_base=None):
            template = hydra_compose("config", overrides=compose.first_job(overrides), return_hydra_config=True)
        claimed = rundir.claim_sweep_dir(Path(template.hydra.sweep.dir))
        extra.append(f"hydra.sweep.dir={_quoted(str(claimed))}")
    if not _given(overrides, "hydra.job.config.override_dirname.exclude_keys"):
        parsed = OverridesParser.create().parse_overrides(overrides)
        fixed = {o.get_key_element().lstrip("+~") for o in parsed if not o.is_sweep_override()}
        fixed |= {o.split("=", 1)[0] for o in extra if not o.startswith("hydra.")}  # train.resume=auto
        extra.append(f"hydra.job.config.override_dirname.exclude_keys=[{','.join(sorted(fixed))}]")
    return extra


def _quoted(value: str) -> str:
    """A value as Hydra's override grammar reads it back unchanged."""
    return "'" + value.replace("'", "\\'") + "'"


@hydra.main(config_path=f"pkg://{compose.CONFIG_MODULE}", config_name="config", version_base=None)
def _hydra_entry(cfg: DictConfig) -> None:
    """One job: claim its run directory, then train in it (or say why not: one line, exit 2). Under a parallel
    launcher the job runs in another process (a loky worker, a submitit job): its line goes to FailedJobs."""
    hydra_cfg = HydraConfig.get()
    planned = Path(hydra_cfg.runtime.output_dir)
    previous = rundir.stop_on_signals()
    parallel = cfg.launcher.name != "basic"
    try:
        if cfg.distributed.name != "none" and not ranks.launched():
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
    except RunFailed as e:  # the run started and failed or diverged; its run.json says so
        if parallel:
            FailedJobs.record(hydra_cfg, e.code, e.line.removeprefix("alignctl: "))
            return
        if ranks.is_main():
            print(e.line, file=sys.stderr, flush=True)
            if e.details:
                print(e.details, end="", file=sys.stderr, flush=True)
        raise SystemExit(e.code) from None
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
    from alignctl.run.train import train_and_evaluate  # TRL: validation imports this module before it loads

    run_cfg = compose.to_run_config(cfg)
    if not ranks.is_main():
        run_dir, plan = _from_shared(ranks.agree(None))
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
        if ranks.in_ranks():  # started by a plain `accelerate launch`: no parent checked the batch split
            distributed.check_batch(run_cfg, ranks.world_size())
        claim = rundir.claim_run_dir(planned, run_cfg.train, auto_named=_auto_named(hydra_cfg), dir_key=dir_key)
        plan = rundir.plan_run(run_cfg, claim.path, dir_key)
        if plan.action == "finished":
            return claim.path, plan
        if claim.path != planned:  # an automatic name another run had claimed: continue in <name>-2, -3, ...
            rundir.move_log_files(planned, claim.path)
            if Path.cwd() == planned.resolve():  # hydra.job.chdir=true
                os.chdir(claim.path)
        if not claim.fresh and plan.action == "fresh":
            # only alignctl's own files, and none if the directory also holds the user's (then exit 2)
            asked = ("train.overwrite=true" if run_cfg.train.overwrite else
                     "train.resume=auto (no checkpoint: a fresh start)")  # fmt: skip
            removed = rundir.clear_run_dir(claim.path, reason=asked, dir_key=dir_key)
            why = ("train.overwrite=true: removed the previous run" if run_cfg.train.overwrite else
                   "train.resume=auto: no checkpoint to resume; starting afresh, removed the earlier attempt")
            print(f"{why} from {claim.path} ({removed} entries)", file=sys.stderr)
        claim.describe()
        if compose.NO_HYDRA_SUBDIR in hydra_cfg.overrides.hydra:
            _write_hydra_files(cfg, claim.path)
        return claim.path, plan

    try:
        if ranks.in_ranks():  # what the other ranks receive: JSON (ranks.agree)
            run_dir, plan = _from_shared(ranks.agree(lambda: _shared(*claim_and_plan())))
        else:
            run_dir, plan = claim_and_plan()
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
                rundir.remove_run_dir(claim.path)  # alignctl's own entries; anything else stays


def _shared(run_dir: Path, plan: rundir.RunPlan) -> dict[str, Any]:
    return {"run_dir": str(run_dir), "plan": dataclasses.asdict(plan)}


def _from_shared(shared: dict[str, Any]) -> tuple[Path, rundir.RunPlan]:
    return Path(shared["run_dir"]), rundir.RunPlan(**shared["plan"])


def _launch_ranks(cfg: DictConfig, hydra_cfg: DictConfig, planned: Path, parallel: bool) -> None:
    """distributed=ddp|fsdp|...: this job's ranks under `accelerate launch`, in the directory Hydra planned."""
    from alignctl.run.train import build_inputs  # TRL: validation imports this module before it loads

    run_cfg = compose.to_run_config(cfg)
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
    hydra_root.hydra.overrides.hydra = [o for o in hydra_root.hydra.overrides.hydra if o != compose.NO_HYDRA_SUBDIR]
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
        overrides = [a for a in sys.argv[1:] if a not in ("-m", "--multirun", compose.NO_HYDRA_SUBDIR)]
    own = ("hydra.run.dir=", "hydra.sweep.dir=", "hydra.sweep.subdir=", "train.resume=", "train.overwrite=",
           "launcher=", "launcher.")  # a single run has no launcher
    return ["alignctl", "train", *(o for o in overrides if not o.lstrip("+").startswith(own))]


