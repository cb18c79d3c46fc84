#!/usr/bin/env python
"""One GRPO step (generation + scoring + loss + backward + optimizer), alignctl's OnlineTrainer vs TRL's GRPOTrainer,
side by side in one process, split into generation time and the rest.

Problem (defaults; every size is a flag): a Llama-shaped `LlamaForCausalLM` with random weights from a config and a
fixed seed (vocab 32000 = Llama-2's, hidden 256, 4 layers, 4 heads, MLP 688, untied head; 19.6M parameters, 16.4M
of them the embedding and the LM head), float32 on CPU, saved to a temporary folder and loaded from there by each
trainer (TRL builds its reference model from the policy's folder); `--arch gpt2` gives a GPT2LMHeadModel of the same
width, depth and vocabulary (dropout off). A word-level tokenizer whose word "t<i>" is id i (EOS = pad = the last id),
`--prompts` 4 fixed prompts of `--prompt-len` 16 random words each (seeded), `--num-generations` 4 completions each,
i.e. 16 completions of up to `--completion-len` 32 tokens per step. Reward (the same function for both, through
`alignctl.trainers.online.trl_reward` for alignctl, as alignctl.run.train does): the share of odd digits among the
completion text's characters, deterministic and different within a group.

Contenders, with the same GRPOConfig (num_generations, per_device_train_batch_size = prompts x num_generations,
max_completion_length, temperature 1.0, top_k 0, loss_type "dapo" (TRL's and alignctl's default), epsilon_high 0.28
(alignctl's train.clip_high default), beta, learning rate, seed, bf16 False, AdamW(fused) as Trainer builds it):

* alignctl: `alignctl.trainers.online.OnlineTrainer` as `alignctl.run.train.online_trainer` builds it for
  objective=grpo: hyperparameters {"divergence_coef": --beta, "kl_estimator": "exact"}, `--divergence` reverse_kl
  (default: TRL's k3 with beta = divergence_coef and TRL's reference model; alignctl adds nothing to the loss) or none
  (beta 0 in both, no reference model). Its completions are drawn by the row-seeded sampler
  (alignctl/trainers/sampling.py, alignctl/models/row_seeded.py).
* trl: `trl.GRPOTrainer` as it is (beta = --beta for reverse_kl, 0 for none): completions drawn by generate's
  multinomial from the process RNG.

The two draw different completions (different samplers), so their losses differ; what is compared is the time of
the same work: the same number of completions of the same length (printed: mean completion length per trainer).

What is timed (wall clock), one "step", as in scripts/bench_dpo_step.py:

    trainer.training_step(trainer.model, rows, None)   # TRL's _prepare_inputs: generate + score, then compute_loss
    trainer.optimizer.step(); trainer.optimizer.zero_grad()   # and backward
    trainer.state.global_step += 1                     # (the row-seeded noise is keyed by it; Trainer's loop does it)

`rows` is the generation batch TRL's sampler gives a step: each prompt's row repeated num_generations times. The
step is split by timing wrappers put on the trainer instance (the same for both; they only read the clock):
generation = TRL's `_generate` (prompt tokenization, `generate` with alignctl's sampler in alignctl's case, decoding),
scoring = the rest of `_generate_and_score_completions` (rewards, the reference model's log-probs for reverse_kl,
advantages), loss = `compute_loss` (the policy forward with gradient, the loss), and backward + optimizer = the rest
of the step. alignctl's generation time is further split: "of which sampler" is the time inside
`RowSeededSampler.__call__` (the Gumbel-max draw, once per generated token).

Threads: 1 by default, as alignctl trains (train.num_threads=1: on the 2-core machine tiny models train much faster
on one thread, and each of the ~20 elementwise ops per generated token that the row-seeded sampler runs would
otherwise end in a two-thread barrier, which a busy neighbour stalls); `--threads 2` for the other setting.

Order: one untimed warm-up step each (first-call costs), then `--rounds` timed rounds, alignctl first in odd rounds
and TRL first in even ones; reported: per trainer and part, the median over the rounds; the ratio alignctl / TRL
per part and in total; and the target (total step time <= 1.0 x TRL's) met or not. No time is asserted anywhere.

    python scripts/bench_online_step.py                 # defaults above: 7 rounds, 1 thread, ~2 minutes (shared machine)
    python scripts/bench_online_step.py --threads 2 --rounds 9
    python scripts/bench_online_step.py --vocab 151936 --rounds 5     # a Qwen2.5-sized vocabulary, ~3 minutes
    python scripts/bench_online_step.py --divergence none
    python scripts/bench_online_step.py --profile       # also: top ops of one profiled step per trainer
    python scripts/bench_online_step.py --vocab 512 --hidden 32 --layers 1 --rounds 1 --completion-len 4  # smoke

Writes bench/online_step.json (--out): the set-up, per trainer every round's seconds per part and their medians, the
ratios, the targets, the mean completion length and reward, and the load from other processes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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

from bench_dpo_step import make_tokenizer  # noqa: E402  (the word-level tokenizer: "t<i>" is id i)
from bench_kernels import OtherLoad  # noqa: E402

TRAINERS = ("alignctl", "trl")
TARGETS = {"total": 1.0}  # alignctl's median step time <= 1.0 x TRL's


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=("llama", "gpt2"), default="llama")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=None, help="MLP width (default: llama 2.6875 x hidden, gpt2 4x)")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--num-generations", type=int, default=4, help="completions per prompt (GRPO's group size)")
    p.add_argument("--prompt-len", type=int, default=16, help="words (= tokens) per prompt")
    p.add_argument("--completion-len", type=int, default=32, help="max_completion_length")
    p.add_argument("--divergence", choices=("reverse_kl", "none"), default="reverse_kl")
    p.add_argument("--beta", type=float, default=0.01, help="TRL's beta = alignctl's divergence_coef (reverse_kl)")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--rounds", type=int, default=7, help="interleaved timed rounds after one warm-up step each")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (1: alignctl's train.num_threads default)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true", help="print the top ops (self CPU time) of one step each")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "online_step.json")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.num_generations < 2:
        p.error("--num-generations must be at least 2 (GRPO's group-normalised advantages)")
    if args.intermediate is None:
        args.intermediate = 4 * args.hidden if args.arch == "gpt2" else int(2.6875 * args.hidden)
    return args


# --------------------------------------------------------------------------------------------------------- set-up


def make_model(args):
    torch.manual_seed(args.seed)
    eos = args.vocab - 1
    if args.arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(vocab_size=args.vocab, n_positions=max(64, args.prompt_len + args.completion_len),
                            n_embd=args.hidden, n_layer=args.layers, n_head=args.heads, n_inner=args.intermediate,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eos, eos_token_id=eos,
                            pad_token_id=eos)  # fmt: skip
        return GPT2LMHeadModel(config).float()
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, num_key_value_heads=args.heads,
                         intermediate_size=args.intermediate, max_position_embeddings=max(64, args.prompt_len + args.completion_len),
                         tie_word_embeddings=False, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)  # fmt: skip
    return LlamaForCausalLM(config).float()


def make_prompts(args) -> list[str]:
    g = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(0, args.vocab - 1, (args.prompts, args.prompt_len), generator=g)
    return [" ".join(f"t{i}" for i in row.tolist()) for row in ids]


def odd_digit_share(prompts: list[str], completions: list[str]) -> list[float]:
    """The reward: the share of odd digits among a completion's characters (deterministic, varies within a group)."""
    return [sum(c in "13579" for c in text) / max(1, len(text)) for text in completions]


