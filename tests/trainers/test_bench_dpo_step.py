"""scripts/bench_dpo_step.py at tiny sizes runs (it crashed once, unseen, after reference log-probs moved to the
shared cache): its output has the fields docs/BENCHMARKS.md reads, both trainers compute the same loss and
gradients. No time is asserted."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_dpo_step.py"


def test_bench_dpo_step_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_dpo_step", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "dpo_step.json"
    bench.main(["--n-layer", "1", "--n-embd", "64", "--vocab", "512", "--rounds", "1", "--pairs", "2",
                "--prompt-len", "8", "--completion-len", "8", "--threads", "1", "--no-memory", "--out", str(out)])  # fmt: skip
    result = json.loads(out.read_text())
    assert set(result["trainers"]) == {"alignctl", "trl"} and result["rows"] == 4 and result["tokens"] == 16
    assert result["grad_rel_diff"] < 1e-4
    alignctl_loss, trl_loss = result["loss_after_step"]
    assert abs(alignctl_loss - trl_loss) < 1e-4
