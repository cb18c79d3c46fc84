"""scripts/bench_distributed.py on one run (dpo) of 2 steps on the tiny task: the table's header and row (both wall
times, the loss / weight / eval differences, same or DIFFERENT) and the JSON it writes. The build, the 1-process run
and the 2-process ddp run are `alignctl train` subprocesses: marked slow. No time is asserted."""

import json

import pytest

from ._tiny import TINY, load_script, number, table_after


@pytest.mark.slow
def test_bench_distributed_smoke(tmp_path, capsys):
    bench = load_script("bench_distributed")
    out = tmp_path / "distributed.json"
    rows = bench.main(["--runs", "dpo", "--steps", "2", "--out", str(out), *TINY])
    lines = capsys.readouterr().out.splitlines()
    header, (row,) = table_after(lines, "run ", 1)
    assert header == ["run", "1", "proc", "s", "2", "proc", "s", "max", "|loss", "diff|", "max", "|loss|", "max", "|w",
                      "diff|", "max", "|eval", "diff|"]  # fmt: skip
    assert row[0] == "dpo" and len(row) == 8 and row[-1] in ("same", "DIFFERENT")
    assert all(number(c) >= 0 for c in row[1:7])
    saved = json.loads(out.read_text())
    assert saved["steps"] == 2 and saved["rows"] == json.loads(json.dumps(rows)) and len(rows) == 1
    assert {"run", "one_process_s", "n_process_s", "max |loss diff|", "max |weight diff|", "max |eval diff|",
            "same"} <= set(rows[0])  # fmt: skip
