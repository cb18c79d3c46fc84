#!/usr/bin/env python
"""Benchmark the fused log-prob/divergence kernels, forward + backward, side by side in one process.

Rows (each timed as forward + backward, the median of interleaved rounds; peak extra memory measured separately):

* naive:   alignctl.kernels impl="reference" (materialized [N, V] logits, autograd through them);
* chunked: alignctl.kernels impl="chunked";
* triton:  alignctl.kernels impl="triton" (CUDA only);
* trl:     TRL's ChunkedLogProbFunction for the policy log-probs (+ entropy) and, under no_grad, for the reference
           log-probs, plus ChunkedDivergenceFunction for the divergence (beta=0 is KL(teacher || student), our
           forward_kl; beta=1 reverse_kl; beta=0.5 is half our js, so it is doubled; no alpha counterpart);
* gemm:    the GEMMs any implementation must do, timed alone: the policy and reference projections [N,d]x[d,V] and the
           policy's two backward products (dL/dh = G W, dL/dW = G^T h), with G a precomputed [N, V] tensor;
* gemm_flat: the GEMMs a path that never holds [N, V] must do: the `gemm` row plus the recomputation of both
           projections in the backward (six products for a divergence whose gradient needs the reference tile; four
           with --divergence none), as full-size GEMMs with intra-op threads.

Every row returns the policy's and the reference's target log-probs, the divergence and the policy entropy; with
--divergence none, the policy's log-probs and entropy only (no reference, no reference projection in `gemm`).

The loss is sum(u * logprobs) + sum(v * divergence) with fixed random u, v (entropy is returned but not
differentiated, as in training where it is logged). Peak memory is the peak of the running total of allocations
minus frees during one forward + backward: the torch profiler's memory events (profile_memory=True) on CPU, the
allocator's max_memory_allocated on CUDA. Inputs, and the gradients' first allocation, count the same for every row.
The profiler sees only the calling thread's allocations: the chunked path allocates every buffer there, and its
worker threads only per-token vectors (tests/kernels/test_chunked_workers.py checks the tile loop allocates no tile).
The `cpu s` column is this process's CPU time per call (all threads): the work done, which other processes change
much less than the wall time; `x flat cpu` compares it with gemm_flat's.

    python scripts/bench_kernels.py                      # N=4096 d=256 V=32768 float32 forward_kl, 2 threads
    python scripts/bench_kernels.py --quick              # small sizes, a few seconds
    python scripts/bench_kernels.py --divergence none --dtype bfloat16 --impls naive,chunked,gemm
    python scripts/bench_kernels.py --load both          # timed idle, then with a busy process holding one core
    python scripts/bench_kernels.py --case llama3        # N=1024 d=2048 V=128256 bfloat16 (Llama-3 vocabulary)

--background-load (= --load background) starts one single-threaded busy process (a Python `while True: pass`) for the
duration of the timed rounds and stops it afterwards, the condition of a shared node where a neighbour holds a core.

Writes bench/kernels.json (a list of rows: impl, N, d, V, divergence, dtype, device, threads, load, seconds (median),
min_seconds, cpu_seconds, peak_bytes; one row per impl and load phase). The chunked targets of the default problem
are checked and printed at the end of each phase (at any size with --check-targets: tests/scripts/ smoke-tests the
lines). A row whose warm-up call runs out of memory (naive's [N, V] logits on a GPU) is dropped with a [skip] line;
with --keep-going (scripts/gpu_check.py) so is one whose warm-up call raises any other error.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alignctl.kernels import token_logprobs_and_divergence  # noqa: E402

IMPLS = ("naive", "chunked", "triton", "trl", "gemm", "gemm_flat")
# --case presets: the default problem, and a real vocabulary (Llama-3's 128256 tokens, hidden size 2048, bf16 inputs)
CASES = {
    "default": dict(n=4096, d=256, vocab=32768, dtype="float32", rounds=5, warmup=1),
    "llama3": dict(n=1024, d=2048, vocab=128256, dtype="bfloat16", rounds=2, warmup=0,
                   impls="naive,chunked,trl,gemm_flat"),
}  # fmt: skip
# Targets of the chunked row on the default problem (issue 14): time vs gemm_flat idle and under load, vs naive
# under load, peak memory vs naive.
IDLE_GEMM_FLAT, LOADED_GEMM_FLAT, LOADED_NAIVE, MEMORY_NAIVE = 1.1, 2.0, 0.5, 0.02
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TRL_BETA = {"forward_kl": 0.0, "reverse_kl": 1.0, "js": 0.5}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", choices=sorted(CASES), default="default", help="preset sizes (flags below override)")
    p.add_argument("--n", type=int, default=None, help="tokens N")
    p.add_argument("--d", type=int, default=None, help="hidden size d")
    p.add_argument("--vocab", type=int, default=None, help="vocabulary size V")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None)
    p.add_argument("--divergence", default="forward_kl", help="none, reverse_kl, forward_kl, js or alpha")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--impls", default=None, help="comma-separated subset of " + ",".join(IMPLS) + " (default: all)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (median reported)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per row before the rounds")
    p.add_argument("--load", choices=("idle", "background", "both"), default="idle",
                   help="time as is, with one busy process holding a core, or both in turn")
    p.add_argument("--background-load", dest="load", action="store_const", const="background",
                   help="same as --load background")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--row-chunk", type=int, default=None, help="row tile of chunked/triton (default: tuned)")
    p.add_argument("--vocab-chunk", type=int, default=None, help="vocabulary tile of chunked/triton")
    p.add_argument("--trl-chunk", type=int, default=4096, help="vocabulary chunk_size for TRL's log-prob kernel")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--keep-going", action="store_true",
                   help="drop a row whose warm-up call raises (any error, not only out of memory) instead of stopping")
    p.add_argument("--check-targets", action="store_true",
                   help="check and print the chunked targets at any size (default: on the default problem only)")
    p.add_argument("--quick", action="store_true", help="small sizes (N=512 d=64 V=4096) and 3 rounds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "kernels.json")
    args = p.parse_args(argv)
    preset = dict(CASES[args.case])
    if args.quick:
        preset.update(n=512, d=64, vocab=4096, rounds=3)
    for key in ("n", "d", "vocab", "dtype", "rounds", "warmup"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    args.impls = [x.strip() for x in (args.impls or preset.get("impls", ",".join(IMPLS))).split(",") if x.strip()]
    unknown = set(args.impls) - set(IMPLS)
    if unknown:
        p.error(f"unknown impls: {', '.join(sorted(unknown))}")
    return args


def make_inputs(args) -> dict:
    g = torch.Generator().manual_seed(args.seed)
    dtype, device = DTYPES[args.dtype], torch.device(args.device)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    # Logit scale ~ a few units: hidden rows of norm ~sqrt(d) times weights ~ 1/sqrt(d) * 2
    w_scale = 2.0 / args.d**0.5
    return {
        "hidden": randn(args.n, args.d).requires_grad_(),
        "weight": randn(args.vocab, args.d, scale=w_scale).requires_grad_(),
        "ref_hidden": randn(args.n, args.d),
        "ref_weight": randn(args.vocab, args.d, scale=w_scale),
        "targets": torch.randint(0, args.vocab, (args.n,), generator=g).to(device),
        "u": torch.randn(args.n, generator=g).to(device),
        "v": torch.randn(args.n, generator=g).to(device),
    }


def make_runner(impl: str, args, x: dict):
    """A function doing one forward + backward (or the GEMMs alone), or None when `impl` does not apply."""
    div = None if args.divergence == "none" else args.divergence
    device = torch.device(args.device)

    if impl in ("naive", "chunked", "triton"):
        if impl == "triton" and device.type != "cuda":
            return None
        name = "reference" if impl == "naive" else impl

        def run():
            ref_h, ref_w = (x["ref_hidden"], x["ref_weight"]) if div is not None else (None, None)
            out = token_logprobs_and_divergence(
                x["hidden"], x["weight"], x["targets"], ref_h, ref_w, divergence=div,
                alpha=args.alpha, impl=name, row_chunk=args.row_chunk, vocab_chunk=args.vocab_chunk,
            )  # fmt: skip
            loss = (out.logprobs * x["u"]).sum()
            if out.divergence is not None:
                loss = loss + (out.divergence * x["v"]).sum()
            loss.backward()

        return run

    if impl == "trl":
        if div is not None and div not in TRL_BETA:
            return None
        try:
            from trl.kernels.chunked_divergence import ChunkedDivergenceFunction
            from trl.kernels.chunked_logprob import ChunkedLogProbFunction
        except ImportError:
            return None

        def run():
            logprobs, _entropy, *_ = ChunkedLogProbFunction.apply(
                x["hidden"], x["weight"], None, x["targets"], 1.0, args.trl_chunk, None, 1.0, ("entropy",)
            )
            loss = (logprobs * x["u"]).sum()
            if div is not None:
                with torch.no_grad():  # reference log-probs, which the other rows return too
                    ChunkedLogProbFunction.apply(
                        x["ref_hidden"], x["ref_weight"], None, x["targets"], 1.0, args.trl_chunk, None, 1.0, ()
                    )
                d, _ = ChunkedDivergenceFunction.apply(
                    x["hidden"], x["weight"], None, x["ref_hidden"], x["ref_weight"], None, TRL_BETA[div], 1.0
                )
                if div == "js":
                    d = 2.0 * d  # TRL's JSD(beta=0.5) is half of KL(p||m) + KL(q||m)
                loss = loss + (d * x["v"]).sum()
            loss.backward()

        return run

    if impl in ("gemm", "gemm_flat"):
        h, w = x["hidden"].detach(), x["weight"].detach()
        hr, wr = x["ref_hidden"], x["ref_weight"]
        grad_logits = torch.randn(args.n, args.vocab, device=device).to(h.dtype) * 1e-3
        passes = 1 if impl == "gemm" else 2  # gemm_flat: the forward projections and their backward recomputation

        def run():
            with torch.no_grad():
                for _ in range(passes):
                    h @ w.T  # policy projection
                    if div is not None:
                        hr @ wr.T  # reference projection
                grad_logits @ w  # dL/dh
                grad_logits.T @ h  # dL/dW

        return run
    raise ValueError(impl)


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


class OtherLoad:
    """Share of the machine's CPU time used by other processes (a --background-load process included) while the
    block runs."""

    def __enter__(self):
        self.start, self.cpu = _cpu_jiffies(), time.process_time()
        return self

    def __exit__(self, *exc):
        end, ours = _cpu_jiffies(), time.process_time() - self.cpu
        self.share = None
        if self.start and end and end[1] > self.start[1]:
            ticks = os.sysconf("SC_CLK_TCK")
            busy = (end[0] - self.start[0]) / ticks
            total = (end[1] - self.start[1]) / ticks
            self.share = max(0.0, (busy - ours) / total)


def zero_grads(x: dict) -> None:
    x["hidden"].grad = None
    x["weight"].grad = None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_extra_bytes(fn, device: torch.device) -> int:
    """Peak of (allocated - freed) bytes during one call, as the allocator or the profiler sees it."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    return cpu_memory_window(fn)[0]