def trl_reward_func(prompts, completions, **_):
    """The same reward as TRL reward function (TRL passes extra columns as keywords)."""
    return odd_digit_share(list(prompts), list(completions))


def grpo_config(args, out_dir: str, beta: float):
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=args.prompts * args.num_generations,
        num_generations=args.num_generations,
        max_completion_length=args.completion_len,
        temperature=1.0,
        top_k=0,
        loss_type="dapo",
        epsilon_high=0.28,
        beta=beta,
        learning_rate=args.lr,
        seed=args.seed,
        data_seed=args.seed,
        report_to=[],
        use_cpu=True,
        bf16=False,  # GRPOConfig defaults to bf16 autocast, also on CPU; float32 throughout (alignctl.run.train on CPU)
        fp16=False,
        dataloader_num_workers=0,
        save_strategy="no",
        disable_tqdm=True,
    )


def make_trainers(args, model_dir: str, out_dir: str, prompts: list[str]) -> dict:
    import datasets
    from transformers import AutoModelForCausalLM
    from trl import GRPOTrainer

    from alignctl import divergences
    from alignctl.objectives import grpo
    from alignctl.trainers.online import OnlineTrainer, trl_reward

    tokenizer = make_tokenizer(args.vocab)
    dataset = datasets.Dataset.from_dict({"prompt": prompts})
    beta = args.beta if args.divergence == "reverse_kl" else 0.0
    trainers = {
        # as alignctl.run.train.online_trainer builds it (no LoRA, no callbacks, no stored pi_0 samples for these
        # divergences); setup_divergence sets the config's beta from divergence_coef
        "alignctl": OnlineTrainer(
            model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=trl_reward(odd_digit_share, "odd"),
            args=grpo_config(args, f"{out_dir}/alignctl", beta=0.0), train_dataset=dataset, processing_class=tokenizer,
            objective=grpo.OBJECTIVE, hyperparameters={"divergence_coef": args.beta, "kl_estimator": "exact"},
            divergence=divergences.get(args.divergence) if args.divergence != "none" else None, kernel="fused",
        ),
        "trl": GRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=trl_reward_func,
            args=grpo_config(args, f"{out_dir}/trl", beta=beta), train_dataset=dataset, processing_class=tokenizer,
        ),
    }
    betas = {name: t.beta for name, t in trainers.items()}
    refs = {name: t.ref_model is not None for name, t in trainers.items()}
    if len(set(betas.values())) != 1 or len(set(refs.values())) != 1:
        raise SystemExit(f"the trainers differ in beta or reference model: {betas} {refs}")
    for t in trainers.values():
        t.create_optimizer()
        t.current_gradient_accumulation_steps = 1  # what Trainer's loop sets for each step (no accumulation)
    a, b = (dict(t.model.named_parameters()) for t in trainers.values())
    if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
        raise SystemExit("the two policies do not start from the same weights")
    return trainers


