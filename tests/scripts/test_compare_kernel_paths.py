"""scripts/compare_kernel_paths.py on the tiny embedded task, 2 steps per path: a row per eval metric and the final
loss with both paths' values and their difference, and the step's peak-memory line with its fused/naive ratio. Two
`alignctl train` subprocesses (~10 s of start-up each on the 2-core machine): marked slow. No time is asserted."""

import pytest

from ._tiny import TINY, load_script, number, table_after

ROWS = ["reward_mean", "kl_to_reference", "kl_to_reference_tokenwise", "entropy_per_token", "preference_accuracy",
        "ece", "final_loss"]  # fmt: skip


@pytest.mark.slow
def test_compare_kernel_paths_smoke(capsys):
    script = load_script("compare_kernel_paths")
    result = script.main([*TINY, "train.max_steps=2"])
    lines = capsys.readouterr().out.splitlines()
    header, table = table_after(lines, "metric ", len(ROWS))
    assert header == ["metric", "fused", "naive", "|diff|"]
    assert [row[0] for row in table] == ROWS
    for row in table:
        fused, naive, diff = (number(c) for c in row[1:])
        assert abs(diff - abs(fused - naive)) <= 1e-4 + 1e-3 * abs(diff)  # the printed difference is theirs
    peak = next(line for line in lines if line.startswith("step peak extra MiB"))
    fused_mib, naive_mib, word, ratio = peak.removeprefix("step peak extra MiB").split()
    assert word == "ratio" and number(fused_mib) > 0 and number(naive_mib) > 0 and number(ratio) > 0
    assert set(result["runs"]) == set(result["peak_bytes"]) == {"fused", "naive"}