def cpu_memory_window(fn) -> tuple[int, int]:
    """(peak, net) bytes of CPU allocations minus frees while fn() runs, from the torch profiler's memory events
    summed in time order; net is what fn() left allocated."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    )
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return int(peak), int(running)


class BackgroundLoad:
    """One single-threaded busy process while the block runs: a neighbour holding one core of a shared node."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)  # running before the first timed call
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def time_rounds(runners: dict, x: dict, args, device: torch.device) -> tuple[dict, dict]:
    """({impl: [wall seconds per round]}, {impl: [CPU seconds of this process per round]}), rounds interleaved so
    that load changes hit every row alike. CPU seconds (all threads) are the work done, which other processes
    change much less than the wall time."""
    times, cpu = {impl: [] for impl in runners}, {impl: [] for impl in runners}
    with OtherLoad() as load:
        for _ in range(args.rounds):
            for impl, fn in runners.items():
                zero_grads(x)
                synchronize(device)
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                synchronize(device)
                times[impl].append(time.perf_counter() - t0)
                cpu[impl].append(time.process_time() - c0)
    if load.share is not None:
        print(f"other processes used {100 * load.share:.0f}% of the machine's CPU time during the timed rounds")
    return times, cpu


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    x = make_inputs(args)
    runners = {}
    for impl in args.impls:
        fn = make_runner(impl, args, x)
        if fn is None:
            why = "TRL has no counterpart" if impl == "trl" else "not applicable here"
            print(f"[skip] {impl}: {why} ({args.divergence} on {device.type})")
        else:
            runners[impl] = fn

    for _ in range(args.warmup):  # allocator, first-call costs; a row that runs out of memory is dropped
        for impl, fn in list(runners.items()):
            zero_grads(x)
            try:
                fn()
                synchronize(device)
            except Exception as e:
                if not (isinstance(e, torch.OutOfMemoryError) or args.keep_going):
                    raise
                del runners[impl]
                zero_grads(x)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                what = "out of memory" if isinstance(e, torch.OutOfMemoryError) else f"failed, {type(e).__name__}"
                print(f"[skip] {impl}: {what} ({(str(e).splitlines() or [''])[0][:160]})")
    phases = {}
    if args.load in ("idle", "both"):
        print("timing: as is (no load added)")
        phases["idle"] = time_rounds(runners, x, args, device)
    if args.load in ("background", "both"):
        print("timing: with one single-threaded busy process (--background-load)")
        with BackgroundLoad():
            phases["background"] = time_rounds(runners, x, args, device)

    peaks = {}
    for impl, fn in runners.items():
        zero_grads(x)
        peaks[impl] = -1 if args.no_memory else peak_extra_bytes(fn, device)
    rows = [
        {
            "impl": impl,
            "N": args.n,
            "d": args.d,
            "V": args.vocab,
            "divergence": args.divergence,
            "dtype": args.dtype,
            "device": str(device),
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "load": phase,
            "seconds": statistics.median(times[impl]),
            "min_seconds": min(times[impl]),
            "cpu_seconds": statistics.median(cpu[impl]),
            "peak_bytes": peaks[impl],
        }
        for phase, (times, cpu) in phases.items()
        for impl in runners
    ]

    for phase, (times, _) in phases.items():
        report([r for r in rows if r["load"] == phase], times, args, phase)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")
    return rows


