#!/usr/bin/env python
"""One DPO training step, alignctl's PreferenceTrainer vs TRL's own DPOTrainer, side by side in one process.

Problem: a GPT-2-small-shaped GPT2LMHeadModel (vocab 50257, n_embd 768, 12 layers, 12 heads; random weights from
a config with a fixed seed), float32 on CPU, and one batch of 8 pairs, each sequence 64 prompt + 192 completion
tokens (191 random ids + EOS), i.e. 16 rows x 256 tokens, 3072 completion tokens scored per model.

Contenders (each gets its own copies of the same weights: the policy, and a frozen reference = a second copy):

* alignctl: `alignctl.trainers.preference.PreferenceTrainer`, constructed as `alignctl.run.train.offline_trainer` does
  (objective `dpo`, hyperparameters {"beta": 0.1}, divergence None, kernel "fused" through
  `alignctl.models.scoring.resolve_kernel`, ref_model given): its compute_loss scores both models through
  `alignctl.models.scoring.sequence_stats` (fused chunked log-prob kernel on the completion positions, no [tokens, vocab]
  logits) and calls `alignctl.objectives.dpo.loss`;
* trl: `trl.DPOTrainer` as it is (its fused LM head, `ChunkedLogProbFunction`; on CPU it projects every position,
  prompt and padding included, 16 x 255 rows per model, and masks afterwards).

Both take the same DPOConfig: beta 0.1, loss_type ["sigmoid"], max_length 256, precompute_ref_log_probs False
(reference log-probs computed on the fly, in every step, by both), bf16=False (DPOConfig turns bf16 autocast on by
default, also on CPU; alignctl.run.train sets it off on CPU), the same learning rate, seed, and TRL's default
optimizer (`Trainer.create_optimizer()`: optim "adamw_torch_fused", i.e. torch AdamW(fused=True), weight decay 0, the
same parameter groups). Both are fed the SAME
collated batch: the prompt/chosen/rejected rows are tokenized by TRL's own dataset preparation (a word-level
tokenizer whose word "t<i>" is id i, so the ids are exactly the random ones) and collated once by TRL's
`DataCollatorForPreference`; the script checks the two trainers tokenized the rows identically.

What is timed (wall clock, `time.perf_counter`), one "step":

    loss = trainer.training_step(trainer.model, batch)   # model.train(); compute_loss (policy forward, reference
                                                          # forward under no_grad, loss, logged metrics); backward
    trainer.optimizer.step()                              # AdamW update of all 124M policy parameters
    trainer.optimizer.zero_grad()                         # grads set to None, as Trainer does between steps

(Trainer's own loop would also clip the gradient norm and step the LR scheduler: left out, for both.)

Order: AdamW's state is allocated first (an all-zero-gradient step, which leaves the weights exactly as they are).
Then one untimed warm-up step each, from identical weights (first-call costs), which also
* compares the two losses (both exactly log 2 there: policy = reference, so every log-ratio is 0) and the two
  gradients (relative L2 difference over all parameters, both held at once before either optimizer steps);
* measures each step's peak memory (below).
Then `--rounds` timed rounds, alignctl first in odd rounds and TRL first in even ones (so that a drift in machine
load hits both alike); reported: the median and the min over the rounds, their ratios, and each round's ratio (the
two steps of a round run back to back, so a load change between rounds cancels in it). Before round 1,
alignctl's compute_loss (no_grad) scores TRL's policy, which now differs from the reference; TRL's own
training_step scores the same policy in round 1; the two losses must agree to ~1e-4.

Peak memory: the warm-up step runs under the torch profiler with `profile_memory=True` (the method of
`peak_extra_bytes` in scripts/bench_kernels.py): the peak of the running total of CPU allocations minus frees during
the step (two windows, training_step and optimizer.step + zero_grad, combined; see `warmup`). It counts what the step
allocates (activations, the reference forward, the LM-head tiles, the parameter gradients: 475 MiB, allocated in
backward and freed by zero_grad; AdamW's temporaries), not what exists before it (weights, AdamW state), which is the
same for both. The profiler slows the step a little, so the measured step is never a timed one.

Targets: alignctl median step time <= 1.0 x TRL's; alignctl peak memory <= TRL's.

    python scripts/bench_dpo_step.py                  # 5 rounds, 2 threads: 12 steps, ~10 min on an idle 2-core CPU
    python scripts/bench_dpo_step.py --rounds 3 --threads 1
    python scripts/bench_dpo_step.py --n-layer 2 --rounds 1 --no-memory      # smoke test, a few minutes
    python scripts/bench_dpo_step.py --profile        # also: top ops of one profiled step per trainer

Writes bench/dpo_step.json (per trainer: step seconds, peak bytes, warm-up loss; plus ratios and the load).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_kernels import OtherLoad, cpu_memory_window  # noqa: E402

TRAINERS = ("alignctl", "trl")
EOS = "<|endoftext|>"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds after one warm-up step each")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--pairs", type=int, default=8, help="preference pairs per batch (rows = 2 x pairs)")
    p.add_argument("--prompt-len", type=int, default=64, help="prompt tokens per sequence")
    p.add_argument("--completion-len", type=int, default=192, help="completion tokens per sequence (incl. EOS)")
    p.add_argument("--n-layer", type=int, default=12, help="GPT-2 layers (12 = GPT-2 small; fewer for a smoke test)")
    p.add_argument("--n-embd", type=int, default=768, help="width (768 = GPT-2 small; smaller for a smoke test)")
    p.add_argument("--vocab", type=int, default=50257, help="vocabulary (50257 = GPT-2's; smaller for a smoke test)")
    p.add_argument("--lr", type=float, default=1e-6, help="AdamW learning rate (TRL's DPO default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-memory", action="store_true", help="do not profile the warm-up step for peak memory")
    p.add_argument("--profile", action="store_true", help="print the top ops (self CPU time) of one step each")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "dpo_step.json")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


# --------------------------------------------------------------------------------------------------------- set-up


def make_model(args):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=args.vocab, n_positions=1024, n_embd=args.n_embd, n_layer=args.n_layer,
                        n_head=max(1, args.n_embd // 64), bos_token_id=args.vocab - 1, eos_token_id=args.vocab - 1)  # fmt: skip
    torch.manual_seed(args.seed)
    return GPT2LMHeadModel(config).float()


def make_tokenizer(vocab: int):
    """Word-level tokenizer: the word "t<i>" is id i (i < vocab - 1), EOS (also pad) is id vocab - 1, as in GPT-2."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab - 1)}
    words[EOS] = vocab - 1
    tok = Tokenizer(WordLevel(words, unk_token=EOS))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, unk_token=EOS)


