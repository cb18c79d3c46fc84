#!/usr/bin/env python
"""The GPU check of issue 25: on one CUDA GPU, within a time budget (8 minutes by default), each part in turn:

* triton_parity: tests/kernels/triton_cases.py (impl="triton" against the reference: every divergence, float32 /
  bfloat16 / float16, logits with |z| > 100, head maps, masking, gradcheck) through pytest in a subprocess, on the GPU;
* kernels: scripts/bench_kernels.py at N=16384 d=4096 V=131072 bfloat16, forward_kl (naive, chunked, triton, TRL's
  ChunkedLogProbFunction + ChunkedDivergenceFunction, and the bare GEMMs): seconds, peak memory and the fraction of
  the GPU's dense bf16 peak, counting 8 N d V FLOPs per forward + backward (the four [N, d] x [d, V]-sized products
  every implementation must do: policy and reference projections, the policy's two gradient products); a row that
  runs out of memory is reported as such (naive's [N, V] fp32 logits are 8 GiB each);
* model: a randomly initialised Qwen2.5-0.5B-shaped Qwen2 (hidden 896, 24 layers, 14 heads, 2 KV heads,
  intermediate 4864, vocab 151936, tied embeddings) in bfloat16, saved with a byte-level BPE tokenizer trained on a
  few sentences (tiny_lm.train_bpe_tokenizer, as tests/models builds its tiny hub-format models) to a temp dir;
* dpo: `alignctl train` 20 DPO steps on that model, model.dtype=bfloat16, model.kernel=fused, on a pairs file;
* grpo: `alignctl train` 5 GRPO steps (reward=sentiment) on a prompts file, same model and fused path;
* fsdp: `alignctl train distributed=fsdp distributed.num_processes=1` 5 DPO steps (FSDP2 on one process;
  model.kernel=naive, which alignctl requires with sharded parameters).

Each part ends ok, failed (with a one-line reason; its output is in <out>/gpu_check.log) or skipped (why), and one
failing part does not stop the others. Before each part the remaining budget is checked: a part that would not fit
is skipped, saying so, and a subprocess is stopped when the budget runs out or it passes its part's own limit (so
that one hung part leaves time to the others). Results are written after every part to <out>/gpu_check.json and
<out>/gpu_check.md (a table): three files in all, with the log (the device machine returns at most 8).

--dry-run runs every part on CPU at tiny sizes, so the test suite exercises the whole script: kernels at N=256
d=32 V=2048; a 2-layer tiny Qwen2; 2 DPO steps, 1 GRPO step; Triton parity on two |z| > 100 cases in Triton's
interpreter (TRITON_INTERPRET=1), skipped with the reason when triton or numpy is missing; and, because alignctl
refuses distributed=fsdp without CUDA, the fsdp part runs the same command with distributed=ddp (one gloo process):
the same accelerate launch path.

    python scripts/gpu_check.py                       # on the GPU machine, ~5-8 minutes
    python scripts/gpu_check.py --dry-run --out /tmp/gc   # on CPU, a couple of minutes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGET_S = 480.0  # 8 minutes
# Dense (no sparsity) bf16 tensor-core peak by torch.cuda.get_device_name, first match wins (vendor data sheets).
PEAK_BF16_TFLOPS = [
    ("H200", 989.0, "H200 (SXM): 989 TFLOPS dense bf16"),
    ("H100 PCIe", 756.0, "H100 PCIe: 756 TFLOPS dense bf16"),
    ("H100 NVL", 835.0, "H100 NVL: 835 TFLOPS dense bf16"),
    ("H100", 989.0, "H100 SXM: 989 TFLOPS dense bf16"),
    ("A100", 312.0, "A100: 312 TFLOPS dense bf16"),
    ("L40S", 362.0, "L40S: 362 TFLOPS dense bf16"),
]
WORDS = (
    "the film was a quiet delight from start to finish dull plot and wooden acting made it hard to watch she said "
    "ending brilliant I agree nothing in this movie works score is loud jokes fall flat an honest warm story with "
    "great cast"
).split()


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU check and its CPU dry run."""

    kernel: tuple[int, int, int]  # N, d, V
    kernel_rounds: int
    kernel_impls: str
    parity_select: str | None  # pytest -k expression; None: every case
    qwen: dict  # Qwen2Config fields
    pairs: int
    prompts: int  # GRPO's prompts file (its pi_0 samples cover every train prompt before step 1)
    prompt_words: int
    completion_words: int
    max_length: int
    dpo_steps: int
    grpo_steps: int
    fsdp_steps: int
    batch_size: int
    grpo_batch_size: int
    max_new_tokens: int
    distributed: str  # the fsdp part's distributed option
    min_s: dict  # part -> seconds it needs at least (skipped below that)
    max_s: dict  # part -> seconds its subprocess may take at most (then stopped): a hung part leaves time to the rest


