"""Multi-process training on accelerate (distributed=ddp|fsdp|deepspeed_zero2|deepspeed_zero3).

`alignctl train distributed=ddp distributed.num_processes=N ...` validates the run and chooses its directory in
this process, then starts `accelerate launch -m alignctl train <the same overrides> hydra.run.dir=<that dir>`
with the option's accelerate config file (alignctl/run/launch_configs/, or distributed.config_file). Each rank runs
the same job in the same directory; the plain `accelerate launch -m alignctl train ...` takes the same path.
Inside the ranks, rank 0 claims the directory (a name from ${now:} may differ between ranks: rank 0's wins),
plans the run and tells the others (`agree`); rank 0 alone writes files, prints, logs to W&B and evaluates.
Config errors are printed once, by rank 0 (errors.fail).

train.batch_size stays the global batch: each rank takes batch_size / N rows (and whole groups of
train.num_generations completions where the objective reads its groups), so a run gives the same numbers on 1 or N
processes; on a CPU-only machine the ranks are processes with the gloo backend.

Several machines (distributed.num_machines=M): the same `alignctl train ...` runs on each machine with its
distributed.machine_rank, and each starts distributed.num_processes ranks there (ranks PER MACHINE: accelerate's
--num_processes, the total, is num_processes * M); global rank 0, on machine 0 at distributed.main_process_ip, writes
the run directory, on a filesystem the machines share. Under SLURM (launcher=slurm launcher.nodes=M) each node's
task launches its own ranks, the machine rank and address read from SLURM_NODEID and SLURM_JOB_NODELIST.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from alignctl import objectives, ranks
from alignctl.errors import UsageError

if TYPE_CHECKING:
    from alignctl.config.schema import RunConfig

LAUNCH_CONFIGS = Path(__file__).parent / "launch_configs"
SHIPPED = {
    "ddp": "ddp.yaml",
    "fsdp": "fsdp2.yaml",
    "deepspeed_zero2": "deepspeed_zero2.yaml",
    "deepspeed_zero3": "deepspeed_zero3.yaml",
}
SHARDED = ("fsdp", "deepspeed_zero3")  # the parameters themselves are split across ranks
NEEDS_GPU = ("fsdp", "deepspeed_zero2", "deepspeed_zero3")


def config_file(cfg: RunConfig) -> Path:
    d = cfg.distributed
    return Path(d.config_file) if d.config_file else LAUNCH_CONFIGS / SHIPPED[d.name]


REMOTE_LAUNCHERS = ("slurm",)  # a job runs on another machine: check_machine runs there, in the job


@dataclasses.dataclass(frozen=True)
class Machines:
    """Where this machine's ranks join the run: how many machines, this one's rank, machine 0's address and port."""

    count: int
    rank: int
    ip: str
    port: int


def machines(cfg: RunConfig) -> Machines:
    """The run's machines as this machine sees them: the config's values, else SLURM's (a job's node rank, its first
    node, a port from the job id, the same on every node), else for one machine this one and a free port. One line
    naming the field when a multi-machine run lacks one."""
    d = cfg.distributed
    if d.num_machines == 1:
        return Machines(1, 0, "127.0.0.1", d.main_process_port or _free_port())
    env = os.environ if "SLURM_JOB_ID" in os.environ else {}
    rank = d.machine_rank if d.machine_rank is not None else _int(env.get("SLURM_NODEID"))
    ip = d.main_process_ip or first_host(env.get("SLURM_JOB_NODELIST", ""))
    port = d.main_process_port or (29500 + int(env["SLURM_JOB_ID"]) % 20000 if env else None)
    n = d.num_machines
    if rank is None:
        raise UsageError(f"distributed.num_machines={n} needs distributed.machine_rank on each machine: 0 on the one at "
                         f"distributed.main_process_ip, 1..{n - 1} on the others")  # fmt: skip
    if rank >= n:
        raise UsageError(f"distributed.machine_rank={rank} (SLURM_NODEID) is out of range for distributed.num_machines="
                         f"{n}; set launcher.nodes={n} or distributed.num_machines to the job's nodes")  # fmt: skip
    if not ip:
        raise UsageError(f"distributed.num_machines={n} needs distributed.main_process_ip: the address of machine 0 "
                         "(machine_rank=0), which every machine can reach")  # fmt: skip
    if port is None:
        raise UsageError(f"distributed.num_machines={n} needs distributed.main_process_port: one free port on machine "
                         "0, the same on every machine (e.g. 29500)")  # fmt: skip
    return Machines(n, rank, ip, port)


