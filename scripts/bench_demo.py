"""Wall time of `make demo` with an empty artifact cache (cold) and right after, with it filled (warm).

The virtual environment is installed before timing starts (a fresh clone's install time is reported
separately in docs/BENCHMARKS.md). Targets on the 2-core CPU machine: cold <= 300 s, warm <= 120 s.
Usage: python scripts/bench_demo.py [--no-install] [--out FILE] [extra alignctl overrides...]

Extra overrides go to `make demo ARGS=...` (the smoke test in tests/scripts/ passes tiny task sizes); --no-install
skips `make install` and runs `make -o .venv/.installed demo`, so make never reinstalls the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"cold": 300.0, "warm": 120.0}


def timed_demo(env: dict[str, str], runs_dir: Path, extra: list[str], install: bool) -> float:
    make = ["make", "-s"] if install else ["make", "-s", "-o", ".venv/.installed"]  # -o: never remake the venv
    start = time.perf_counter()
    subprocess.run(
        [*make, "demo", "ARGS=" + shlex.join([f"hydra.run.dir={runs_dir}", *extra])], cwd=ROOT, env=env, check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-install", action="store_true", help="skip `make install` (the venv is set up already)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "demo.json")
    return p.parse_known_args(argv)


def main(argv=None) -> dict:
    args, extra = parse_args(argv)
    if not args.no_install:
        subprocess.run(["make", "-s", "install"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ALIGNCTL_CACHE_DIR": str(Path(tmp) / "cache"), "WANDB_MODE": "offline"}
        rows = {}
        for label in ("cold", "warm"):
            run_dir = Path(tmp) / label
            rows[label] = timed_demo(env, run_dir, extra, install=not args.no_install)
            rows[f"{label}_eval"] = json.loads((run_dir / "eval.json").read_text())
    print(f"{'make demo':<10} {'seconds':>8} {'target':>8} {'ratio':>6} {'target met':>10}")
    for label, target in TARGETS.items():
        met = "met" if rows[label] <= target else "NOT met"
        print(f"{label:<10} {rows[label]:>8.1f} {target:>8.0f} {rows[label] / target:>6.2f} {met:>10}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"nproc": os.cpu_count(), "overrides": extra, **rows}, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