FULL = Sizes(
    kernel=(16384, 4096, 131072), kernel_rounds=3, kernel_impls="naive,chunked,triton,trl,gemm", parity_select=None,
    qwen=dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
              intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0,
              rms_norm_eps=1e-6, tie_word_embeddings=True),
    pairs=64, prompts=24, prompt_words=64, completion_words=160, max_length=256, dpo_steps=20, grpo_steps=5,
    fsdp_steps=5, batch_size=8, grpo_batch_size=16, max_new_tokens=64, distributed="fsdp",
    min_s=dict(triton_parity=60, kernels=60, model=20, dpo=45, grpo=45, fsdp=45),
    max_s=dict(triton_parity=150, kernels=120, model=120, dpo=120, grpo=120, fsdp=120),
)  # fmt: skip
DRY = Sizes(
    kernel=(256, 32, 2048), kernel_rounds=1, kernel_impls="naive,chunked,triton,trl,gemm",
    parity_select="test_beyond_the_float32_exp_range and (forward_kl-bfloat16 or js-float16)",
    qwen=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=128, vocab_size=1024, max_position_embeddings=256, tie_word_embeddings=True),
    pairs=8, prompts=8, prompt_words=6, completion_words=8, max_length=32, dpo_steps=2, grpo_steps=1, fsdp_steps=2,
    batch_size=2, grpo_batch_size=4, max_new_tokens=4, distributed="ddp",
    min_s=dict(triton_parity=5, kernels=5, model=1, dpo=5, grpo=5, fsdp=5),
    max_s=dict(triton_parity=240, kernels=240, model=240, dpo=240, grpo=240, fsdp=240),
)  # fmt: skip


class PartFailed(Exception):
    """A part that ran and failed: the message is its one-line reason."""


class PartSkipped(Exception):
    """A part that could not run here: the message says why."""


@dataclass
class Context:
    args: argparse.Namespace
    sizes: Sizes
    out: Path
    work: Path  # temp dir: model, data, run directories, caches
    env: dict[str, str]  # for every subprocess
    start: float = field(default_factory=time.monotonic)
    model_dir: Path | None = None
    peak: tuple[float | None, str] = (None, "")
    part: str = ""  # the part running now

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.start)


