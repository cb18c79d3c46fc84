"""scripts/bench_demo.py with tiny task sizes: `make demo` cold (empty cache) then warm, a row per phase with its
seconds, target, ratio and met / NOT met, and bench JSON with both runs' eval metrics. Two `alignctl train` runs
(the cold one builds the tiny task): marked slow. No time is asserted."""

import json

import pytest

from ._tiny import TINY, load_script, number, table_after


@pytest.mark.slow
def test_bench_demo_smoke(tmp_path, capsys):
    bench = load_script("bench_demo")
    out = tmp_path / "demo.json"
    rows = bench.main(["--no-install", "--out", str(out), *TINY, "train.max_steps=2", "tracking=none"])
    lines = capsys.readouterr().out.splitlines()
    header, table = table_after(lines, "make demo", 2)
    assert header == ["make", "demo", "seconds", "target", "ratio", "target", "met"]
    assert [row[0] for row in table] == ["cold", "warm"]
    for row, target in zip(table, (300, 120)):
        seconds, printed_target, ratio = (number(c) for c in row[1:4])
        assert printed_target == target and abs(ratio - seconds / target) < 0.01
        assert " ".join(row[4:]) in ("met", "NOT met")
    saved = json.loads(out.read_text())
    assert {"nproc", "overrides", "cold", "warm", "cold_eval", "warm_eval"} <= set(saved)
    assert saved["cold"] == rows["cold"] and isinstance(saved["warm_eval"]["reward_mean"], float)
