"""scripts/bench_padding.py at a tiny size: one epoch per contender, the table's rows, the ratios and the JSON it
writes; the padding shares are what the dataloaders yield (checked against a recount). No time is asserted."""

import json
import math

from ._tiny import load_script


def test_bench_padding_smoke(tmp_path, capsys):
    bench = load_script("bench_padding")
    out = tmp_path / "padding.json"
    result = bench.main(["--n-layer", "1", "--n-embd", "64", "--vocab", "512", "--pairs", "16", "--batch", "4",
                         "--rounds", "1", "--threads", "1", "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    for name in bench.CONTENDERS:
        row = result[name]
        assert len(row["seconds"]) == 1 and row["median_s"] > 0 and math.isfinite(row["tokens_per_s"])
        assert 0 <= row["padding_share"] < 1 and row["real_tokens"] < row["batch_tokens"]
        assert any(line.startswith(name + " ") for line in printed.splitlines())
    # one epoch of the same pairs: every contender sees the same real tokens, whatever the batching
    assert len({result[name]["real_tokens"] for name in bench.CONTENDERS}) == 1
    assert set(result["ratios"]) == {"alignctl_grouped_vs_trl", "alignctl_vs_trl", "grouped_vs_shuffled"}
    assert "target alignctl_grouped >= 1.5x" in printed
    assert json.loads(out.read_text())["ratios"] == result["ratios"]
