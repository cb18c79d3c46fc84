"""scripts/bench_sweep.py as a 2-job sweep of 1-step runs on the tiny task: the sweep line, a row per arm (seconds,
finished jobs, reference-cache hits and misses), the parallel speedup with its target met / NOT met, and the warm
cache's ratio. Four `alignctl train` subprocesses and two joblib workers: marked slow. No time is asserted."""

import re

import pytest

from ._tiny import TINY, load_script, number, table_after

ARMS = ["sequential", "parallel", "sequential, warm reference cache"]


@pytest.mark.slow
def test_bench_sweep_smoke(capsys):
    bench = load_script("bench_sweep")
    bench.main([*TINY, "divergence=reverse_kl,js", "train.max_steps=1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sweep: alignctl train -m ") and "divergence=reverse_kl,js" in lines[0]
    header, table = table_after(lines, "arm ", len(ARMS))
    assert header == ["arm", "seconds", "finished", "ref", "hits", "ref", "misses"]
    for row, arm in zip(table, ARMS):
        assert " ".join(row[:-4]) == arm
        seconds, finished, hits, misses = row[-4:]
        assert number(seconds) > 0 and finished == "2/2" and int(hits) >= 0 and int(misses) >= 0
    assert table[2][-1] == "0"  # the warm arm computes no reference log-probs
    speedup = next(line for line in lines if line.startswith("parallel speedup: "))
    m = re.fullmatch(r"parallel speedup: (\S+)x \(sequential (\S+) s / parallel (\S+) s\); "
                     r"target >= 1\.6x: (met|NOT met)", speedup)  # fmt: skip
    assert m and all(number(g) > 0 for g in m.groups()[:3])
    warm = next(line for line in lines if line.startswith("warm reference cache: "))
    assert re.fullmatch(r"warm reference cache: sequential \S+ s vs \S+ s cold \((\S+)x\)", warm)