def make_rows(args, vocab: int):
    """Prompt/chosen/rejected text rows of random ids; TRL appends EOS to each completion."""
    from datasets import Dataset

    g = torch.Generator().manual_seed(args.seed + 1)

    def words(n: int) -> list[int]:
        return torch.randint(0, vocab - 1, (n,), generator=g).tolist()

    rows = {"prompt": [], "chosen": [], "rejected": []}
    ids = []
    for _ in range(args.pairs):
        prompt = words(args.prompt_len)
        chosen, rejected = words(args.completion_len - 1), words(args.completion_len - 1)
        rows["prompt"].append(" ".join(f"t{i}" for i in prompt))
        rows["chosen"].append(" " + " ".join(f"t{i}" for i in chosen))
        rows["rejected"].append(" " + " ".join(f"t{i}" for i in rejected))
        ids.append((prompt, chosen + [vocab - 1], rejected + [vocab - 1]))
    return Dataset.from_dict(rows), ids


def dpo_config(args, out_dir: str):
    from trl import DPOConfig

    return DPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=args.pairs,
        learning_rate=args.lr,
        beta=0.1,
        loss_type=["sigmoid"],
        max_length=args.prompt_len + args.completion_len,
        precompute_ref_log_probs=False,  # the reference forward runs in every step, in both trainers
        seed=args.seed,
        data_seed=args.seed,
        report_to=[],
        use_cpu=True,
        bf16=False,  # DPOConfig defaults to bf16 autocast, also on CPU; float32 throughout, as alignctl.run.train on CPU
        fp16=False,
        dataloader_num_workers=0,
        save_strategy="no",
        dataset_num_proc=None,
        disable_tqdm=True,
    )


