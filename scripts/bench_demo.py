"""Wall time of `make demo` with an empty artifact cache (cold) and right after, with it filled (warm).

The virtual environment is installed before timing starts (a fresh clone's install time is reported
separately in docs/BENCHMARKS.md). Targets on the 2-core CPU machine: cold <= 300 s, warm <= 120 s.
Usage: python scripts/bench_demo.py [extra alignctl overrides...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"cold": 300.0, "warm": 120.0}


def timed_demo(env: dict[str, str], runs_dir: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["make", "-s", "demo", f"ARGS=hydra.run.dir={runs_dir}"], cwd=ROOT, env=env, check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    subprocess.run(["make", "-s", "install"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ALIGNCTL_CACHE_DIR": str(Path(tmp) / "cache"), "WANDB_MODE": "offline"}
        rows = {}
        for label in ("cold", "warm"):
            run_dir = Path(tmp) / label
            rows[label] = timed_demo(env, run_dir)
            rows[f"{label}_eval"] = json.loads((run_dir / "eval.json").read_text())
    print(f"{'make demo':<10} {'seconds':>8} {'target':>8} {'ratio':>6}")
    for label, target in TARGETS.items():
        print(f"{label:<10} {rows[label]:>8.1f} {target:>8.0f} {rows[label] / target:>6.2f}")
    out = ROOT / "bench" / "demo.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"nproc": os.cpu_count(), **rows}, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