def _ratio(a: float, b: dict | None, key: str = "seconds", digits: int = 2) -> str:
    return f"{a / b[key]:.{digits}f}" if b is not None and b[key] > 0 else "-"


def report(rows: list[dict], times: dict, args, phase: str) -> None:
    by = {r["impl"]: r for r in rows}
    naive, gemm, flat = by.get("naive"), by.get("gemm"), by.get("gemm_flat")
    print(
        f"\nN={args.n} d={args.d} V={args.vocab} {args.dtype} divergence={args.divergence} device={args.device}"
        f" threads={torch.get_num_threads() if args.device == 'cpu' else '-'} rounds={args.rounds} load={phase}"
    )
    print(f"{'impl':9s} {'seconds':>9s} {'min':>8s} {'max':>8s} {'cpu s':>8s} {'peak MiB':>10s} {'x naive t':>10s} "
          f"{'x gemm t':>9s} {'x flat t':>9s} {'x flat cpu':>11s} {'x naive mem':>12s}")  # fmt: skip
    for r in rows:
        t = times[r["impl"]]
        mib = r["peak_bytes"] / 2**20 if r["peak_bytes"] >= 0 else float("nan")
        rm = _ratio(r["peak_bytes"], naive, "peak_bytes", 3) if r["peak_bytes"] >= 0 else "-"
        print(f"{r['impl']:9s} {r['seconds']:9.3f} {min(t):8.3f} {max(t):8.3f} {r['cpu_seconds']:8.2f} {mib:10.1f} "
              f"{_ratio(r['seconds'], naive):>10s} {_ratio(r['seconds'], gemm):>9s} {_ratio(r['seconds'], flat):>9s} "
              f"{_ratio(r['cpu_seconds'], flat, 'cpu_seconds'):>11s} {rm:>12s}")  # fmt: skip
    chunked = by.get("chunked")
    default_size = (args.n, args.d, args.vocab, args.dtype, args.divergence) == (4096, 256, 32768, "float32", "forward_kl")
    if not (chunked and naive and flat and (default_size or args.check_targets)):  # set for the default problem
        return
    checks = []
    if naive["peak_bytes"] > 0 and chunked["peak_bytes"] >= 0:
        checks.append((f"peak <= {MEMORY_NAIVE} x naive", chunked["peak_bytes"] / naive["peak_bytes"], MEMORY_NAIVE))
    if phase == "idle":
        checks.append((f"time <= {IDLE_GEMM_FLAT} x gemm_flat", chunked["seconds"] / flat["seconds"], IDLE_GEMM_FLAT))
    else:
        checks.append((f"time <= {LOADED_GEMM_FLAT} x gemm_flat (same load)", chunked["seconds"] / flat["seconds"],
                       LOADED_GEMM_FLAT))  # fmt: skip
        checks.append((f"time <= {LOADED_NAIVE} x naive (same load)", chunked["seconds"] / naive["seconds"],
                       LOADED_NAIVE))  # fmt: skip
    print(f"targets (chunked, {phase}): " + "; ".join(
        f"{name}: {value:.3f} {'met' if value <= bound else 'NOT met'}" for name, value, bound in checks
    ))  # fmt: skip
    if phase == "idle":
        print("(idle targets assume an otherwise idle machine: see 'other processes used' above)")


if __name__ == "__main__":
    main()