def make_trainers(args, out_dir: str) -> tuple[dict, dict]:
    """Both trainers (each with its own policy and frozen reference, all four with the same weights) and the batch."""
    from trl import DPOTrainer

    from alignctl import objectives
    from alignctl.models import scoring
    from alignctl.trainers.preference import PreferenceTrainer

    base = make_model(args)
    vocab = base.config.vocab_size
    tokenizer = make_tokenizer(vocab)
    dataset, ids = make_rows(args, vocab)

    def copies(base):
        policy = copy.deepcopy(base).train()
        reference = copy.deepcopy(base).eval().requires_grad_(False)  # as alignctl's load_causal_lm(trainable=False)
        return policy, reference

    policy, reference = copies(base)
    kernel = scoring.resolve_kernel(policy, "fused")  # as alignctl.run.train does at load time
    if kernel != "fused":
        raise SystemExit(f"alignctl would score this model with kernel={kernel!r}, not the fused kernel")
    class StepTrainer(PreferenceTrainer):
        # alignctl's DPO reads cached reference log-probs (alignctl.trainers.reference_cache) and frees the reference
        # model; kept here, so that on TRL's collated batch (no cached columns) it runs the reference forward in
        # every step, as TRL's DPOTrainer does with precompute_ref_log_probs=False: the same work in both.
        keeps_reference_model = True

    trainers = {
        "alignctl": StepTrainer(
            model=policy, ref_model=reference, args=dpo_config(args, f"{out_dir}/alignctl"), train_dataset=dataset,
            processing_class=tokenizer, objective=objectives.get("dpo"), hyperparameters={"beta": 0.1},
            divergence=None, kernel=kernel,
        ),  # fmt: skip
    }
    policy, reference = copies(base)
    trainers["trl"] = DPOTrainer(model=policy, ref_model=reference, args=dpo_config(args, f"{out_dir}/trl"),
                                 train_dataset=dataset, processing_class=tokenizer)  # fmt: skip
    del base

    # TRL's tokenization gave the intended ids, identically in both trainers
    for name, trainer in trainers.items():
        for i, (prompt, chosen, rejected) in enumerate(ids):
            row = trainer.train_dataset[i]
            if (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) != (prompt, chosen, rejected):
                raise SystemExit(f"{name}: row {i} was not tokenized to the intended ids")
    for trainer in trainers.values():
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # what Trainer's loop sets for each step (no accumulation)
    kinds = {name: type(t.optimizer).__name__ for name, t in trainers.items()}
    if len(set(kinds.values())) != 1:
        raise SystemExit(f"the trainers built different optimizers: {kinds}")
    batch = trainers["trl"].data_collator([trainers["trl"].train_dataset[i] for i in range(args.pairs)])
    return trainers, batch


# --------------------------------------------------------------------------------------------------------- a step


def step(trainer, batch) -> float:
    """One optimisation step (see the module docstring); returns the loss."""
    loss = trainer.training_step(trainer.model, batch)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    return float(loss)


def init_optimizer_state(trainer) -> None:
    """Allocate AdamW's state (exp_avg, exp_avg_sq) before the first measured step, with an all-zero gradient: the
    update is then exactly 0 (m = v = 0 and no weight decay), so the weights do not change."""
    opt = trainer.optimizer
    if any(group["weight_decay"] != 0 for group in opt.param_groups):
        raise SystemExit("init_optimizer_state needs weight_decay 0 (a zero-gradient step would move the weights)")
    for group in opt.param_groups:
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad()