def first_host(nodelist: str) -> str | None:
    """The first host of a SLURM node list ("gpu[07-09,12],cpu1" -> "gpu07"; zero padding kept), None if empty."""
    found = re.match(r"\s*([^,\[\s]+)(?:\[([^\]]*)\])?", nodelist)
    if not found:
        return None
    prefix, ranges = found.groups()
    return prefix + re.split(r"[-,]", ranges)[0] if ranges else prefix


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def check(cfg: RunConfig) -> None:
    """Everything that would stop a multi-process run, before any model loads: one line naming the field. What
    depends on the machine is checked here unless the job runs elsewhere (launcher=slurm: then in the job)."""
    d = cfg.distributed
    if d.name == "none":
        return
    _check_config_file(config_file(cfg), given=d.config_file is not None)
    if d.name.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise UsageError(f"distributed={d.name} needs the deepspeed package: pip install deepspeed")
    if cfg.launcher.name not in REMOTE_LAUNCHERS:
        check_machine(cfg)
        machines(cfg)
    check_batch(cfg, d.num_processes * d.num_machines)
    if d.name in SHARDED and cfg.model.kernel != "naive":
        raise UsageError(
            f"model.kernel={cfg.model.kernel} reads the whole LM head, which distributed={d.name} shards across "
            "ranks; use model.kernel=naive (or distributed=ddp / deepspeed_zero2)"
        )
    if d.name in SHARDED and cfg.eval.every_steps:
        raise UsageError(
            f"eval.every_steps={cfg.eval.every_steps} samples from rank 0's model during training, which "
            f"distributed={d.name} shards across ranks; use eval.every_steps=0 (or distributed=ddp)"
        )
    gpus_per_job = cfg.launcher.gpus_per_node
    if cfg.launcher.name in ("slurm", "submitit_local") and gpus_per_job and d.num_processes != gpus_per_job:
        raise UsageError(
            f"distributed.num_processes={d.num_processes} must equal launcher.gpus_per_node={gpus_per_job}: each "
            "rank of a job trains on one of the GPUs the job is given"
        )


def check_machine(cfg: RunConfig) -> None:
    """The ranks fit this machine: GPUs where the option needs them, no more processes than GPUs (or cores)."""
    import torch

    d = cfg.distributed
    gpus = torch.cuda.device_count()
    if d.name in NEEDS_GPU and not gpus:
        raise UsageError(f"distributed={d.name} needs CUDA GPUs and this machine has none; on CPU use distributed=ddp")
    allowed, what = (gpus, "GPUs") if gpus else (os.cpu_count() or 1, "CPU cores")
    if d.num_processes > allowed:
        raise UsageError(
            f"distributed.num_processes={d.num_processes} is more than this machine allows: it has {allowed} {what}; "
            f"use distributed.num_processes=1..{allowed}"
        )


