"""Sweep launchers (launcher=basic|local|slurm|submitit_local): each composes into alignctl's typed config and into
the Hydra launcher it selects; bad values, a launcher without -m and a missing plugin are one line, exit 2; launcher
keys never name a run nor block its resume; a sweep's W&B runs share a group."""

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from alignctl.cli import main as cli
from alignctl.config import compose, run_names
from alignctl.config import schema as config
from alignctl.run import launch, rundir, tracking

LAUNCHER_DIR = Path(compose.__file__).parents[1] / "conf" / "launcher"


pytestmark = pytest.mark.usefixtures("nothing_loads")  # tests/conftest.py: bad input fails before any load


def hydra_launcher(overrides):
    with initialize_config_module(compose.CONFIG_MODULE, version_base=None):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    return {key: OmegaConf.to_container(cfg.hydra[key], resolve=True) for key in ("launcher", "callbacks")}


def test_every_launcher_option_ships_a_yaml():
    assert sorted(p.stem for p in LAUNCHER_DIR.glob("*.yaml")) == sorted(config.LAUNCHERS)


def test_default_is_hydras_basic_launcher():
    assert compose.compose_one([]).launcher == config.LauncherConfig(name="basic")
    assert hydra_launcher([])["launcher"]["_target_"].endswith("BasicLauncher")


# option -> its launcher.* overrides and what Hydra's launcher config must then hold
SETTINGS = {
    "basic": ([], {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}),
    "local": (["launcher.n_jobs=3"], {"n_jobs": 3}),
    "slurm": (
        ["launcher.partition=gpu", "launcher.account=lab", "launcher.qos=high", "launcher.gpus_per_node=2",
         "launcher.cpus_per_task=8", "launcher.mem_gb=64", "launcher.timeout_min=240",
         "launcher.array_parallelism=4"],
        {"partition": "gpu", "account": "lab", "qos": "high", "gpus_per_node": 2, "cpus_per_task": 8, "mem_gb": 64,
         "timeout_min": 240, "array_parallelism": 4, "nodes": 1, "tasks_per_node": 1},
    ),
    "submitit_local": (["launcher.gpus_per_node=0", "launcher.timeout_min=5"],
                       {"gpus_per_node": 0, "timeout_min": 5, "nodes": 1}),
}  # fmt: skip


@pytest.mark.parametrize("option", config.LAUNCHERS)
def test_every_launcher_composes_and_its_hydra_launcher_resolves(option):
    overrides, expected = SETTINGS[option]
    cfg = compose.compose_one([f"launcher={option}", *overrides])
    assert cfg.launcher.name == option
    for override in overrides:
        key, value = override.removeprefix("launcher.").split("=")
        assert str(getattr(cfg.launcher, key)) == value
    hydra = hydra_launcher([f"launcher={option}", *overrides])
    launcher = hydra["launcher"]
    assert launcher.items() >= expected.items()
    get_class(launcher["_target_"])  # the plugin's launcher class imports
    if option != "basic":  # a parallel job's bad input comes back to the sweep (launch.FailedJobs)
        assert get_class(hydra["callbacks"]["failed_jobs"]["_target_"]) is launch.FailedJobs


def test_slurm_defaults_reach_submitit():
    launcher = hydra_launcher(["launcher=slurm"])["launcher"]
    defaults = config.LauncherConfig()
    assert launcher["gpus_per_node"] == defaults.gpus_per_node and launcher["timeout_min"] == defaults.timeout_min
    assert launcher["partition"] is None and launcher["mem_gb"] is None  # the cluster's defaults
    assert launcher["submitit_folder"].endswith("/.submitit/%j")  # job logs inside the sweep directory