def warmup(trainers: dict, batch, memory: bool) -> tuple[dict, float, dict]:
    """The untimed first step of both trainers, from identical weights: their losses, the relative L2 difference of
    their gradients and (with `memory`) each step's peak memory.

    Each trainer's step is profiled in two windows, training_step, then (after the gradient comparison)
    optimizer.step + zero_grad; its peak is max(peak of the first, what the first left allocated + peak of the
    second), i.e. the peak of its own allocations over the whole step. AdamW's state is allocated beforehand
    (`init_optimizer_state`), so the step allocates what every later step does.
    """

    def run(fn):
        if memory:
            return cpu_memory_window(fn)
        fn()
        return -1, 0

    losses, first, peaks = {}, {}, {}
    for t in trainers.values():
        init_optimizer_state(t)
    for name, t in trainers.items():
        first[name] = run(lambda t=t, name=name: losses.__setitem__(name, float(t.training_step(t.model, batch))))
    a, b = trainers["alignctl"].model, trainers["trl"].model
    diff = norm = 0.0
    for (pname, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        if (pa.grad is None) != (pb.grad is None):
            raise SystemExit(f"{pname}: only one trainer produced a gradient")
        if pa.grad is not None:
            diff += float((pa.grad - pb.grad).double().pow(2).sum())
            norm += float(pb.grad.double().pow(2).sum())
    for name, t in trainers.items():
        peak2, _ = run(lambda t=t: (t.optimizer.step(), t.optimizer.zero_grad()))
        peak1, net1 = first[name]
        peaks[name] = max(peak1, net1 + peak2) if memory else -1
    return losses, (diff / norm) ** 0.5 if norm > 0 else float("nan"), peaks


def top_ops(trainer, batch, n: int = 18) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(trainer, batch)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=n)


# --------------------------------------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out_dir:
        trainers, batch = make_trainers(args, out_dir)
        rows, tokens = batch["input_ids"].shape
        completion = int(batch["completion_mask"][:, 1:].sum())
        print(f"model: GPT2LMHeadModel n_layer={args.n_layer} n_embd={args.n_embd} vocab={args.vocab} float32, "
              f"{sum(p.numel() for p in trainers['trl'].model.parameters()) / 1e6:.1f}M parameters; "
              f"batch: {rows} rows x {tokens} tokens ({args.pairs} pairs), {completion} completion targets; "
              f"optimizer: {type(trainers['trl'].optimizer).__name__}"
              f"(fused={trainers['trl'].optimizer.defaults.get('fused')}) lr={args.lr}; "
              f"threads={torch.get_num_threads()}", flush=True)  # fmt: skip

        t0 = time.perf_counter()
        losses, grad_rel, peaks = warmup(trainers, batch, memory=not args.no_memory)
        print(f"warm-up step{'' if args.no_memory else ' (memory-profiled)'}, identical weights: loss "
              f"alignctl={losses['alignctl']:.6f} trl={losses['trl']:.6f}; gradients' relative L2 difference "
              f"{grad_rel:.2e} ({time.perf_counter() - t0:.0f} s for both)", flush=True)  # fmt: skip

        # The loss check on a policy that differs from the reference: TRL's after its warm-up step, scored by
        # alignctl's compute_loss here and by TRL's own training_step in round 1 (nothing touches it in between).
        with torch.no_grad():
            moved = {"alignctl": float(trainers["alignctl"].compute_loss(trainers["trl"].model, batch))}
        times = {name: [] for name in TRAINERS}
        with OtherLoad() as load:
            for r in range(args.rounds):
                order = TRAINERS if r % 2 == 0 else TRAINERS[::-1]
                for name in order:
                    t0 = time.perf_counter()
                    loss = step(trainers[name], batch)
                    times[name].append(time.perf_counter() - t0)
                    if r == 0 and name == "trl":
                        moved["trl"] = loss
                print(f"round {r + 1}/{args.rounds}: " + "  ".join(f"{n} {times[n][-1]:.2f} s" for n in TRAINERS),
                      flush=True)  # fmt: skip
        if moved.get("trl") is not None:
            print(f"loss of TRL's policy after one step, scored by both: alignctl={moved['alignctl']:.6f} "
                  f"trl={moved['trl']:.6f} |diff|={abs(moved['alignctl'] - moved['trl']):.2e}")  # fmt: skip
        if load.share is not None:
            print(f"other processes used {100 * load.share:.0f}% of the machine's CPU time during the timed rounds")
            if load.share > 0.05:
                print("WARNING: the machine was not idle; timings are inflated and noisy (the ratios less so)")

        if args.profile:
            for name in TRAINERS:
                print(f"\n--- {name}: one step, top ops by self CPU time ---\n{top_ops(trainers[name], batch)}")

    result = {
        "n_layer": args.n_layer, "n_embd": args.n_embd, "vocab": args.vocab, "rows": rows, "tokens": tokens, "threads": torch.get_num_threads(),
        "rounds": args.rounds, "other_load": load.share, "grad_rel_diff": grad_rel,
        "loss_after_step": [moved.get(name, float("nan")) for name in TRAINERS],
        "trainers": {
            name: {"seconds_median": statistics.median(times[name]), "seconds_min": min(times[name]),
                   "seconds": times[name], "peak_bytes": peaks[name], "warmup_loss": losses[name]}
            for name in TRAINERS
        },
    }  # fmt: skip
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