def check_batch(cfg: RunConfig, processes: int) -> None:
    """train.batch_size (global) must split evenly over the ranks (all machines'), in whole groups where the objective
    reads them."""
    t, entry = cfg.train, objectives.REGISTRY[cfg.objective.name]
    if t.batch_size % processes:
        raise UsageError(
            f"train.batch_size={t.batch_size} does not split evenly over distributed.num_processes={processes}; "
            f"use a multiple of {processes}"
        )
    if entry.data == "binary" and t.batch_size // processes < 2:
        raise UsageError(
            f"objective={entry.name} pairs each prompt with another row's completion of its rank's batch: "
            f"train.batch_size={t.batch_size} / distributed.num_processes={processes} must be 2 or more"
        )
    if entry.data == "groups" and entry.reads_groups and (t.batch_size // processes) % t.num_generations:
        raise UsageError(
            f"objective={entry.name} needs whole groups on each rank: train.batch_size={t.batch_size} / "
            f"distributed.num_processes={processes} must be a multiple of train.num_generations={t.num_generations}"
        )


def _check_config_file(path: Path, given: bool) -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    field = "distributed.config_file" if given else "the shipped accelerate config"
    if not path.is_file():
        raise UsageError(f"{field}={path}: no such file; give an accelerate config file (accelerate config writes one)")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise UsageError(f"{field}={path} is not valid YAML{where}") from None
    if not isinstance(loaded, dict):
        raise UsageError(f"{field}={path} is not an accelerate config: expected key: value lines")
    valid = [f.name for f in dataclasses.fields(ClusterConfig)]
    unknown = sorted(set(loaded) - set(valid))
    if unknown:
        raise UsageError(f"{field}={path}: unknown key {unknown[0]}; valid keys: {', '.join(valid)}")
    if "distributed_type" not in loaded:
        raise UsageError(f"{field}={path} has no distributed_type (e.g. MULTI_GPU, FSDP, DEEPSPEED)")


def launch_command(cfg: RunConfig, overrides: list[str], run_dir: Path) -> list[str]:
    """`accelerate launch` of this machine's distributed.num_processes ranks of the run, all in run_dir. accelerate
    counts --num_processes over all machines: num_processes (per machine) * num_machines."""
    d, m = cfg.distributed, machines(cfg)
    ours = ("hydra.run.dir=", "hydra.sweep.dir=", "hydra.sweep.subdir=", "launcher=", "launcher.")
    job = [o for o in overrides if not o.lstrip("+").startswith(ours)]
    where = ["--machine_rank", str(m.rank), "--main_process_ip", m.ip] if m.count > 1 else []
    return [
        sys.executable, "-m", "alignctl.run.distributed", "--config_file", str(config_file(cfg)),
        "--num_processes", str(d.num_processes * m.count), "--num_machines", str(m.count), *where,
        "--main_process_port", str(m.port), "-m", "alignctl", "train", *job, f"hydra.run.dir={run_dir}",
    ]  # fmt: skip


def launch(cfg: RunConfig, overrides: list[str], run_dir: Path) -> int:
    """Run the job on its ranks and wait; the ranks' exit code (2: bad input, reported by rank 0; 128 + N: stopped
    by signal N, checkpointed). The launcher runs in its own session, so a Ctrl-C reaches it once, as the SIGTERM
    forwarded here, which accelerate's agent passes to every rank (a rank given two signals would exit unsaved)."""
    # LOGLEVEL: torch elastic's agent logs each rank's exit and the signals it passes on; alignctl says what matters
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg.train.num_threads or 1), LOGLEVEL="ERROR", **{ranks.LAUNCHED: "1"})
    d = cfg.distributed
    n = f"{d.num_processes} process{'es' if d.num_processes > 1 else ''}"
    if d.num_machines > 1:
        n = f"{d.num_machines} machines x {n} (this is machine {machines(cfg).rank})"
    print(f"alignctl: training on {n} ({d.name}) in {run_dir}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(launch_command(cfg, overrides, run_dir), env=env, start_new_session=True)
    forwarded: list[int] = []

    def forward(signum, frame) -> None:
        if forwarded:  # a second signal: stop waiting for the checkpoint
            proc.kill()
        forwarded.append(signum)
        proc.send_signal(signal.SIGTERM)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if forwarded and code in (0, 128 + signal.SIGTERM):  # report the signal the user sent
        return 128 + forwarded[0] if code else 0
    return code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accelerate_launch(argv: list[str]) -> int:
    """`accelerate launch argv`, exiting with the failed rank's code and without torch elastic's report of it (a
    traceback of the launcher itself): rank 0 has already printed the line that matters."""
    import logging

    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        launch_command(launch_command_parser().parse_args(argv))
    except ChildFailedError as e:
        code = e.get_first_failure()[1].exitcode
        return 128 - code if code < 0 else code  # a rank killed by signal N: -N
    except SignalException as e:
        return 128 + int(e.sigval)
    return 0


if __name__ == "__main__":  # what `launch` runs: python -m alignctl.run.distributed <accelerate launch arguments>
    sys.exit(_accelerate_launch(sys.argv[1:]))
