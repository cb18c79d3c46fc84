"""scripts/bench_kernels.py at tiny sizes, idle and under its background load: one JSON row per impl and phase with
the documented keys, a table per phase whose every cell parses, and the chunked targets' met / NOT met lines
(--check-targets: the targets are otherwise checked on the default problem only). No time is asserted."""

import json
import re

from ._tiny import load_script, number, table_after

IMPLS = ["naive", "chunked", "trl", "gemm", "gemm_flat"]  # triton: CUDA only, a [skip] line here
KEYS = {"impl", "N", "d", "V", "divergence", "dtype", "device", "threads", "load", "seconds", "min_seconds",
        "cpu_seconds", "peak_bytes"}  # fmt: skip
COLUMNS = ["impl", "seconds", "min", "max", "cpu", "s", "peak", "MiB", "x", "naive", "t", "x", "gemm", "t", "x", "flat",
           "t", "x", "flat", "cpu", "x", "naive", "mem"]  # fmt: skip
# one clause of a "targets (chunked, <phase>): " line
TARGET = re.compile(r"^.+ x (gemm_flat|naive)( \(same load\))?: \d+\.\d{3} (met|NOT met)$")


def test_bench_kernels_smoke(tmp_path, capsys):
    bench = load_script("bench_kernels")
    out = tmp_path / "kernels.json"
    rows = bench.main(["--n", "40", "--d", "16", "--vocab", "300", "--rounds", "1", "--warmup", "1", "--threads", "1",
                       "--device", "cpu", "--load", "both", "--check-targets", "--out", str(out)])  # fmt: skip
    text = capsys.readouterr().out
    lines = text.splitlines()

    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(rows))
    assert [(r["impl"], r["load"]) for r in saved] == [(i, p) for p in ("idle", "background") for i in IMPLS]
    for r in saved:
        assert set(r) == KEYS and (r["N"], r["d"], r["V"], r["dtype"], r["device"]) == (40, 16, 300, "float32", "cpu")
        assert all(isinstance(r[k], float) and r[k] >= 0 for k in ("seconds", "min_seconds", "cpu_seconds"))
        assert isinstance(r["peak_bytes"], int) and r["peak_bytes"] > 0
    assert any(line.startswith("[skip] triton:") for line in lines)

    for phase, n_targets in (("idle", 2), ("background", 3)):
        start = lines.index(f"N=40 d=16 V=300 float32 divergence=forward_kl device=cpu threads=1 rounds=1 load={phase}")
        header, table = table_after(lines[start:], "impl ", len(IMPLS))
        assert header == COLUMNS
        assert [row[0] for row in table] == IMPLS
        cells = {row[0]: [number(c) for c in row[1:]] for row in table}  # every cell a finite number
        assert all(len(c) == 10 for c in cells.values())
        assert cells["naive"][5] == 1.0 and cells["naive"][9] == 1.0  # x naive t, x naive mem of naive itself
        assert cells["gemm_flat"][7] == 1.0 and cells["gemm_flat"][8] == 1.0  # x flat t, x flat cpu
        target_line = next(x for x in lines if x.startswith(f"targets (chunked, {phase}): "))
        clauses = target_line.split(": ", 1)[1].split("; ")
        assert len(clauses) == n_targets and all(TARGET.match(c) for c in clauses), target_line