def report(result: dict) -> None:
    a, t = result["trainers"]["alignctl"], result["trainers"]["trl"]
    mem = a["peak_bytes"] >= 0 and t["peak_bytes"] > 0

    def mib(x: int) -> str:
        return f"{x / 2**20:.1f}" if x >= 0 else "-"

    print(f"\nOne DPO step ({result['rows']} rows x {result['tokens']} tokens, n_layer={result['n_layer']}, "
          f"{result['threads']} threads, {result['rounds']} interleaved rounds)")  # fmt: skip
    print(f"{'trainer':9s} {'median s':>9s} {'min s':>8s} {'peak MiB':>10s} {'warm-up loss':>13s}")
    for name, r in (("alignctl", a), ("trl", t)):
        print(f"{name:9s} {r['seconds_median']:9.2f} {r['seconds_min']:8.2f} {mib(r['peak_bytes']):>10s} "
              f"{r['warmup_loss']:13.6f}")  # fmt: skip
    time_ratio, min_ratio = a["seconds_median"] / t["seconds_median"], a["seconds_min"] / t["seconds_min"]
    mem_ratio = a["peak_bytes"] / t["peak_bytes"] if mem else float("nan")
    print(f"{'ratio':9s} {time_ratio:9.2f} {min_ratio:8.2f} {mem_ratio:10.2f}   (alignctl / trl)")
    per_round = [x / y for x, y in zip(a["seconds"], t["seconds"])]
    print(f"per-round time ratios (alignctl / trl, the two steps of a round run back to back): "
          f"{' '.join(f'{r:.2f}' for r in per_round)}; median {statistics.median(per_round):.2f}")  # fmt: skip
    print(f"targets: time <= 1.0 x trl (median): {'met' if time_ratio <= 1.0 else 'NOT met'} ({time_ratio:.2f} x); "
          f"peak memory <= trl: " + (f"{'met' if mem_ratio <= 1.0 else 'NOT met'} ({mem_ratio:.2f} x)" if mem
                                     else "not measured (--no-memory)"))  # fmt: skip
    moved = result["loss_after_step"]
    loss_ok = max(abs(a["warmup_loss"] - t["warmup_loss"]), abs(moved[0] - moved[1])) <= 1e-4
    print(f"same loss on the batch (|diff| <= 1e-4): {'yes' if loss_ok else 'NO'} (identical weights: "
          f"{a['warmup_loss']:.6f} vs {t['warmup_loss']:.6f}; one policy after a step: {moved[0]:.6f} vs "
          f"{moved[1]:.6f}); gradients' relative L2 difference {result['grad_rel_diff']:.1e}")


if __name__ == "__main__":
    main()
