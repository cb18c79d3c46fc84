"""Multi-process training, end to end: the same run on 1 process and on 2 (DDP, gloo on CPU) gives the same per-step
losses and final weights (float32 tolerance) for dpo, tdpo2 and grpo, and the same eval, computed once by rank 0.
The 2-process runs start through `distributed=ddp`, through a plain `accelerate launch -m alignctl train`, and as the
job of a submitit sweep."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignctl.run import distributed
from tests import forked
from tests.e2e.test_faults import ALIGNCTL, SMALL, env, rows

pytestmark = pytest.mark.slow

STEPS = 4
COMMON = [o for o in SMALL if not o.startswith(("train.max_steps", "eval.enabled"))] + [
    f"train.max_steps={STEPS}", "train.logging_steps=1", "train.warmup_steps=0", "train.learning_rate=1e-3",
]  # fmt: skip
ONLINE = ["objective=grpo", "divergence=reverse_kl", "train.batch_size=8", "train.num_generations=4",
          "dataset.num_train_prompts=16", "eval.enabled=false"]  # fmt: skip
EVAL = ["eval.num_prompts=4", "eval.samples_per_prompt=2", "eval.max_new_tokens=8"]
LOSS_TOL = dict(rtol=1e-5, atol=1e-6)
WEIGHT_TOL = dict(rtol=0, atol=1e-4)  # Adam divides tiny gradient differences by tiny second moments


def run(cache: Path, run_dir: Path, *args: str, launch: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = [*(launch or ALIGNCTL), "train", *COMMON, *args, f"hydra.run.dir={run_dir}"]
    out = forked.run(cmd, capture_output=True, text=True, env=env(cache), cwd=run_dir.parent, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def step_rows(run_dir: Path) -> list[dict]:
    return [r for r in rows(run_dir) if "step" in r]


def assert_same_run(one: Path, two: Path) -> None:
    a, b = step_rows(one), step_rows(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, STEPS + 1))  # every step once
    for key in ("loss", "grad_norm"):
        torch.testing.assert_close(torch.tensor([r[key] for r in b]), torch.tensor([r[key] for r in a]), **LOSS_TOL)
    assert any(r["grad_norm"] > 0 for r in a)  # the runs trained
    wa, wb = (load_file(str(d / "model" / "model.safetensors")) for d in (one, two))
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], **WEIGHT_TOL, msg=lambda m: f"{name}: {m}")
    assert json.loads((two / "run.json").read_text())["status"] == "finished"
    assert not list(two.parent.glob(two.name + "-*"))  # one directory, shared by both ranks


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "cache"  # the session cache of tests/conftest.py


PLAIN_LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(distributed.LAUNCH_CONFIGS / "ddp.yaml"), "--num_processes", "2", "-m", "alignctl"]  # fmt: skip


@pytest.mark.parametrize("objective, started", [("dpo", "plainly"), ("tdpo2", "by alignctl")])
def test_two_processes_train_and_evaluate_as_one(cache, tmp_path, objective, started):
    """2 processes started by `distributed=ddp`, or by a plain `accelerate launch --config_file <alignctl's
    ddp.yaml> -m alignctl train ...` as the README shows (its ranks agree on one directory, named here by
    ${now:}, which each rank resolves on its own)."""
    one = tmp_path / "one"
    run(cache, one, f"objective={objective}", *EVAL)
    if started == "by alignctl":
        two = tmp_path / "two"
        out = run(cache, two, f"objective={objective}", *EVAL, "distributed=ddp")
        assert "training on 2 processes (ddp)" in out.stderr
    else:
        plain = tmp_path / "plain"
        plain.mkdir()
        cmd = [*PLAIN_LAUNCH, "train", *COMMON, f"objective={objective}", *EVAL]
        out = forked.run(cmd, capture_output=True, text=True, env=env(cache), cwd=plain, timeout=600)
        assert out.returncode == 0, out.stderr[-4000:]
        (two,) = [d for d in (plain / "runs").iterdir() if d.is_dir()]
    assert_same_run(one, two)
    eval_one, eval_two = (json.loads((d / "eval.json").read_text()) for d in (one, two))
    assert eval_two.keys() == eval_one.keys()
    numbers = [k for k, v in eval_one.items() if isinstance(v, float)]
    rest = [k for k in eval_one if k not in numbers and k != "model_dir"]
    assert len(numbers) > 5 and {k: eval_two[k] for k in rest} == {k: eval_one[k] for k in rest}
    torch.testing.assert_close([eval_two[k] for k in numbers], [eval_one[k] for k in numbers], **LOSS_TOL)
    assert out.stderr.count("eval: ") <= 1 and (two / "eval_samples.jsonl").is_file()  # rank 0's eval, once


def test_grpo_on_two_processes_samples_and_trains_as_one(cache, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run(cache, one, *ONLINE)
    run(cache, two, *ONLINE, "distributed=ddp")
    assert_same_run(one, two)
    for a, b in zip(step_rows(one), step_rows(two)):  # the same completions: same rewards and lengths
        assert (a["reward"], a["completions/mean_length"]) == (b["reward"], b["completions/mean_length"])
    assert any(r["reward"] != 0 for r in step_rows(one))


def test_a_submitit_sweep_of_two_process_jobs(cache, tmp_path):
    """launcher= starts the sweep's jobs, distributed= the ranks inside each (a SLURM sweep of multi-GPU jobs,
    here through submitit's local executor): the job's directory complete, trained by its ranks. One job keeps the
    suite short; tests/e2e/test_sweeps.py runs two through the same launcher."""
    sweep_dir = tmp_path / "sweep"
    cmd = [*ALIGNCTL, "train", "-m", *COMMON, "objective=ipo", "eval.enabled=false", "distributed=ddp",
           "launcher=submitit_local", "launcher.gpus_per_node=0", f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    out = forked.run(cmd, capture_output=True, text=True, env=env(cache), cwd=tmp_path, timeout=600)
    logs = "".join(p.read_text() for p in (sweep_dir / ".submitit").glob("*/*_log.err"))
    assert out.returncode == 0, out.stderr[-3000:] + logs[-3000:]
    job = sweep_dir / "0-ipo-reverse_kl"
    assert f"training on 2 processes (ddp) in {job}" in logs
    assert json.loads((job / "run.json").read_text())["status"] == "finished"
    assert [r["step"] for r in step_rows(job)] == list(range(1, STEPS + 1))


def test_one_process_with_a_distributed_option_trains_once(cache, tmp_path):
    """distributed=ddp with one process: the launched process is a rank (the launcher's environment says so, not
    WORLD_SIZE > 1) and trains, instead of launching itself again and again; same losses and weights as without."""
    plain, launched = tmp_path / "plain", tmp_path / "launched"
    run(cache, plain, "objective=dpo")
    out = run(cache, launched, "objective=dpo", "distributed=ddp", "distributed.num_processes=1")
    assert out.stderr.count("training on 1 process (ddp)") == 1
    assert_same_run(plain, launched)


def test_two_machines_on_one_host_train_as_one_process(cache, tmp_path):
    """distributed.num_machines=2: the same command on two "machines" (machine ranks 0 and 1, one process each, gloo,
    both at 127.0.0.1), each launching its own rank: the same losses and weights as one process with the same global
    batch, one run directory written by global rank 0."""
    one, two = tmp_path / "one", tmp_path / "two"
    run(cache, one, "objective=dpo", *EVAL)
    port = distributed._free_port()
    machine = [*ALIGNCTL, "train", *COMMON, "objective=dpo", *EVAL, "distributed=ddp", "distributed.num_processes=1",
               "distributed.num_machines=2", "distributed.main_process_ip=127.0.0.1",
               f"distributed.main_process_port={port}", f"hydra.run.dir={two}"]  # fmt: skip
    procs = [forked.Popen([*machine, f"distributed.machine_rank={rank}"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env(cache), cwd=tmp_path)
             for rank in (0, 1)]  # fmt: skip
    outs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (_, err) in zip(procs, outs):
        assert proc.returncode == 0, err[-4000:]
    for rank, (_, err) in enumerate(outs):
        print(err.splitlines()[0])
        assert f"training on 2 machines x 1 process (this is machine {rank}) (ddp) in {two}" in err
    assert_same_run(one, two)
    assert json.loads((one / "eval.json").read_text())["reward_mean"] == pytest.approx(
        json.loads((two / "eval.json").read_text())["reward_mean"], abs=1e-6)  # fmt: skip


def test_machine_settings_from_slurm_and_the_missing_ones(monkeypatch):
    """Under SLURM (a job of launcher.nodes nodes) the machine rank, machine 0's address and a port common to every
    node come from the job's variables; outside it a multi-machine run names what it lacks, in one line."""
    from alignctl.config import compose
    from alignctl.errors import UsageError

    two = ["distributed=ddp", "distributed.num_processes=1", "distributed.num_machines=2"]
    for name in ("SLURM_JOB_ID", "SLURM_NODEID", "SLURM_JOB_NODELIST"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UsageError, match=r"^distributed.num_machines=2 needs distributed.machine_rank on each"):
        distributed.machines(compose.compose_one(two))
    with pytest.raises(UsageError, match=r"^distributed.num_machines=2 needs distributed.main_process_ip"):
        distributed.machines(compose.compose_one([*two, "distributed.machine_rank=1"]))
    with pytest.raises(UsageError, match=r"^distributed.num_machines=2 needs distributed.main_process_port"):
        distributed.machines(compose.compose_one([*two, "distributed.machine_rank=1",
                                                  "distributed.main_process_ip=10.0.0.1"]))  # fmt: skip
    monkeypatch.setenv("SLURM_JOB_ID", "123456")
    monkeypatch.setenv("SLURM_NODEID", "1")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[07-08]")
    assert distributed.machines(compose.compose_one(two)) == distributed.Machines(2, 1, "gpu07", 29500 + 123456 % 20000)
    cmd = distributed.launch_command(compose.compose_one(two), ["objective=dpo"], Path("/runs/x"))
    assert cmd[cmd.index("--num_processes") + 1] == "2"  # accelerate counts every machine's ranks
    assert cmd[cmd.index("--machine_rank") + 1] == "1" and cmd[cmd.index("--main_process_ip") + 1] == "gpu07"
    monkeypatch.setenv("SLURM_NODEID", "2")
    with pytest.raises(UsageError, match=r"machine_rank=2 \(SLURM_NODEID\) is out of range"):
        distributed.machines(compose.compose_one(two))