# --------------------------------------------------------------------------------------------------- helpers


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_logged(ctx: Context, name: str, cmd: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """cmd with its output appended to <out>/gpu_check.log, stopped (its whole process group) when the budget runs
    out or the part passes its own limit."""
    log = ctx.work / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cap = ctx.sizes.max_s[ctx.part]
    timeout = max(1.0, min(ctx.left() - 5.0, cap))  # 5 s kept for writing the results
    with log.open("w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env or ctx.env, stdout=f, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)  # fmt: skip
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the process group this call started (accelerate's ranks too)
            proc.wait()
            code = None
    output = log.read_text(errors="replace")
    with (ctx.out / "gpu_check.log").open("a") as whole:
        whole.write(f"\n===== {name} ({'stopped' if code is None else f'exit {code}'}) =====\n{output}")
    if code is None:
        why = f"this part's limit of {cap} s" if timeout >= cap else "the time budget ran out"
        raise PartFailed(f"stopped after {timeout:.0f} s: {why} (see gpu_check.log)")
    return subprocess.CompletedProcess(cmd, code, stdout=output)


def failure_reason(output: str, code: int) -> str:
    """The line that says why a subprocess failed: alignctl's one-line error, else the last exception line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("alignctl: error:") or re.match(r"^[A-Za-z_.]*(Error|Exception)\b", line):
            return one_line(f"exit {code}: {line}")
    return one_line(f"exit {code}: {lines[-1] if lines else 'no output'}")


def peak_tflops(args) -> tuple[float | None, str]:
    """(dense bf16 peak in TFLOPS, where it comes from) for this GPU; None on CPU or an unknown GPU."""
    if args.peak_tflops:
        return args.peak_tflops, f"{args.peak_tflops:g} TFLOPS dense bf16 (given with --peak-tflops)"
    import torch  # deferred: the module loads without torch

    if args.dry_run or not torch.cuda.is_available():
        return None, "no GPU peak on CPU (dry run): fraction of peak not computed"
    name = torch.cuda.get_device_name(0)
    for key, tflops, source in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops, f"{source} ({name})"
    return None, f"peak of {name!r} unknown: pass --peak-tflops"


def environment(ctx: Context) -> dict:
    import torch  # deferred, as above

    versions = {}
    for module in ("torch", "triton", "transformers", "trl", "accelerate"):
        try:
            versions[module] = __import__(module).__version__
        except Exception as e:  # noqa: BLE001 - a missing or broken library is itself a finding
            versions[module] = f"unavailable ({type(e).__name__})"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not ctx.args.dry_run else None
    return {"device": gpu or "cpu", "cuda": torch.version.cuda, "versions": versions}


# --------------------------------------------------------------------------------------------------- the parts


def triton_parity(ctx: Context) -> dict:
    """tests/kernels/triton_cases.py through pytest, on the GPU (dry run: two cases in Triton's interpreter)."""
    import importlib.util

    for module in ("triton", "numpy"):
        if importlib.util.find_spec(module) is None:
            raise PartSkipped(f"{module} is not installed: impl='triton' cannot run (pip install triton numpy)")
    env = dict(ctx.env)
    if ctx.args.dry_run:
        env["TRITON_INTERPRET"] = "1"
    junit = ctx.work / "triton_parity.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/kernels/triton_cases.py",
           f"--junitxml={junit}"]  # fmt: skip
    if ctx.sizes.parity_select:
        cmd += ["-k", ctx.sizes.parity_select]
    proc = run_logged(ctx, "triton_parity", cmd, env)
    if not junit.is_file():
        raise PartFailed(failure_reason(proc.stdout, proc.returncode))
    cases = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        message = next((c.get("message", "") for c in case if c.tag in ("failure", "error", "skipped")), "")
        cases.append({"name": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0.0)),
                      "message": one_line(message, 200)})  # fmt: skip
    count = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failure", "error", "skipped")}
    device = "cpu (TRITON_INTERPRET=1)" if ctx.args.dry_run else "cuda"
    data = {"cases": cases, "passed": count["passed"], "failed": count["failure"] + count["error"],
            "skipped": count["skipped"], "device": device}  # fmt: skip
    summary = f"{data['passed']} passed, {data['failed']} failed, {data['skipped']} skipped ({data['device']})"
    if data["failed"]:
        bad = [c["name"] for c in cases if c["outcome"] in ("failure", "error")]
        raise PartFailed(f"{summary}: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}", data)
    if not data["passed"]:
        reason = cases[0]["message"] if cases else failure_reason(proc.stdout, proc.returncode)
        raise PartSkipped(f"no Triton case ran: {reason}", data)
    return {"details": summary, **data}


def kernels(ctx: Context) -> dict:
    """scripts/bench_kernels.py at the check's size: per impl seconds, peak memory, TFLOP/s, fraction of peak."""
    n, d, v = ctx.sizes.kernel
    result = ctx.work / "kernels.json"
    cmd = [sys.executable, "scripts/bench_kernels.py", "--n", str(n), "--d", str(d), "--vocab", str(v), "--dtype",
           "bfloat16", "--divergence", "forward_kl", "--impls", ctx.sizes.kernel_impls, "--rounds",
           str(ctx.sizes.kernel_rounds), "--warmup", "1", "--device", "cpu" if ctx.args.dry_run else "cuda",
           "--threads", "1", "--keep-going", "--out", str(result)]  # fmt: skip
    proc = run_logged(ctx, "kernels", cmd)
    if proc.returncode != 0 or not result.is_file():
        raise PartFailed(failure_reason(proc.stdout, proc.returncode))
    skipped = dict(re.findall(r"^\[skip\] (\w+): (.*)$", proc.stdout, flags=re.MULTILINE))
    measured = {r["impl"]: r for r in json.loads(result.read_text())}
    flops = 8.0 * n * d * v  # policy + reference projections, the policy's two gradient products
    peak, _ = ctx.peak
    rows = []
    for impl in ctx.sizes.kernel_impls.split(","):
        r = measured.get(impl)
        if r is None:  # "[skip] impl: out of memory (...)" / "not applicable here" / "failed, <error> (...)"
            reason = skipped.get(impl, "not reported")
            rows.append({"impl": impl, "status": "failed" if reason.startswith("failed") else "skipped",
                         "reason": one_line(reason, 200)})  # fmt: skip
            continue
        tflops = flops / r["seconds"] / 1e12
        rows.append({
            "impl": impl, "status": "ok", "seconds": r["seconds"], "min_seconds": r["min_seconds"],
            "peak_mib": r["peak_bytes"] / 2**20, "tflops": tflops,
            "fraction_of_peak": tflops / peak if peak else None,
        })  # fmt: skip
    ran = [r["impl"] for r in rows if r["status"] == "ok"]
    details = f"N={n} d={d} V={v} bfloat16 forward_kl; measured: {', '.join(ran) or 'none'}"
    details += "".join(f"; {r['impl']} {r['status']}: {r['reason']}" for r in rows if r["status"] != "ok")
    data = {"N": n, "d": d, "V": v, "dtype": "bfloat16", "divergence": "forward_kl", "flops_per_call": flops,
            "rows": rows}  # fmt: skip
    if "chunked" not in ran or any(r["status"] == "failed" for r in rows):  # out of memory is a finding, not a failure
        raise PartFailed(one_line(details), data)
    return {"details": one_line(details, 400), **data}


def _texts(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def model(ctx: Context) -> dict:
    """A random Qwen2 of the check's shape in bfloat16 and a small BPE tokenizer, saved as a hub-format dir; the
    data files the training parts read."""
    import torch  # deferred: heavy
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, set_seed

    from alignctl.data.tasks import tiny_lm
    from alignctl.models import files

    path = ctx.work / "qwen2"
    rng = random.Random(0)
    corpus = [_texts(rng, 24) for _ in range(64)]
    trained = tiny_lm.train_bpe_tokenizer(corpus, vocab_size=320, model_max_length=1024)
    with files.quiet():  # transformers 5 picks Qwen2Tokenizer from config.json, which adds <|endoftext|>: reload
        trained.save_pretrained(path)
        Qwen2Config(**ctx.sizes.qwen).save_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    config = Qwen2Config(**ctx.sizes.qwen, **ids)
    set_seed(0)
    net = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    for key, value in ids.items():
        setattr(net.generation_config, key, value)
    files.save_hf_dir(net, tokenizer, path)
    params = sum(p.numel() for p in net.parameters())
    del net

    s = ctx.sizes
    pairs = [{"prompt": _texts(rng, s.prompt_words), "chosen": " " + _texts(rng, s.completion_words),
              "rejected": " " + _texts(rng, s.completion_words)} for _ in range(s.pairs)]  # fmt: skip
    (ctx.work / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    prompts = [{"prompt": p["prompt"]} for p in pairs[: s.prompts]]
    (ctx.work / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    ctx.model_dir = path
    shape = ", ".join(f"{k}={v}" for k, v in s.qwen.items() if k in ("hidden_size", "num_hidden_layers", "vocab_size"))
    return {"details": f"Qwen2 {params / 1e6:.1f}M parameters ({shape}), bfloat16, tokenizer {len(tokenizer)} tokens",
            "parameters": params, "tokenizer_tokens": len(tokenizer), "config": s.qwen}  # fmt: skip


def _train(ctx: Context, name: str, overrides: list[str], steps: int) -> dict:
    """`alignctl train` on the check's model; ok when it finished with `steps` logged, finite losses."""
    if ctx.model_dir is None:
        raise PartSkipped("no model: the model part did not finish")
    run_dir = ctx.work / "runs" / name
    s = ctx.sizes
    cmd = [sys.executable, "-m", "alignctl.cli.main", "train", "model=hf", f"model.path={ctx.model_dir}",
           "model.dtype=bfloat16", f"train.max_steps={steps}", "train.logging_steps=1", "train.save_steps=0",
           "train.warmup_steps=0", f"train.max_length={s.max_length}", "eval.enabled=false", "tracking=none",
           *overrides, f"hydra.run.dir={run_dir}"]  # fmt: skip
    started = time.monotonic()
    proc = run_logged(ctx, name, cmd)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise PartFailed(failure_reason(proc.stdout, proc.returncode))
    fallback = next((line for line in proc.stdout.splitlines() if "using model.kernel=naive" in line), None)
    if "model.kernel=fused" in overrides and fallback:  # resolve_kernel found the LM head unfit for the fused path
        raise PartFailed(one_line(fallback))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in rows if "step" in r and "loss" in r]
    summary = next((r for r in rows if r.get("summary")), {})
    status = json.loads((run_dir / "run.json").read_text()).get("status")
    runtime = summary.get("train_runtime")
    data = {"wall_s": wall, "steps": len(losses), "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None, "train_runtime_s": runtime,
            "s_per_step": runtime / len(losses) if runtime and losses else None, "run_status": status,
            "overrides": overrides}  # fmt: skip
    finite = all(isinstance(x, (int, float)) and math.isfinite(x) for x in losses)
    if status != "finished" or len(losses) != steps or not finite:
        raise PartFailed(f"run.json status {status}, {len(losses)} of {steps} steps logged, losses finite: {finite}",
                         data)  # fmt: skip
    details = (f"{steps} step{'s' if steps != 1 else ''}, loss {data['first_loss']:.4f} -> {data['last_loss']:.4f}, "
               f"{data['s_per_step']:.3f} s/step (train_runtime {runtime:.1f} s of {wall:.1f} s wall)")  # fmt: skip
    return {"details": details, **data}


def dpo(ctx: Context) -> dict:
    s = ctx.sizes
    return _train(ctx, "dpo", ["objective=dpo", "model.kernel=fused", "dataset=preference_file",
                               f"dataset.path={ctx.work / 'pairs.jsonl'}", "dataset.test_size=2",
                               f"train.batch_size={s.batch_size}"], s.dpo_steps)  # fmt: skip


def grpo(ctx: Context) -> dict:
    s = ctx.sizes
    return _train(ctx, "grpo", ["objective=grpo", "model.kernel=fused", "reward=sentiment", "dataset=prompt_file",
                                f"dataset.path={ctx.work / 'prompts.jsonl'}", "dataset.test_size=2",
                                f"dataset.max_new_tokens={s.max_new_tokens}", f"train.batch_size={s.grpo_batch_size}",
                                "train.num_generations=4"], s.grpo_steps)  # fmt: skip


def fsdp(ctx: Context) -> dict:
    s = ctx.sizes
    result = _train(ctx, "fsdp", [f"distributed={s.distributed}", "distributed.num_processes=1", "objective=dpo",
                                  "model.kernel=naive", "dataset=preference_file",
                                  f"dataset.path={ctx.work / 'pairs.jsonl'}", "dataset.test_size=2",
                                  f"train.batch_size={s.batch_size}"], s.fsdp_steps)  # fmt: skip
    if s.distributed != "fsdp":
        result["details"] = f"distributed={s.distributed} in place of fsdp (needs CUDA): " + result["details"]
    return result


PARTS: list[tuple[str, Callable[[Context], dict]]] = [
    ("triton_parity", triton_parity),
    ("kernels", kernels),
    ("model", model),
    ("dpo", dpo),
    ("grpo", grpo),
    ("fsdp", fsdp),
]


# --------------------------------------------------------------------------------------------------- the driver


def run_part(ctx: Context, name: str, fn: Callable[[Context], dict]) -> dict:
    need, left = ctx.sizes.min_s[name], ctx.left()
    if left < need:
        reason = f"time budget: {max(left, 0):.0f} s of {ctx.args.budget:.0f} s left, this part needs ~{need} s"
        return {"status": "skipped", "seconds": 0.0, "reason": reason}
    started, ctx.part = time.monotonic(), name
    try:
        result = {"status": "ok", "reason": None, **fn(ctx)}
    except (PartFailed, PartSkipped) as e:
        status = "failed" if isinstance(e, PartFailed) else "skipped"
        result = {"status": status, "reason": one_line(str(e.args[0])), **(e.args[1] if len(e.args) > 1 else {})}
    except Exception as e:  # noqa: BLE001 - one part's crash must not hide the others
        result = {"status": "failed", "reason": one_line(f"{type(e).__name__}: {e}")}
    result["seconds"] = time.monotonic() - started
    return result


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown(report: dict) -> str:
    lines = [
        f"# GPU check{' (dry run, CPU)' if report['dry_run'] else ''}",
        "",
        (f"device: {report['device']}; torch {report['versions'].get('torch')}, triton "
         f"{report['versions'].get('triton')}, transformers {report['versions'].get('transformers')}, trl "
         f"{report['versions'].get('trl')}; budget {report['budget_s']:.0f} s, total {report['total_s']:.1f} s"),
        f"peak used: {report['peak_source']}",
        "",
        "| part | status | seconds | details |",
        "|---|---|---|---|",
    ]
    for name, part in report["parts"].items():
        text = part.get("details") if part["status"] == "ok" else part.get("reason")
        lines.append(f"| {name} | {part['status']} | {part['seconds']:.1f} | {(text or '').replace('|', '/')} |")
    rows = report["parts"].get("kernels", {}).get("rows")
    if rows:
        k = report["parts"]["kernels"]
        lines += [
            "",
            (f"Kernels: N={k['N']} d={k['d']} V={k['V']} {k['dtype']} {k['divergence']}, forward + backward, "
             f"{k['flops_per_call'] / 1e12:.3g} TFLOP per call (8 N d V)"),
            "",
            "| impl | status | seconds (median) | min | peak MiB | TFLOP/s | fraction of peak |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if r["status"] != "ok":
                lines.append(f"| {r['impl']} | {r['status']}: {r['reason'].replace('|', '/')} | - | - | - | - | - |")
                continue
            lines.append(f"| {r['impl']} | ok | {r['seconds']:.4f} | {r['min_seconds']:.4f} | {r['peak_mib']:.1f} | "
                         f"{r['tflops']:.3f} | {_cell(r['fraction_of_peak'], '.3f')} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write(ctx: Context, report: dict) -> None:
    report["total_s"] = time.monotonic() - ctx.start
    (ctx.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (ctx.out / "gpu_check.md").write_text(markdown(report))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("gpu_check"), help="results folder (default gpu_check/)")
    p.add_argument("--dry-run", action="store_true", help="every part on CPU at tiny sizes")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all parts (default 480)")
    p.add_argument("--gpu", default="0", help="CUDA device index, unless CUDA_VISIBLE_DEVICES is set")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak, for a GPU not in the table")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.log").write_text("")  # a previous run's goes
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # alignctl need not be installed
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": path}  # fmt: skip
    if args.dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU even on a GPU machine
    else:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", args.gpu)  # before torch initialises CUDA here
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"].split(",")[0]  # one GPU
        import torch  # deferred: --help and bad flags need no torch

        if not torch.cuda.is_available():
            sys.exit("gpu_check: error: no CUDA GPU here; run with --dry-run for the CPU rehearsal")
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        ctx = Context(args, DRY if args.dry_run else FULL, args.out.resolve(), Path(tmp), env)
        env["ALIGNCTL_CACHE_DIR"] = str(ctx.work / "cache")
        ctx.peak = peak_tflops(args)
        report = {"dry_run": args.dry_run, "budget_s": args.budget, **environment(ctx), "peak_bf16_tflops": ctx.peak[0],
                  "peak_source": ctx.peak[1], "parts": {}}  # fmt: skip
        for name, fn in PARTS:
            print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
            report["parts"][name] = part = run_part(ctx, name, fn)
            said = part.get("details") if part["status"] == "ok" else part["reason"]
            print(f"gpu_check: {name}: {part['status']} ({part['seconds']:.1f} s) {said}", file=sys.stderr, flush=True)
            write(ctx, report)
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
