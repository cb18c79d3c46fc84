"""distributed=: the shipped accelerate configs, and every bad input refused in one line before any model loads."""

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.commands.config.config_args import ClusterConfig

from alignctl.config import compose
from alignctl.config.schema import DistributedConfig
from alignctl.errors import ConfigError, UsageError
from alignctl.run import distributed, launch
from tests import forked

CLUSTER_FIELDS = {f.name for f in dataclasses.fields(ClusterConfig)}
EXPECTED_TYPE = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero2": "DEEPSPEED", "deepspeed_zero3": "DEEPSPEED"}


@pytest.mark.parametrize("option", sorted(distributed.SHIPPED))
def test_every_shipped_accelerate_config_parses_with_valid_fields(option):
    path = distributed.LAUNCH_CONFIGS / distributed.SHIPPED[option]
    loaded = yaml.safe_load(path.read_text())
    assert set(loaded) <= CLUSTER_FIELDS, set(loaded) - CLUSTER_FIELDS
    assert loaded["distributed_type"] == EXPECTED_TYPE[option] and loaded["num_machines"] == 1
    cluster = ClusterConfig.from_yaml_file(str(path))  # accelerate's own reader
    assert cluster.distributed_type.value == EXPECTED_TYPE[option]
    if option == "fsdp":
        assert loaded["fsdp_config"]["fsdp_version"] == 2
    if option.startswith("deepspeed"):
        assert loaded["deepspeed_config"]["zero_stage"] == int(option[-1])
    # every option of the config group names its shipped file
    group = Path(compose.__file__).parents[1] / "conf" / "distributed" / f"{option}.yaml"
    assert yaml.safe_load(group.read_text())["name"] == option


def compose_and_check(*overrides: str):
    job = compose.compose_one(list(overrides))
    distributed.check(job)
    return job


@pytest.fixture
def cpu_machine(monkeypatch):
    """Two CPU cores, no GPU (this CI machine, whatever runs the test)."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(distributed.os, "cpu_count", lambda: 2)


def test_ddp_on_two_cpu_processes_is_accepted(cpu_machine):
    job = compose_and_check("distributed=ddp")
    assert (job.distributed.name, job.distributed.num_processes) == ("ddp", 2)
    cmd = distributed.launch_command(job, ["distributed=ddp", "launcher=local", "objective=dpo"], Path("/r/x"))
    assert cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[cmd.index("--config_file") + 1] == str(distributed.LAUNCH_CONFIGS / "ddp.yaml")
    assert cmd[-4:] == ["train", "distributed=ddp", "objective=dpo", "hydra.run.dir=/r/x"]  # no launcher: one run


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["distributed=ddp", "distributed.num_processes=3"],
         "distributed.num_processes=3 is more than this machine allows: it has 2 CPU cores"),
        (["distributed=fsdp"], "distributed=fsdp needs CUDA GPUs and this machine has none"),
        (["distributed=ddp", "train.batch_size=5"],
         "train.batch_size=5 does not split evenly over distributed.num_processes=2"),
        (["distributed=ddp", "objective=disco", "dataset=toy_arith", "reward=exact_match", "train.batch_size=12",
          "train.num_generations=4"],
         "objective=disco needs whole groups on each rank: train.batch_size=12 / distributed.num_processes=2 must "
         "be a multiple of train.num_generations=4"),
        (["distributed=ddp", "distributed.config_file=/no/such/accelerate.yaml"],
         "distributed.config_file=/no/such/accelerate.yaml: no such file"),
    ],
)  # fmt: skip
def test_bad_distributed_input_is_one_line(cpu_machine, overrides, message):
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        compose_and_check(*overrides)


def test_deepspeed_without_the_package_says_how_to_install_it(cpu_machine, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(distributed.importlib.util, "find_spec", lambda n: None if n == "deepspeed" else real(n))
    with pytest.raises(UsageError, match="distributed=deepspeed_zero3 needs the deepspeed package: pip install"):
        compose_and_check("distributed=deepspeed_zero3")


def test_sharded_options_refuse_what_reads_the_whole_lm_head(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UsageError, match="model.kernel=fused reads the whole LM head, which distributed=fsdp shards"):
        compose_and_check("distributed=fsdp")
    with pytest.raises(UsageError, match="eval.every_steps=5 samples from rank 0's model"):
        compose_and_check("distributed=fsdp", "model.kernel=naive", "eval.every_steps=5")
    assert compose_and_check("distributed=fsdp", "model.kernel=naive").distributed.name == "fsdp"


@pytest.mark.parametrize(
    "text, message",
    [
        ("distributed_type: [MULTI_GPU\n", "is not valid YAML"),
        ("- a list\n", "is not an accelerate config"),
        ("distributed_type: MULTI_GPU\nnum_procs: 2\n", "unknown key num_procs; valid keys: compute_environment"),
        ("num_processes: 2\n", "has no distributed_type"),
    ],
)
def test_a_malformed_accelerate_config_file_is_named(cpu_machine, tmp_path, text, message):
    path = tmp_path / "accelerate.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=f"distributed.config_file={path}.*{message}"):
        compose_and_check("distributed=ddp", f"distributed.config_file={path}")


def test_num_processes_needs_a_distributed_option():
    with pytest.raises(ConfigError, match="distributed.num_processes=2 needs a distributed option"):
        DistributedConfig(num_processes=2)
    with pytest.raises(ConfigError, match="distributed.name='mpi' is not valid"):
        DistributedConfig(name="mpi")


def test_cli_reports_a_bad_distributed_value_once_with_exit_2(tmp_path):
    out = forked.run([sys.executable, "-m", "alignctl.cli.main", "train", "distributed=ddp", "train.batch_size=5"],
                     capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "alignctl: error: train.batch_size=5 does not split evenly over distributed.num_processes=2; use a multiple of 2"
    ]


def test_only_rank_0_prints_a_usage_error(monkeypatch, capsys):
    from alignctl.errors import fail

    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as stopped:
        fail("bad")
    assert stopped.value.code == 2 and capsys.readouterr().err == ""


def test_a_slurm_sweep_checks_the_machine_in_the_job_and_gpus_against_processes(cpu_machine):
    # composed on a login node without GPUs: the GPUs are the job's, checked where it runs (_launch_ranks)
    jobs = launch.validate(["distributed=fsdp", "model.kernel=naive", "launcher=slurm", "launcher.gpus_per_node=2",
                             "objective=dpo,ipo"], multirun=True)  # fmt: skip
    assert [j.distributed.name for j in jobs] == ["fsdp", "fsdp"]
    with pytest.raises(UsageError, match="distributed=fsdp needs CUDA GPUs"):
        distributed.check_machine(jobs[0])
    with pytest.raises(UsageError, match="distributed.num_processes=2 must equal launcher.gpus_per_node=4: each rank"):
        launch.validate(["distributed=ddp", "launcher=slurm", "launcher.gpus_per_node=4", "objective=dpo,ipo"],
                         multirun=True)  # fmt: skip
