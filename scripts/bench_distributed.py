"""The same run on 1 process and on 2 (distributed=ddp, gloo on this CPU), side by side: per-step loss and final
weight differences, eval differences, and the wall time of each, for dpo, tdpo2 and grpo on the embedded
toy_sentiment task at its default sizes (model, data), 40 steps.

The task's artifacts are built once before timing. Each arm is an `alignctl train` subprocess on one torch thread
per process (train.num_threads=1): on 2 cores the 2-process run may be faster, but what it shows is that it trains
the same model. Target: losses equal to float32 tolerance (rel 1e-5) and weights within 1e-4.
Usage: python scripts/bench_distributed.py [extra alignctl overrides...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

COMMON = ["train.max_steps=40", "train.logging_steps=1", "train.num_threads=1", "tracking=none", "eval.num_prompts=16"]
RUNS = {
    "dpo": ["objective=dpo"],
    "tdpo2": ["objective=tdpo2"],
    "grpo": ["objective=grpo", "divergence=reverse_kl", "train.batch_size=8", "train.num_generations=4"],
}
ALIGNCTL = [sys.executable, "-m", "alignctl.cli.main", "train"]


def alignctl(args: list[str], cache: Path, run_dir: Path) -> float:
    env = {**os.environ, "ALIGNCTL_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    done = subprocess.run([*ALIGNCTL, *args, f"hydra.run.dir={run_dir}"], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"alignctl train {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def differences(one: Path, two: Path) -> dict[str, float]:
    def steps(d: Path) -> list[dict]:
        return [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if '"step"' in line]

    a, b = steps(one), steps(two)
    if [r["step"] for r in a] != [r["step"] for r in b]:
        sys.exit(f"{one} and {two} logged different steps")
    wa, wb = (load_file(str(d / "model" / "model.safetensors")) for d in (one, two))
    ea, eb = (json.loads((d / "eval.json").read_text()) for d in (one, two))
    numbers = [k for k, v in ea.items() if isinstance(v, float)]
    return {
        "max |loss diff|": max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b)),
        "max |loss|": max(abs(x["loss"]) for x in a),
        "max |weight diff|": max((wa[k] - wb[k]).abs().max().item() for k in wa),
        "max |eval diff|": max(abs(ea[k] - eb[k]) for k in numbers),
    }


def main() -> None:
    extra = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, args in RUNS.items():  # build the task's artifacts (and reference log-probs) outside the timings
            alignctl([*args, *COMMON, "train.max_steps=1", "eval.enabled=false", *extra], root / "cache",
                     root / f"build-{name}")  # fmt: skip
        print(f"{'run':<8}{'1 proc s':>10}{'2 proc s':>10}{'max |loss diff|':>17}{'max |loss|':>12}"
              f"{'max |w diff|':>14}{'max |eval diff|':>17}")  # fmt: skip
        for name, args in RUNS.items():
            one, two = root / f"{name}-1", root / f"{name}-2"
            t1 = alignctl([*args, *COMMON, *extra], root / "cache", one)
            t2 = alignctl([*args, *COMMON, *extra, "distributed=ddp", "distributed.num_processes=2"], root / "cache", two)
            d = differences(one, two)
            ok = d["max |loss diff|"] <= 1e-5 * max(d["max |loss|"], 1.0) and d["max |weight diff|"] <= 1e-4
            print(f"{name:<8}{t1:>10.1f}{t2:>10.1f}{d['max |loss diff|']:>17.2e}{d['max |loss|']:>12.4f}"
                  f"{d['max |weight diff|']:>14.2e}{d['max |eval diff|']:>17.2e}  {'same' if ok else 'DIFFERENT'}")  # fmt: skip


if __name__ == "__main__":
    main()
