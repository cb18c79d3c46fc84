#!/usr/bin/env python
"""Compute on padding: one epoch of DPO over pairs of widely varying length, TRL's DPOTrainer (uniformly shuffled
batches, padded to their longest pair) vs alignctl's PreferenceTrainer shuffled the same way and with
train.group_by_length (batches of pairs of similar length), side by side in one process.

Problem: a GPT-2-small-shaped GPT2LMHeadModel (vocab 50257, n_embd 768, 12 heads; --n-layer layers, 12 = GPT-2 small;
random weights from a config with a fixed seed), float32 on CPU; --pairs pairs of random token ids whose lengths are
long-tailed like UltraFeedback's: prompt and completion lengths drawn from log-normal distributions with
sigma 0.9 (UltraFeedback's binarized pairs, Llama-2 tokens: prompt median ~ 100, completion median ~ 250, a long
tail past 1,000 tokens), scaled down by --scale (default 8: medians 12 and 31 tokens) for a 2-core CPU, each
sequence cut at --max-length. The chosen and rejected completions of a pair have independent lengths.

Contenders, each training one epoch (every pair once: the same real tokens) from the same weights, with the
reference's log-probs precomputed when the trainer is built (not timed; each step then runs the policy alone); each
is built once and every round restarts it from the same weights with a new optimizer:
* trl: `trl.DPOTrainer` as it is (loss "sigmoid", beta 0.1);
* alignctl: `alignctl.trainers.preference.PreferenceTrainer` (objective dpo, fused kernel), uniformly shuffled;
* alignctl_grouped: the same with train.group_by_length (transformers' LengthGroupedSampler on the pair lengths).

Timed: `trainer.train()` wall clock, --rounds rounds, the contenders' order rotated each round; reported: median
seconds, real (non-pad) tokens per second, the share of the batches' tokens that are padding, and the ratios.
Target (issue 25.2): alignctl_grouped tokens/s >= 1.5 x trl's.

    python scripts/bench_padding.py                       # 2 layers, 256 pairs, 3 rounds
    python scripts/bench_padding.py --n-layer 1 --pairs 16 --rounds 1 --vocab 512 --n-embd 64   # smoke test

Writes bench/padding.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

# the GPT-2-shaped model (args.vocab, n_embd, n_layer, seed) and the word-level tokenizer ("t<i>" is id i)
from bench_dpo_step import make_model, make_tokenizer  # noqa: E402

CONTENDERS = ("trl", "alignctl", "alignctl_grouped")
# UltraFeedback (binarized), Llama-2 tokens: median prompt ~100, median completion ~250, long right tails
PROMPT_MEDIAN, COMPLETION_MEDIAN, SIGMA = 100, 250, 0.9
TARGET = 1.5


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=256, help="preference pairs (one epoch)")
    p.add_argument("--batch", type=int, default=8, help="pairs per batch")
    p.add_argument("--scale", type=float, default=8.0, help="divide UltraFeedback's lengths by this")
    p.add_argument("--max-length", type=int, default=256, help="tokens per sequence at most (prompt + completion)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-layer", type=int, default=2, help="GPT-2 layers (12 = GPT-2 small)")
    p.add_argument("--n-embd", type=int, default=768)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "padding.json")
    args = p.parse_args(argv)
    if args.pairs % args.batch:
        p.error("--pairs must be a multiple of --batch (one epoch of whole batches)")
    return args


def lengths(args, g: torch.Generator, median: float, n: int) -> list[int]:
    """n log-normal lengths (median / scale, sigma SIGMA), at least 1."""
    z = torch.randn(n, generator=g, dtype=torch.float64)
    return [max(1, round(math.exp(math.log(median / args.scale) + SIGMA * float(x)))) for x in z]


def make_rows(args):
    from datasets import Dataset

    g = torch.Generator().manual_seed(args.seed + 1)
    n = args.pairs
    prompt_n, chosen_n, rejected_n = (lengths(args, g, m, n) for m in (PROMPT_MEDIAN, COMPLETION_MEDIAN,
                                                                        COMPLETION_MEDIAN))  # fmt: skip

    def text(k: int) -> str:
        return " ".join(f"t{i}" for i in torch.randint(0, args.vocab - 1, (k,), generator=g).tolist())

    rows = {"prompt": [text(k) for k in prompt_n], "chosen": [" " + text(k) for k in chosen_n],
            "rejected": [" " + text(k) for k in rejected_n]}  # fmt: skip
    return Dataset.from_dict(rows)


def dpo_config(args, out_dir: str, grouped: bool):
    from trl import DPOConfig

    return DPOConfig(
        output_dir=out_dir, per_device_train_batch_size=args.batch, learning_rate=1e-6, beta=0.1,
        loss_type=["sigmoid"], max_length=args.max_length, precompute_ref_log_probs=True, seed=args.seed,
        data_seed=args.seed, report_to=[], use_cpu=True, bf16=False, fp16=False, dataloader_num_workers=0,
        save_strategy="no", dataset_num_proc=None, disable_tqdm=True, logging_steps=10**6,
        max_steps=args.pairs // args.batch, warmup_steps=0,
        # as alignctl.run.train.training_args sets them for train.group_by_length
        train_sampling_strategy="group_by_length" if grouped else "random", remove_unused_columns=not grouped,
    )  # fmt: skip


def make_trainer(name: str, args, base, tokenizer, dataset, out_dir: str):
    from trl import DPOTrainer

    from alignctl import objectives
    from alignctl.trainers.preference import PreferenceTrainer

    policy = copy.deepcopy(base).train()
    reference = copy.deepcopy(base).eval().requires_grad_(False)
    config = dpo_config(args, out_dir, grouped=name == "alignctl_grouped")
    common = dict(model=policy, ref_model=reference, args=config, train_dataset=dataset, processing_class=tokenizer)
    if name == "trl":
        return DPOTrainer(**common)
    return PreferenceTrainer(**common, objective=objectives.get("dpo"), hyperparameters={"beta": 0.1},
                             divergence=None, kernel="fused")  # fmt: skip


def padding_of(trainer) -> dict[str, float]:
    """Real and padded tokens of the epoch's batches as the trainer's dataloader yields them."""
    real = total = 0
    for batch in trainer.get_train_dataloader():
        real += int(batch["attention_mask"].sum())
        total += batch["attention_mask"].numel()
    return {"real_tokens": real, "batch_tokens": total, "padding_share": 1 - real / total}


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    base = make_model(args)
    tokenizer = make_tokenizer(args.vocab)
    dataset = make_rows(args)
    seconds: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    with tempfile.TemporaryDirectory() as tmp:
        # built once each (the reference pass over the data, not timed), then every round trains from the same
        # weights with a new optimizer and schedule
        trainers = {name: make_trainer(name, args, base, tokenizer, dataset, f"{tmp}/{name}") for name in CONTENDERS}
        tokens = {name: padding_of(trainer) for name, trainer in trainers.items()}
        start_weights = copy.deepcopy(base.state_dict())
        for r in range(args.rounds):
            order = CONTENDERS[r % 3:] + CONTENDERS[: r % 3]  # rotated: a load drift hits each alike
            for name in order:
                trainer = trainers[name]
                trainer.model.load_state_dict(start_weights)
                trainer.optimizer = trainer.lr_scheduler = None  # train() makes new ones
                start = time.perf_counter()
                trainer.train()
                seconds[name].append(time.perf_counter() - start)
                print(f"round {r + 1}: {name:17s} {seconds[name][-1]:7.2f} s", flush=True)
    result = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    for name in CONTENDERS:
        median = statistics.median(seconds[name])
        result[name] = {"seconds": seconds[name], "median_s": median,
                        "tokens_per_s": tokens[name]["real_tokens"] / median, **tokens[name]}  # fmt: skip
    speedup = result["alignctl_grouped"]["tokens_per_s"] / result["trl"]["tokens_per_s"]
    result["ratios"] = {
        "alignctl_grouped_vs_trl": speedup,
        "alignctl_vs_trl": result["alignctl"]["tokens_per_s"] / result["trl"]["tokens_per_s"],
        "grouped_vs_shuffled": result["alignctl_grouped"]["tokens_per_s"] / result["alignctl"]["tokens_per_s"],
    }
    result["target_met"] = speedup >= TARGET
    print(f"\n{'':17s} {'median s':>9s} {'real tok/s':>11s} {'padding':>8s}")
    for name in CONTENDERS:
        row = result[name]
        print(f"{name:17s} {row['median_s']:9.2f} {row['tokens_per_s']:11.0f} {row['padding_share']:8.1%}")
    for key, value in result["ratios"].items():
        print(f"{key}: {value:.2f}x")
    print(f"target alignctl_grouped >= {TARGET}x trl's tokens/s: {'met' if result['target_met'] else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