# --------------------------------------------------------------------------------------------------------- timing


class StepClock:
    """Seconds spent in the wrapped methods of one trainer during the current step (reset by `step`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, owner, name: str, label: str) -> None:
        """Time calls of the method `name` of the trainer `owner`: an instance attribute that shadows its class's."""
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                with torch.profiler.record_function(f"bench::{label}"):  # a labelled region for --profile
                    return inner(*a, **k)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t0

        setattr(owner, name, timed)


@contextlib.contextmanager
def clocks_on(trainers: dict):
    """A StepClock per trainer, on its generation, generate-and-score and compute_loss methods (instance attributes),
    and on RowSeededSampler.__call__ for alignctl's (the class's method, put back on exit)."""
    from alignctl.models.row_seeded import RowSeededSampler

    clocks = {}
    for name, t in trainers.items():
        clock = clocks[name] = StepClock()
        clock.wrap(t, "_generate", "generation")
        clock.wrap(t, "_generate_and_score_completions", "generate_and_score")
        clock.wrap(t, "compute_loss", "loss")
    # only alignctl's trainer calls the row-seeded sampler: its time inside it, per step
    clock = clocks["alignctl"]
    inner = RowSeededSampler.__call__

    def timed_call(self, *a, **k):
        t0 = time.perf_counter()
        try:
            with torch.profiler.record_function("bench::sampler"):
                return inner(self, *a, **k)
        finally:
            clock.seconds["sampler"] = clock.seconds.get("sampler", 0.0) + time.perf_counter() - t0

    RowSeededSampler.__call__ = timed_call
    try:
        yield clocks
    finally:
        RowSeededSampler.__call__ = inner


def generation_rows(prompts: list[str], num_generations: int) -> list[dict]:
    """A step's generation batch as TRL's RepeatSampler gives it: each prompt's row num_generations times in a row."""
    return [{"prompt": p} for p in prompts for _ in range(num_generations)]


