"""Wall time of the same 4-job sweep run one job after another (launcher=basic) and 2 jobs at a time
(launcher=local launcher.n_jobs=2), side by side in one run, then the sequential sweep again with the reference
log-probs its first run cached ("warm reference cache").

Each arm is an `alignctl train -m` subprocess with its own hydra.sweep.dir under a temp dir. The embedded task's
artifacts (corpus, tokenizer, base model) are built once before timing, by a run whose objective needs no reference
(so no reference log-probs are cached), and each of the first two arms starts from its own copy of that cache.
Target on the 2-core CPU machine: parallel >= 1.6x faster than sequential. Per arm, the stderr lines of the
reference log-prob cache ("reference log-probs: cache hit" / "... cache miss") are counted: none of either kind
means this tree has no such cache.
Usage: python scripts/bench_sweep.py [extra alignctl overrides...]
An override of a key the sweep sets replaces it (divergence=reverse_kl,js: a 2-job sweep, as the smoke test in
tests/scripts/ runs with tiny task sizes and train.max_steps=1).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["divergence=reverse_kl,js,forward_kl,alpha", "train.max_steps=20", "eval.enabled=false", "tracking=none"]
ARMS = {  # name -> (launcher overrides, cache copy it runs on)
    "sequential": (["launcher=basic"], "sequential"),
    "parallel": (["launcher=local", "launcher.n_jobs=2"], "parallel"),
    "sequential, warm reference cache": (["launcher=basic"], "sequential"),
}
TARGET = 1.6  # sequential / parallel wall time
ALIGNCTL = [sys.executable, "-m", "alignctl.cli.main", "train"]


def alignctl(args: list[str], cache: Path, log: Path) -> float:
    """Run `alignctl train <args>` with its own cache; seconds it took (its stderr kept in `log`)."""
    env = {**os.environ, "ALIGNCTL_CACHE_DIR": str(cache), "WANDB_MODE": "offline"}
    start = time.perf_counter()
    with log.open("w") as err:
        done = subprocess.run([*ALIGNCTL, *args], env=env, stdout=subprocess.DEVNULL, stderr=err)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"alignctl train {' '.join(args)} failed ({done.returncode}):\n{log.read_text()[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> list[tuple]:
    extra = sys.argv[1:] if argv is None else list(argv)  # e.g. train.max_steps=200: replaces the sweep's own value
    sweep = [o for o in SWEEP if o.split("=", 1)[0] not in {e.split("=", 1)[0] for e in extra}] + extra
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # the embedded task's artifacts, built once and outside the timings (asft reads no reference)
        build_args = ["objective=asft", "train.max_steps=1", "eval.enabled=false", "tracking=none"]
        build_args += [o for o in sweep if o.split("=", 1)[0] not in ("divergence", "train.max_steps", "eval.enabled")]
        build = alignctl([*build_args, f"hydra.run.dir={root / 'build'}"], root / "cache", root / "build.log")
        for copy in ("sequential", "parallel"):
            shutil.copytree(root / "cache", root / f"cache-{copy}")
        rows = []
        for n, (name, (launcher, copy)) in enumerate(ARMS.items()):
            sweep_dir, log = root / f"sweep{n}", root / f"sweep{n}.log"
            seconds = alignctl(["-m", *sweep, *launcher, f"hydra.sweep.dir={sweep_dir}"], root / f"cache-{copy}", log)
            records = [json.loads(p.read_text()) for p in sweep_dir.glob("*/run.json")]
            finished = sum(r.get("status") == "finished" for r in records)
            text = log.read_text()
            hits = text.count("reference log-probs: cache hit")
            misses = text.count("reference log-probs: cache miss")
            rows.append((name, seconds, f"{finished}/{len(records)}", hits, misses))

    print(f"sweep: alignctl train -m {' '.join(sweep)}  ({os.cpu_count()} CPUs; task built once in "
          f"{build:.1f} s, not timed)")  # fmt: skip
    print(f"{'arm':<34} {'seconds':>8} {'finished':>8} {'ref hits':>8} {'ref misses':>10}")
    for name, seconds, finished, hits, misses in rows:
        print(f"{name:<34} {seconds:>8.1f} {finished:>8} {hits:>8} {misses:>10}")
    ratio = rows[0][1] / rows[1][1]
    met = "met" if ratio >= TARGET else "NOT met"
    print(f"parallel speedup: {ratio:.2f}x (sequential {rows[0][1]:.1f} s / parallel {rows[1][1]:.1f} s); "
          f"target >= {TARGET}x: {met}")  # fmt: skip
    print(f"warm reference cache: sequential {rows[2][1]:.1f} s vs {rows[0][1]:.1f} s cold "
          f"({rows[0][1] / rows[2][1]:.2f}x)")  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
