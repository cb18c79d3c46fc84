"""End-to-end check of the fused kernel path: one TDPO run with model.kernel=fused and one with naive.

Prints both runs' eval metrics and final training loss side by side (they must agree within tolerance: the
kernels compute the same numbers), and the peak extra memory of one TDPO scoring step (forward + backward of
policy and reference log-probs and the full-vocabulary token divergence on a training batch) for each path,
measured with the torch profiler's memory events (see scripts/bench_kernels.py).
Usage: python scripts/compare_kernel_paths.py [extra alignctl overrides...]
(the smoke test in tests/scripts/ passes tiny task sizes and train.max_steps=2; the runs use ALIGNCTL_CACHE_DIR)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kernels import peak_extra_bytes  # noqa: E402

METRICS = ("reward_mean", "kl_to_reference", "kl_to_reference_tokenwise", "entropy_per_token", "preference_accuracy", "ece")


def train(kernel: str, run_dir: Path, extra: list[str]) -> dict:
    subprocess.run(
        [sys.executable, "-m", "alignctl.cli.main", "train", "objective=tdpo2", f"model.kernel={kernel}", "tracking=none",
         f"hydra.run.dir={run_dir}", *extra],
        check=True, stdout=subprocess.DEVNULL,
    )
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    metrics = json.loads((run_dir / "eval.json").read_text())
    metrics["final_loss"] = [line["loss"] for line in lines if "loss" in line][-1]
    return metrics


def step_peak_bytes(kernel: str, extra: list[str]) -> int:
    """Peak extra memory of one TDPO scoring forward + backward on a batch of training pairs."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from alignctl.config import compose
    from alignctl.models import loading
    from alignctl.models.scoring import sequence_stats
    from alignctl.run import build, runtime, sources

    cfg = compose.compose_one(["objective=tdpo2", f"model.kernel={kernel}", *extra])
    runtime.prepare(cfg)
    base = sources.policy_source(cfg)
    tokenizer = loading.load_tokenizer(cfg, base)
    policy, reference = (loading.load_causal_lm(cfg, base) for _ in range(2))
    pairs = build.preference_pairs(cfg, tokenizer, base)["train"].select(range(cfg.train.batch_size))
    rows = []
    for row in pairs:
        prompt = tokenizer(row["prompt"])["input_ids"]
        rows.append({
            "prompt_ids": prompt,
            "chosen_ids": tokenizer(row["prompt"] + row["chosen"] + tokenizer.eos_token)["input_ids"][len(prompt):],
            "rejected_ids": tokenizer(row["prompt"] + row["rejected"] + tokenizer.eos_token)["input_ids"][len(prompt):],
        })
    batch = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(rows)
    divergence = cfg.divergence.build()

    def step() -> None:
        stats = sequence_stats(policy, batch["input_ids"], batch["attention_mask"], batch["completion_mask"],
                               reference=reference, divergence=divergence, kernel=kernel)
        (stats.logps.sum() + stats.divergence.sum()).backward()

    step()  # warm-up
    policy.zero_grad(set_to_none=False)
    return peak_extra_bytes(step, torch.device("cpu"))


def main(argv: list[str] | None = None) -> dict:
    extra = sys.argv[1:] if argv is None else list(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {kernel: train(kernel, Path(tmp) / kernel, extra) for kernel in ("fused", "naive")}
    peaks = {kernel: step_peak_bytes(kernel, extra) for kernel in ("fused", "naive")}
    print(f"{'metric':<28}{'fused':>12}{'naive':>12}{'|diff|':>12}")
    for key in (*METRICS, "final_loss"):
        a, b = runs["fused"][key], runs["naive"][key]
        print(f"{key:<28}{a:>12.5f}{b:>12.5f}{abs(a - b):>12.2e}")
    print(f"{'step peak extra MiB':<28}{peaks['fused'] / 2**20:>12.2f}{peaks['naive'] / 2**20:>12.2f}"
          f"{'ratio ' + format(peaks['fused'] / peaks['naive'], '.2f'):>12}")
    return {"runs": runs, "peak_bytes": peaks}


if __name__ == "__main__":
    main()