def step(trainer, clock: StepClock, rows: list[dict]) -> dict:
    """One optimisation step (see the module docstring); its seconds per part, and the loss."""
    clock.seconds = {}
    t0 = time.perf_counter()
    loss = trainer.training_step(trainer.model, rows, None)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()
    total = time.perf_counter() - t0
    trainer.state.global_step += 1
    s = clock.seconds
    parts = {
        "generation": s.get("generation", 0.0),
        "scoring": s.get("generate_and_score", 0.0) - s.get("generation", 0.0),
        "loss": s.get("loss", 0.0),
        "backward_optimizer": total - s.get("generate_and_score", 0.0) - s.get("loss", 0.0),
    }
    return {**parts, "rest": total - parts["generation"], "sampler": s.get("sampler", 0.0), "total": total,
            "loss_value": float(loss)}  # fmt: skip


def top_ops(trainer, clock, rows, n: int = 20) -> str:
    """One profiled step: the labelled parts (CPU total, children included), then the top ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(trainer, clock, rows)
    events = prof.key_averages()
    parts = [e for e in events if e.key.startswith("bench::")]
    lines = [f"  {e.key[7:]:28s} {e.cpu_time_total / 1e6:8.3f} s CPU total, {e.count} calls" for e in parts]
    return "\n".join(lines) + "\n" + events.table(sort_by="self_cpu_time_total", row_limit=n)


# --------------------------------------------------------------------------------------------------------- main


# A step's parts: generation + rest = total, rest = scoring + loss + backward_optimizer; "sampler" is inside alignctl's
# generation (0 for TRL's)
COLUMNS = ("generation", "sampler", "rest", "scoring", "loss", "backward_optimizer", "total")


def quiet() -> None:
    """No progress bars for saving and loading the model, no deprecation notices from transformers' own calls."""
    import warnings

    from transformers.utils import logging

    logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet()
    prompts = make_prompts(args)
    rows = generation_rows(prompts, args.num_generations)
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(args)
        params = sum(p.numel() for p in model.parameters())
        model.save_pretrained(f"{tmp}/model")
        del model
        trainers = make_trainers(args, f"{tmp}/model", tmp, prompts)
        print(f"model: {args.arch} vocab={args.vocab} hidden={args.hidden} layers={args.layers} heads={args.heads} "
              f"intermediate={args.intermediate} float32, {params / 1e6:.2f}M parameters; step: {args.prompts} prompts "
              f"x {args.num_generations} completions of <= {args.completion_len} tokens, prompt {args.prompt_len} "
              f"tokens; divergence={args.divergence} beta={trainers['trl'].beta} loss_type=dapo; "
              f"threads={torch.get_num_threads()}", flush=True)  # fmt: skip
        with clocks_on(trainers) as clocks:
            times, load = measure(args, trainers, clocks, rows)
        metrics = {name: trainers[name]._metrics["train"] for name in TRAINERS}
        completion = {name: statistics.mean(m["completions/mean_length"]) for name, m in metrics.items()}
        reward = {name: statistics.mean(m["reward"]) for name, m in metrics.items()}
        del trainers

    medians = {name: {k: statistics.median(s[k] for s in times[name]) for k in COLUMNS} for name in TRAINERS}
    ratios = {k: ratio(medians["alignctl"][k], medians["trl"][k]) for k in COLUMNS if k != "sampler"}
    per_round = [ratio(a["total"], t["total"]) for a, t in zip(times["alignctl"], times["trl"])]
    result = {
        "arch": args.arch, "vocab": args.vocab, "hidden": args.hidden, "layers": args.layers, "heads": args.heads,
        "intermediate": args.intermediate, "parameters": params, "prompts": args.prompts,
        "num_generations": args.num_generations, "prompt_len": args.prompt_len, "completion_len": args.completion_len,
        "divergence": args.divergence, "beta": args.beta if args.divergence == "reverse_kl" else 0.0,
        "threads": torch.get_num_threads(), "rounds": args.rounds, "other_load": load,
        "trainers": {name: {"median": medians[name], "rounds": times[name], "mean_completion_length": completion[name],
                            "mean_reward": reward[name]} for name in TRAINERS},
        "ratios": ratios, "per_round_total_ratios": per_round, "median_per_round_total_ratio": statistics.median(per_round),
        "sampler_share_of_alignctl_generation": ratio(medians["alignctl"]["sampler"], medians["alignctl"]["generation"]),
        "targets": {k: {"max_ratio": v, "ratio": ratios[k], "met": ratios[k] <= v} for k, v in TARGETS.items()},
    }  # fmt: skip
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