def test_slurm_settings_reach_the_sbatch_script(tmp_path, monkeypatch):
    """What Hydra's submitit launcher hands submitit (its own conversion) becomes this sbatch script; a stand-in
    `srun` lets submitit's SLURM executor start without a cluster."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    (tmp_path / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with initialize_config_module(compose.CONFIG_MODULE, version_base=None):
        cfg = hydra_compose("config", return_hydra_config=True, overrides=[
            "launcher=slurm", "launcher.partition=gpu", "launcher.gpus_per_node=2", "launcher.cpus_per_task=8",
            "launcher.mem_gb=64", "launcher.timeout_min=240", "launcher.array_parallelism=4",
            f"hydra.sweep.dir={tmp_path}"])  # fmt: skip
    params = instantiate(cfg.hydra.launcher).params
    executor = submitit.AutoExecutor(cluster="slurm", folder=params["submitit_folder"])
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in ("submitit_folder", "max_num_timeout")})  # fmt: skip
    executor._executor.parameters["map_count"] = 6  # a sweep of 6 jobs is one array, 4 at a time
    script = executor._executor._make_submission_file_text("python -m job", "uid")
    for flag in ("--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=8", "--mem=64GB", "--time=240",
                 "--nodes=1", "--array=0-5%4", "--signal=TERM@120", "--job-name=alignctl"):  # fmt: skip
        assert f"#SBATCH {flag}\n" in script, (flag, script)


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    return exc.value.code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["launcher=local"], ["launcher=local", "pass -m"]),
        (["launcher.n_jobs=4"], ["launcher.n_jobs=4", "pass -m"]),
        (["-m", "launcher=lokal"], ["launcher=lokal", "basic, local, slurm, submitit_local"]),
        (["-m", "launcher=local,slurm"], ["launcher", "one launcher"]),
        (["-m", "launcher=local", "launcher.n_jobs=0"], ["launcher.n_jobs=0", "> 0"]),
        (["-m", "launcher=local", "launcher.n_jobs=two"], ["launcher.n_jobs", "two"]),
        (["-m", "launcher=slurm", "launcher.timeout_min=-5"], ["launcher.timeout_min=-5", "> 0"]),
        (["-m", "launcher=slurm", "launcher.gpus_per_node=-1"], ["launcher.gpus_per_node=-1", ">= 0"]),
        (["-m", "launcher=slurm", "launcher.array_parallelism=0"], ["launcher.array_parallelism=0", "> 0"]),
        (["-m", "launcher=slurm", "launcher.mem_gb=0"], ["launcher.mem_gb=0", "> 0"]),
        (["-m", "launcher=slurm", "launcher.nodes=2"], ["launcher.nodes=2 must equal distributed.num_machines=1"]),
        (["-m", "launcher=slurm", "distributed=ddp", "distributed.num_machines=2"],
         ["launcher.nodes=1 must equal distributed.num_machines=2"]),
        (["-m", "launcher=slurm", "distributed=ddp", "distributed.num_machines=2", "distributed.machine_rank=2"],
         ["distributed.machine_rank=2 is out of range for distributed.num_machines=2; use 0..1"]),
        (["-m", "launcher=local", "distributed.num_machines=2"],
         ["distributed.num_machines=2 needs a distributed option"]),
        (["-m", "launcher=slurm", "launcher.name=cloud"], ["launcher.name='cloud'", "basic, local, slurm"]),
        (["-m", "launcher.n_jobs=4"], ["launcher.n_jobs=4", "launcher=basic", "launcher=local"]),
        (["-m", "launcher=local", "launcher.partition=gpu"], ["launcher.partition=gpu", "launcher=slurm"]),
        (["-m", "launcher=local", "launcher.njobs=4"], ["launcher.njobs", "n_jobs"]),
        (["-m", "launcher=local", "+launcher.njobs=4"], ["launcher.njobs", "n_jobs"]),
        (["-m", "launcher=local", "++launcher.njobs=4"], ["launcher.njobs", "n_jobs"]),
        (["-m", "n_jobs=4"], ["n_jobs", "did you mean launcher.n_jobs"]),
    ],
)
def test_bad_launcher_input_is_one_line_and_exit_2(capsys, argv, expected):
    sweep = ["divergence=reverse_kl,js"] if "-m" in argv else []
    code, err = run_cli(capsys, "train", *argv, *sweep)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("alignctl: error: ")
    for fragment in expected:
        assert fragment in err, (fragment, err)


@pytest.mark.parametrize(
    "launcher, module, package",
    [("local", "joblib", "hydra-joblib-launcher"), ("slurm", "submitit", "hydra-submitit-launcher"),
     ("submitit_local", "submitit", "hydra-submitit-launcher")],
)  # fmt: skip
def test_a_launcher_whose_plugin_is_missing_names_the_package(capsys, monkeypatch, launcher, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # `import <module>` raises ImportError
    code, err = run_cli(capsys, "train", "-m", f"launcher={launcher}", "divergence=reverse_kl,js")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"launcher={launcher}" in err and f"pip install {package}" in err


def test_launcher_keys_never_name_a_run():
    name = run_names.run_name("dpo", "reverse_kl", ["launcher=slurm", "launcher.partition=gpu", "objective.beta=0.2"])
    assert name == "dpo-reverse_kl-beta0.2"


def test_a_sweep_jobs_rerun_command_is_a_single_run_without_the_launcher():
    hydra_cfg = OmegaConf.create({"mode": RunMode.MULTIRUN, "overrides": {"task": [
        "launcher=local", "launcher.n_jobs=2", "divergence=js", "train.resume=auto"]}})  # fmt: skip
    assert launch._rerun_command(hydra_cfg) == ["alignctl", "train", "divergence=js"]


def test_a_resumed_run_may_change_its_launcher(tmp_path):
    compose.save_resolved(compose.compose_one(["launcher=local", "launcher.n_jobs=3"]), tmp_path)
    other = compose.compose_one(["launcher=slurm", "launcher.partition=gpu", "train.resume=auto"])
    assert rundir.plan_run(other, tmp_path) == rundir.RunPlan("fresh")  # auto: no checkpoint yet
    changed = compose.compose_one(["launcher=slurm", "objective.beta=0.2", "train.resume=auto"])
    with pytest.raises(compose.UsageError, match=r"objective\.beta \(0\.1 -> 0\.2\)") as e:
        rundir.plan_run(changed, tmp_path)
    assert "launcher" not in str(e.value).split("another config:")[1].split(";")[0]


def test_a_sweep_into_a_named_directory_skips_or_resumes_its_jobs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    named = ["divergence=js,reverse_kl", f"hydra.sweep.dir={tmp_path / 'mine'}"]
    extra = launch._sweep_overrides(named, launch.validate(named, multirun=True))
    assert "train.resume=auto" in extra
    assert "hydra.job.config.override_dirname.exclude_keys=[hydra.sweep.dir,train.resume]" in extra
    for own in (["train.resume=false"], ["train.overwrite=true"]):  # the user's choice stands
        extra = launch._sweep_overrides(named + own, launch.validate(named + own, multirun=True))
        assert not any(o.startswith("train.resume=") for o in extra)
    unnamed = ["divergence=js,reverse_kl"]  # a new sweep directory: nothing to resume
    assert not any(o.startswith("train.resume=") for o in launch._sweep_overrides(unnamed, []))


def test_parallel_jobs_that_fail_or_stop_end_the_sweep_with_one_line_each_and_the_highest_code(tmp_path, capsys):
    sweep = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    callback = launch.FailedJobs()

    def job(num, dirname=""):
        return OmegaConf.create({"sweep": {"dir": str(tmp_path)}, "job": {"num": num, "override_dirname": dirname}})

    launch.FailedJobs.record(job(10, "divergence=js"), 2, "bad input")
    launch.FailedJobs.record(job(2), 143, "stopped by SIGTERM")
    with pytest.raises(SystemExit) as exc:
        callback.on_multirun_end(sweep)
    assert exc.value.code == 143
    assert capsys.readouterr().err.splitlines() == [
        "alignctl: job 2: stopped by SIGTERM", "alignctl: error: job 10 (divergence=js): bad input"]  # fmt: skip
    launch.FailedJobs.record(job(0), 2, "from an earlier launch")
    callback.on_multirun_start(sweep)
    callback.on_multirun_end(sweep)  # nothing failed in this launch
    assert capsys.readouterr().err == ""


def test_ctrl_c_while_a_parallel_sweep_waits_says_how_to_continue_it():
    argv = ["alignctl", "--multirun", "hydra.sweep.dir='runs/s'", "divergence=js,reverse_kl"]
    local = launch._sweep_stopped("local", argv)
    assert local == "alignctl: sweep stopped by SIGINT; run it again with hydra.sweep.dir=runs/s to resume its jobs"
    slurm = launch._sweep_stopped("slurm", argv)
    assert "SLURM jobs go on" in slurm and "scancel" in slurm and "hydra.sweep.dir=runs/s" in slurm


@pytest.fixture
def wandb_init(monkeypatch):
    """wandb.init replaced: the keyword arguments of each call, no W&B process, no network."""
    import wandb

    calls = []
    monkeypatch.setattr(wandb, "init", lambda **kwargs: calls.append(kwargs) or SimpleNamespace(id="run1"))
    return calls


@pytest.fixture
def hydra_mode():
    """Sets HydraConfig's mode, as a job of a single run (RUN) or of a sweep (MULTIRUN) sees it."""
    before = HydraConfig.instance().cfg

    def set_mode(mode):
        HydraConfig.instance().cfg = None if mode is None else OmegaConf.create({"hydra": {"mode": mode}})

    yield set_mode
    HydraConfig.instance().cfg = before


def test_a_sweeps_jobs_share_a_wandb_group_named_after_the_sweep_directory(tmp_path, wandb_init, hydra_mode):
    from alignctl.run import train

    hydra_mode(RunMode.MULTIRUN)
    run_dir = tmp_path / "20261201-120000-sweep" / "0-dpo-reverse_kl"
    run_dir.mkdir(parents=True)
    cfg = compose.compose_one(["tracking=wandb"])
    train._tracker(cfg, run_dir, train.RunRecord(run_dir), resume_step=None)
    assert wandb_init[-1]["group"] == "20261201-120000-sweep"


@pytest.mark.parametrize("mode", [RunMode.RUN, None])  # None: outside Hydra (tracking called directly)
def test_a_single_run_has_no_wandb_group(tmp_path, wandb_init, hydra_mode, mode):
    hydra_mode(mode)
    tracking.start("wandb", tmp_path, config={}, tags=[], group=tracking.sweep_group(tmp_path))
    assert wandb_init[-1]["group"] is None
