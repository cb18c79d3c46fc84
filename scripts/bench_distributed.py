"""The same run on 1 process and on 2 (distributed=ddp, gloo on this CPU), side by side: per-step loss and final
weight differences, eval differences, and the wall time of each, for dpo, tdpo2 and grpo on the embedded
toy_sentiment task at its default sizes (model, data), 40 steps.

The task's artifacts are built once before timing. Each arm is an `alignctl train` subprocess on one torch thread
per process (train.num_threads=1): on 2 cores the 2-process run may be faster, but what it shows is that it trains
the same model. Target: losses equal to float32 tolerance (rel 1e-5) and weights within 1e-4.
Usage: python scripts/bench_distributed.py [--runs dpo,tdpo2,grpo] [--steps 40] [--processes 2] [--out FILE]
                                          [extra alignctl overrides...]
An extra override of a key the script sets replaces it (the smoke test in tests/scripts/ runs --runs dpo --steps 2
with tiny task sizes). Writes the table's numbers to --out (default bench/distributed.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["train.logging_steps=1", "train.num_threads=1", "tracking=none", "eval.num_prompts=16"]
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


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of " + ",".join(RUNS))
    p.add_argument("--steps", type=int, default=40, help="train.max_steps of every run")
    p.add_argument("--processes", type=int, default=2, help="distributed.num_processes of the ddp arm")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "distributed.json")
    args, extra = p.parse_known_args(argv)
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = set(args.runs) - set(RUNS)
    if unknown:
        p.error(f"unknown runs: {', '.join(sorted(unknown))}")
    return args, extra


def merged(*groups: list[str]) -> list[str]:
    """Overrides in order, a later value of a key replacing an earlier one (in the earlier one's place)."""
    out: dict[str, str] = {}
    for group in groups:
        for o in group:
            out[o.split("=", 1)[0]] = o
    return list(out.values())


def main(argv: list[str] | None = None) -> list[dict]:
    args, extra = parse_args(argv)
    common = [f"train.max_steps={args.steps}", *COMMON]
    ddp = ["distributed=ddp", f"distributed.num_processes={args.processes}"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in args.runs:  # build the task's artifacts (and reference log-probs) outside the timings
            alignctl(merged(RUNS[name], common, ["train.max_steps=1", "eval.enabled=false"], extra), root / "cache",
                     root / f"build-{name}")  # fmt: skip
        print(f"{'run':<8}{'1 proc s':>10}{f'{args.processes} proc s':>10}{'max |loss diff|':>17}{'max |loss|':>12}"
              f"{'max |w diff|':>14}{'max |eval diff|':>17}")  # fmt: skip
        for name in args.runs:
            one, two = root / f"{name}-1", root / f"{name}-2"
            t1 = alignctl(merged(RUNS[name], common, extra), root / "cache", one)
            t2 = alignctl(merged(RUNS[name], common, extra, ddp), root / "cache", two)
            d = differences(one, two)
            ok = d["max |loss diff|"] <= 1e-5 * max(d["max |loss|"], 1.0) and d["max |weight diff|"] <= 1e-4
            print(f"{name:<8}{t1:>10.1f}{t2:>10.1f}{d['max |loss diff|']:>17.2e}{d['max |loss|']:>12.4f}"
                  f"{d['max |weight diff|']:>14.2e}{d['max |eval diff|']:>17.2e}  {'same' if ok else 'DIFFERENT'}")  # fmt: skip
            rows.append({"run": name, "one_process_s": t1, "processes": args.processes, "n_process_s": t2,
                         **d, "same": ok})  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"steps": args.steps, "overrides": extra, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