def measure(args, trainers: dict, clocks: dict, rows: list[dict]) -> tuple[dict, float | None]:
    """A warm-up step each, then the interleaved timed rounds (and with --profile one profiled step each); returns
    each trainer's per-round seconds per part and the share of CPU time other processes took during the rounds."""
    t0 = time.perf_counter()
    warm = {name: step(t, clocks[name], rows) for name, t in trainers.items()}
    print(f"warm-up step each ({time.perf_counter() - t0:.1f} s for both): loss "
          + " ".join(f"{n}={warm[n]['loss_value']:.6f}" for n in TRAINERS), flush=True)  # fmt: skip
    times = {name: [] for name in TRAINERS}
    with OtherLoad() as load:
        for r in range(args.rounds):
            for name in TRAINERS if r % 2 == 0 else TRAINERS[::-1]:
                times[name].append(step(trainers[name], clocks[name], rows))
            print(f"round {r + 1}/{args.rounds}: " + "  ".join(
                f"{n} {times[n][-1]['total']:.2f} s (generation {times[n][-1]['generation']:.2f})" for n in TRAINERS),
                flush=True)  # fmt: skip
    if args.profile:
        for name in TRAINERS:
            print(f"\n--- {name}: one profiled step: its parts (CPU time, children included), then the top ops by self "
                  f"CPU time ---\n{top_ops(trainers[name], clocks[name], rows)}")  # fmt: skip
    return times, load.share


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def report(result: dict) -> None:
    n = result["prompts"] * result["num_generations"]
    print(f"\nOne GRPO step ({n} completions of <= {result['completion_len']} tokens, {result['arch']} "
          f"vocab={result['vocab']} hidden={result['hidden']} layers={result['layers']}, threads={result['threads']}, "
          f"{result['rounds']} interleaved rounds): median seconds per part")  # fmt: skip
    header = ["trainer", "generation", "sampler", "rest", "scoring", "loss", "bwd+opt", "total"]
    print(f"{header[0]:9s}" + "".join(f"{h:>11s}" for h in header[1:]))
    for name in TRAINERS:
        m = result["trainers"][name]["median"]
        cells = [f"{m[k]:.3f}" if not (k == "sampler" and name == "trl") else "-" for k in COLUMNS]
        print(f"{name:9s}" + "".join(f"{c:>11s}" for c in cells))
    r = result["ratios"]
    print(f"{'ratio':9s}" + "".join(f"{('-' if k == 'sampler' else f'{r[k]:.2f}'):>11s}" for k in COLUMNS)
          + "   (alignctl / trl)")  # fmt: skip
    print(f"alignctl's sampler (RowSeededSampler.__call__): {100 * result['sampler_share_of_alignctl_generation']:.0f}% "
          f"of its generation time; rest = scoring + loss + backward + optimizer")  # fmt: skip
    print("per-round total ratios (alignctl / trl, the two steps of a round run back to back): "
          + " ".join(f"{x:.2f}" for x in result["per_round_total_ratios"])
          + f"; median {result['median_per_round_total_ratio']:.2f}")  # fmt: skip
    lengths = " ".join(f"{name} {result['trainers'][name]['mean_completion_length']:.1f}" for name in TRAINERS)
    rewards = " ".join(f"{name} {result['trainers'][name]['mean_reward']:.4f}" for name in TRAINERS)
    print(f"mean completion length (tokens): {lengths}; mean reward: {rewards} (different samplers: different "
          f"completions)")  # fmt: skip
    for k, t in result["targets"].items():
        print(f"target: {k} step time <= {t['max_ratio']:.1f} x trl (median): {'met' if t['met'] else 'NOT met'} "
              f"({t['ratio']:.2f} x)")  # fmt: skip
    if result["other_load"] is not None:
        print(f"other processes used {100 * result['other_load']:.0f}% of the machine's CPU time during the timed rounds")
        if result["other_load"] > 0.05:
            print("WARNING: the machine was not idle; timings are inflated and noisy (the ratios less so)")


if __name__ == "__main__":
    main()
