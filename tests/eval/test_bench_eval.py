"""scripts/bench_eval.py at tiny sizes: it runs, and its output has the shape docs/BENCHMARKS.md reads (not its
times: no test asserts a time)."""

import importlib.util
from pathlib import Path

from alignctl.data.tasks import tiny_lm
from alignctl.models import files
from alignctl.models.schema import TinyModelConfig

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_eval.py"


def test_bench_eval_smoke(tmp_path):
    tokenizer = tiny_lm.train_bpe_tokenizer(["the film was a quiet delight", "a dull plot and wooden acting"] * 4,
                                            vocab_size=280, model_max_length=64)  # fmt: skip
    cfg = TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_position_embeddings=64)
    files.save_hf_dir(tiny_lm.build_llama(cfg, tokenizer), tokenizer, tmp_path / "model")
    spec = importlib.util.spec_from_file_location("bench_eval", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--model-dir", str(tmp_path / "model"), "--prompts", "6", "--n", "2", "--max-new-tokens", "3",
                       "--max-prompt-tokens", "12", "--judge-pairs", "2", "--out", str(tmp_path / "eval.json")])  # fmt: skip
    s, j = rows["sampling"], rows["judge_cache"]
    assert s["same_completions"] is True and s["prompts"] == 6 and s["n"] == 2
    assert {"today_s", "row_seeded_s", "row_seeded_by_length_s", "sampling_speedup"} <= set(s)
    assert j["cold_requests"] == 4 and j["warm_requests"] == 0 and j["same_verdicts"] is True  # 2 pairs x 2 orders
    assert (tmp_path / "eval.json").is_file()
