#!/usr/bin/env python
"""One training step of DPO, KTO or ORPO, alignctl's trainer vs TRL's own trainer, side by side in one process.

Problem: a GPT-2-small-shaped GPT2LMHeadModel (vocab 50257, n_embd 768, 12 layers, 12 heads; random weights from
a config with a fixed seed), float32 on CPU, and one batch of 8 pairs, each sequence 64 prompt + 192 completion
tokens (191 random ids + EOS), i.e. 16 rows x 256 tokens, 3072 completion tokens scored per model. Every objective
sees these same 16 sequences (KTO unpaired: the 8 chosen rows desirable, the 8 rejected ones undesirable).

`--objective` picks dpo (the default), kto, orpo, a comma-separated list, or `all` (= dpo,kto,orpo): the objectives
run one after another, each with its own pair of trainers (built, measured and freed before the next), and a
summary table closes the run. Contenders per objective (each trainer gets its own copies of the same weights: the
policy, and where the objective has one, a frozen reference = a second copy):

* dpo, alignctl: `alignctl.trainers.preference.PreferenceTrainer`, constructed as `alignctl.run.train.offline_trainer`
  does (objective `dpo`, hyperparameters {"beta": 0.1}, divergence None, kernel "fused" through
  `alignctl.models.scoring.resolve_kernel`, ref_model given): its compute_loss scores both models through
  `alignctl.models.scoring.sequence_stats` (fused chunked log-prob kernel on the completion positions, no [tokens, vocab]
  logits) and calls `alignctl.objectives.dpo.loss`;
  dpo, trl: `trl.DPOTrainer` as it is (its fused LM head, `ChunkedLogProbFunction`; on CPU it projects every position,
  prompt and padding included, 16 x 255 rows per model, and masks afterwards). Both take the same DPOConfig: beta 0.1,
  loss_type ["sigmoid"], precompute_ref_log_probs False (reference log-probs computed on the fly, in every step, by
  both). Both are fed the SAME collated batch (TRL's `DataCollatorForPreference`).
* kto, alignctl: `alignctl.trainers.binary.BinaryTrainer` (objective `kto`, hyperparameters {"beta": 0.1,
  "desirable_weight": 1.0, "undesirable_weight": 1.0}, DPOConfig with per_device_train_batch_size 16, ref_model
  given), as offline_trainer builds it; kto, trl: `trl.KTOTrainer` as it is (KTOConfig: loss_type "kto", the same
  beta and weights, precompute_ref_log_probs False, per_device_train_batch_size 16). Rows: 8 (prompt_i, chosen_i, True)
  then 8 (prompt_i, rejected_i, False); the completion text ends in EOS. Each step scores four [16, 256] batches:
  policy (with gradient), policy on the mismatched "KL" pairs (no gradient), and the reference on both. TRL fixes
  each row's mismatched completion when it prepares the data set (rotation by one within blocks of 16 rows);
  alignctl's `BinaryCollator` rotates the batch it is given: the script checks that alignctl's collator, on the same
  16 rows, gives exactly TRL's batch (KL_* columns included), and feeds TRL's collated batch to both (as
  tests/trainers/test_binary.py and tests/objectives/test_kto.py established the equality).
* orpo, alignctl: `PreferenceTrainer` with objective `orpo`, hyperparameters {"lam": 0.1}, no reference (alignctl
  sets precompute_ref_log_probs, and with no ref_model none is kept); orpo, trl: `trl.experimental.orpo.ORPOTrainer`
  as it is (ORPOConfig beta 0.1 = lam; a plain forward with full [16, 256, 50257] logits). The two trainers collate
  differently (alignctl: TRL's DataCollatorForPreference, chosen rows then rejected; TRL's ORPO: chosen_*/rejected_*
  columns with labels), so each gets its own trainer's collation of the same 8 pairs and the script checks that they
  hold the same token ids, attention and completion positions. Loss conventions (tests/objectives/test_orpo.py):
  the odds-ratio term lam * mean(-log sigmoid(log odds_w - log odds_l)) is the same in both; the SFT term is not:
  alignctl's is the mean over pairs of the chosen completion's token-mean NLL, TRL's one token mean pooled over the
  chosen half's prompt AND completion tokens. The two agree when the prompt is one token (never a target) and the
  chosen completions are equally long (they are, here): with `--prompt-len 1` the whole loss and the gradients are
  compared; otherwise the odds-ratio term is compared and both NLLs are printed.

Common to all: max_length 256, bf16=False (TRL's configs turn bf16 autocast on by default, also on CPU;
alignctl.run.train sets it off on CPU), dropout off (TRL's disable_dropout default, in both), the same learning rate,
seed, and TRL's default optimizer (`Trainer.create_optimizer()`: optim "adamw_torch_fused", i.e. torch
AdamW(fused=True), weight decay 0, the same parameter groups). The rows are random ids through a word-level
tokenizer whose word "t<i>" is id i, tokenized by each trainer's own dataset preparation; the script checks that
every trainer got exactly the intended ids.

What is timed (wall clock, `time.perf_counter`), one "step":

    loss = trainer.training_step(trainer.model, batch)   # model.train(); compute_loss (policy forward, reference
                                                          # forwards under no_grad, loss, logged metrics); backward
    trainer.optimizer.step()                              # AdamW update of all 124M policy parameters
    trainer.optimizer.zero_grad()                         # grads set to None, as Trainer does between steps

(Trainer's own loop would also clip the gradient norm and step the LR scheduler: left out, for both.)

Order, per objective: alignctl's loss terms are computed (no_grad) at the initial weights; AdamW's state is allocated
(an all-zero-gradient step, which leaves the weights exactly as they are). Then one untimed warm-up step each, from
identical weights (first-call costs), which also
* compares the two losses' terms (DPO: both exactly log 2, policy = reference; KTO: both 0.5, every log-ratio and z0
  being 0; ORPO: the odds-ratio term) and the two gradients (relative L2 difference over all parameters, both held at
  once before either optimizer steps; not comparable for ORPO unless --prompt-len 1);
* measures each step's peak memory (below).
Then `--rounds` timed rounds, alignctl first in odd rounds and TRL first in even ones (so that a drift in machine
load hits both alike); reported: the median and the min over the rounds, their ratios, and each round's ratio (the
two steps of a round run back to back, so a load change between rounds cancels in it). Before round 1, alignctl's
loss (no_grad, `objective_batch` + the objective's loss, i.e. its compute_loss) scores TRL's policy, which now
differs from the reference; TRL's own training_step scores the same policy in round 1; the compared terms must agree
to 1e-4 x max(1, |value|) (KTO: the loss and the reference point z0, TRL's logged "kl").

Peak memory: the warm-up step runs under the torch profiler with `profile_memory=True` (the method of
`peak_extra_bytes` in scripts/bench_kernels.py): the peak of the running total of CPU allocations minus frees during
the step (two windows, training_step and optimizer.step + zero_grad, combined; see `warmup`). It counts what the step
allocates (activations, the reference forwards, the LM-head tiles or logits, the parameter gradients: 475 MiB,
allocated in backward and freed by zero_grad; AdamW's temporaries), not what exists before it (weights, AdamW state),
which is the same for both. The profiler slows the step a little, so the measured step is never a timed one.

Targets, per objective: alignctl median step time <= 1.0 x TRL's; alignctl peak memory <= TRL's; the same loss.

    python scripts/bench_dpo_step.py                  # DPO: 5 rounds, 2 threads: 12 steps, ~10 min on an idle 2-core CPU
    python scripts/bench_dpo_step.py --objective all  # DPO, KTO and ORPO, one after another (~30 min idle)
    python scripts/bench_dpo_step.py --objective kto,orpo --rounds 3 --threads 1
    python scripts/bench_dpo_step.py --n-layer 2 --rounds 1 --no-memory      # smoke test, a few minutes
    python scripts/bench_dpo_step.py --objective orpo --prompt-len 1         # ORPO: the whole loss compared
    python scripts/bench_dpo_step.py --profile        # also: top ops of one profiled step per trainer

Writes bench/<objective>_step.json per objective (bench/dpo_step.json for DPO; per trainer: step seconds, peak
bytes, warm-up loss; plus the load, the gradient difference and the loss terms of both).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_kernels import OtherLoad, cpu_memory_window  # noqa: E402

TRAINERS = ("alignctl", "trl")
OBJECTIVES = ("dpo", "kto", "orpo")
EOS = "<|endoftext|>"
BETA = 0.1  # DPO's and KTO's beta, ORPO's lam (TRL's ORPOConfig.beta): TRL's defaults, alignctl's too


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objective", default="dpo",
                   help="dpo, kto, orpo, a comma-separated list of them, or all (= dpo,kto,orpo)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds after one warm-up step each")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--pairs", type=int, default=8, help="preference pairs per batch (rows = 2 x pairs)")
    p.add_argument("--prompt-len", type=int, default=64, help="prompt tokens per sequence")
    p.add_argument("--completion-len", type=int, default=192, help="completion tokens per sequence (incl. EOS)")
    p.add_argument("--n-layer", type=int, default=12, help="GPT-2 layers (12 = GPT-2 small; fewer for a smoke test)")
    p.add_argument("--n-embd", type=int, default=768, help="width (768 = GPT-2 small; smaller for a smoke test)")
    p.add_argument("--vocab", type=int, default=50257, help="vocabulary (50257 = GPT-2's; smaller for a smoke test)")
    p.add_argument("--lr", type=float, default=1e-6, help="AdamW learning rate (TRL's DPO, KTO and ORPO default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-memory", action="store_true", help="do not profile the warm-up step for peak memory")
    p.add_argument("--profile", action="store_true", help="print the top ops (self CPU time) of one step each")
    p.add_argument("--out", default=None,
                   help="JSON output (default bench/<objective>_step.json); with several objectives it must contain "
                        "{objective}")  # fmt: skip
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    names = OBJECTIVES if args.objective == "all" else tuple(n.strip() for n in args.objective.split(","))
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown or not names:
        p.error(f"--objective: {', '.join(unknown) or 'none given'} not among {', '.join(OBJECTIVES)}, all")
    args.objectives = tuple(dict.fromkeys(names))
    if args.out is None:
        args.out = str(ROOT / "bench" / "{objective}_step.json")
    elif len(args.objectives) > 1 and "{objective}" not in str(args.out):
        p.error("--out must contain {objective} when several objectives run")
    return args


def out_path(args, objective: str) -> Path:
    return Path(str(args.out).replace("{objective}", objective))


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


def unpaired_rows(pairs):
    """KTO's rows from the pairs: (prompt_i, chosen_i, desirable) for every i, then (prompt_i, rejected_i,
    undesirable); the completion text ends in EOS (TRL's KTO would append it glued to the last word otherwise).
    Returns the data set and the intended (prompt ids, completion ids) per row."""
    from datasets import Dataset

    dataset, ids = pairs
    n = len(ids)
    rows = {
        "prompt": list(dataset["prompt"]) * 2,
        "completion": [c + " " + EOS for c in dataset["chosen"]] + [r + " " + EOS for r in dataset["rejected"]],
        "label": [True] * n + [False] * n,
    }
    return Dataset.from_dict(rows), [(p, c) for p, c, _ in ids] + [(p, r) for p, _, r in ids]


def common_config(args, out_dir: str, batch_size: int) -> dict:
    return dict(
        output_dir=out_dir,
        per_device_train_batch_size=batch_size,
        learning_rate=args.lr,
        max_length=args.prompt_len + args.completion_len,
        seed=args.seed,
        data_seed=args.seed,
        report_to=[],
        use_cpu=True,
        bf16=False,  # TRL's configs default to bf16 autocast, also on CPU; float32 throughout, as alignctl.run.train on CPU
        fp16=False,
        dataloader_num_workers=0,
        save_strategy="no",
        dataset_num_proc=None,
        disable_tqdm=True,
    )


def dpo_config(args, out_dir: str, batch_size: int | None = None):
    from trl import DPOConfig

    return DPOConfig(
        **common_config(args, out_dir, batch_size or args.pairs),
        beta=BETA,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=False,  # the reference forward runs in every step, in both trainers
    )


def kto_config(args, out_dir: str):
    from trl import KTOConfig

    return KTOConfig(
        **common_config(args, out_dir, 2 * args.pairs),
        beta=BETA,
        loss_type="kto",
        desirable_weight=1.0,
        undesirable_weight=1.0,
        precompute_ref_log_probs=False,  # reference log-probs (and the KL pairs') on the fly, as alignctl must
    )


def orpo_config(args, out_dir: str):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trl.experimental")
        from trl.experimental.orpo import ORPOConfig

    return ORPOConfig(**common_config(args, out_dir, args.pairs), beta=BETA, remove_unused_columns=False)


def copies(base, reference: bool = True):
    policy = copy.deepcopy(base).train()
    if not reference:
        return policy, None
    return policy, copy.deepcopy(base).eval().requires_grad_(False)  # as alignctl's load_causal_lm(trainable=False)


def fused_kernel(policy) -> str:
    from alignctl.models import scoring

    kernel = scoring.resolve_kernel(policy, "fused")  # as alignctl.run.train does at load time
    if kernel != "fused":
        raise SystemExit(f"alignctl would score this model with kernel={kernel!r}, not the fused kernel")
    return kernel


def check_pair_ids(name: str, trainer, ids) -> None:
    """TRL's pair tokenization (DPOTrainer's, which PreferenceTrainer keeps) gave the intended ids."""
    for i, (prompt, chosen, rejected) in enumerate(ids):
        row = trainer.train_dataset[i]
        if (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) != (prompt, chosen, rejected):
            raise SystemExit(f"{name}: row {i} was not tokenized to the intended ids")


def alignctl_trainer(cls, policy, reference, config, dataset, tokenizer, objective: str, hyperparameters: dict):
    """An alignctl trainer as alignctl.run.train.offline_trainer builds it: the objective, its hyperparameters, no
    divergence, the fused kernel."""
    from alignctl import objectives

    return cls(model=policy, ref_model=reference, args=config, train_dataset=dataset, processing_class=tokenizer,
               objective=objectives.get(objective), hyperparameters=hyperparameters, divergence=None,
               kernel=fused_kernel(policy))  # fmt: skip


def build_dpo(args, out_dir: str, base, tokenizer):
    from trl import DPOTrainer

    from alignctl.trainers.preference import PreferenceTrainer

    dataset, ids = make_rows(args, base.config.vocab_size)
    policy, reference = copies(base)

    class StepTrainer(PreferenceTrainer):
        # alignctl's DPO reads cached reference log-probs (alignctl.trainers.reference_cache) and frees the reference
        # model; kept here, so that on TRL's collated batch (no cached columns) it runs the reference forward in
        # every step, as TRL's DPOTrainer does with precompute_ref_log_probs=False: the same work in both.
        keeps_reference_model = True

    trainers = {"alignctl": alignctl_trainer(StepTrainer, policy, reference, dpo_config(args, f"{out_dir}/alignctl"),
                                             dataset, tokenizer, "dpo", {"beta": BETA})}  # fmt: skip
    policy, reference = copies(base)
    trainers["trl"] = DPOTrainer(model=policy, ref_model=reference, args=dpo_config(args, f"{out_dir}/trl"),
                                 train_dataset=dataset, processing_class=tokenizer)  # fmt: skip
    for name, trainer in trainers.items():
        check_pair_ids(name, trainer, ids)
    batch = trainers["trl"].data_collator([trainers["trl"].train_dataset[i] for i in range(args.pairs)])
    return trainers, {"alignctl": batch, "trl": batch}


def build_kto(args, out_dir: str, base, tokenizer):
    from trl import KTOTrainer

    from alignctl.trainers.binary import BinaryTrainer

    dataset, ids = unpaired_rows(make_rows(args, base.config.vocab_size))
    n = len(ids)
    policy, reference = copies(base)
    trainers = {"alignctl": alignctl_trainer(
        BinaryTrainer, policy, reference, dpo_config(args, f"{out_dir}/alignctl", batch_size=n), dataset, tokenizer,
        "kto", {"beta": BETA, "desirable_weight": 1.0, "undesirable_weight": 1.0})}  # fmt: skip
    policy, reference = copies(base)
    trainers["trl"] = KTOTrainer(model=policy, ref_model=reference, args=kto_config(args, f"{out_dir}/trl"),
                                 train_dataset=dataset, processing_class=tokenizer)  # fmt: skip
    for name, trainer in trainers.items():
        for i, (prompt, completion) in enumerate(ids):
            row = trainer.train_dataset[i]
            if (row["prompt_ids"], row["completion_ids"], row["label"]) != (prompt, completion, i < n // 2):
                raise SystemExit(f"{name}: row {i} was not tokenized to the intended ids")
    batch = trainers["trl"].data_collator([trainers["trl"].train_dataset[i] for i in range(n)])
    # alignctl's collator pairs each row with the previous row's completion within the batch it is given; TRL fixed
    # the same rotation at dataset time: on this batch (the first per_device_train_batch_size rows) they agree
    own = trainers["alignctl"].data_collator([trainers["alignctl"].train_dataset[i] for i in range(n)])
    keys = ("input_ids", "attention_mask", "completion_mask", "KL_input_ids", "KL_attention_mask",
            "KL_completion_mask", "label")  # fmt: skip
    if set(own) != set(batch) or not all(torch.equal(own[k], batch[k]) for k in keys):
        raise SystemExit(f"kto: alignctl's collator gave a batch other than TRL's ({sorted(own)} vs {sorted(batch)})")
    return trainers, {"alignctl": batch, "trl": batch}


def build_orpo(args, out_dir: str, base, tokenizer):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trl.experimental")
        from trl.experimental.orpo import ORPOTrainer

    from alignctl.trainers.preference import PreferenceTrainer

    dataset, ids = make_rows(args, base.config.vocab_size)
    policy, _ = copies(base, reference=False)
    trainers = {"alignctl": alignctl_trainer(PreferenceTrainer, policy, None, dpo_config(args, f"{out_dir}/alignctl"),
                                             dataset, tokenizer, "orpo", {"lam": BETA})}  # fmt: skip
    policy, _ = copies(base, reference=False)
    trainers["trl"] = ORPOTrainer(model=policy, args=orpo_config(args, f"{out_dir}/trl"), train_dataset=dataset,
                                  processing_class=tokenizer)  # fmt: skip
    a, t = trainers["alignctl"], trainers["trl"]
    if a.ref_model is not None:
        raise SystemExit("orpo: alignctl kept a reference model")
    check_pair_ids("alignctl", a, ids)
    for i, (prompt, chosen, rejected) in enumerate(ids):
        row = t.train_dataset[i]
        for side, completion in (("chosen", chosen), ("rejected", rejected)):
            if (row[f"{side}_input_ids"], row[f"{side}_labels"]) != (prompt + completion,
                                                                      [-100] * len(prompt) + completion):
                raise SystemExit(f"trl: row {i} ({side}) was not tokenized to the intended ids")
    batches = {
        "alignctl": a.data_collator([a.train_dataset[i] for i in range(args.pairs)]),
        "trl": t.data_collator([t.train_dataset[i] for i in range(args.pairs)]),
    }
    # the same sequences: alignctl's rows are the chosen ones then the rejected ones
    ours, theirs = batches["alignctl"], batches["trl"]
    same = {
        "input_ids": torch.cat([theirs["chosen_input_ids"], theirs["rejected_input_ids"]]),
        "attention_mask": torch.cat([theirs["chosen_attention_mask"], theirs["rejected_attention_mask"]]),
        "completion_mask": torch.cat([theirs["chosen_labels"], theirs["rejected_labels"]]).ne(-100).long(),
    }
    if not all(ours[k].shape == v.shape and torch.equal(ours[k], v.to(ours[k].dtype)) for k, v in same.items()):
        raise SystemExit("orpo: the two trainers' batches hold different sequences")
    return trainers, batches


BUILDERS = {"dpo": build_dpo, "kto": build_kto, "orpo": build_orpo}


def make_trainers(args, objective: str, out_dir: str) -> tuple[dict, dict]:
    """Both trainers of `objective` (each with its own policy and, where the objective reads one, its own frozen
    reference, all with the same weights) and the batch each is fed."""
    base = make_model(args)
    tokenizer = make_tokenizer(base.config.vocab_size)
    trainers, batches = BUILDERS[objective](args, out_dir, base, tokenizer)
    del base
    for trainer in trainers.values():
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # what Trainer's loop sets for each step (no accumulation)
    kinds = {name: type(t.optimizer).__name__ for name, t in trainers.items()}
    if len(set(kinds.values())) != 1:
        raise SystemExit(f"the trainers built different optimizers: {kinds}")
    return trainers, batches


# --------------------------------------------------------------------------------------------------------- loss terms


def compared_terms(objective: str, args) -> tuple[str, ...]:
    """The loss terms both trainers must agree on (see the module docstring for ORPO's NLL)."""
    if objective == "kto":
        return ("loss", "kl")
    if objective == "orpo":
        return ("loss", "nll", "ratio") if args.prompt_len == 1 else ("ratio",)
    return ("loss",)


def gradients_comparable(objective: str, args) -> bool:
    return objective != "orpo" or args.prompt_len == 1


def alignctl_terms(objective: str, trainer, model, batch) -> dict:
    """alignctl's loss of `model` on `batch` (no_grad; what its compute_loss computes) and its terms: KTO's
    reference point z0 ("kl"); ORPO's SFT term (the loss at lam = 0) and odds-ratio term (the rest)."""
    with torch.no_grad():
        stats, _ = trainer.objective_batch(model, batch)
        out = trainer.objective.loss(stats, divergence=trainer.divergence, **trainer.hyperparameters)
        terms = {"loss": float(out.losses.mean())}
        if objective == "kto":
            terms["kl"] = float(out.kl)
        if objective == "orpo":
            sft = trainer.objective.loss(stats, divergence=trainer.divergence, **{**trainer.hyperparameters, "lam": 0.0})
            terms["nll"] = float(sft.losses.mean())
            terms["ratio"] = terms["loss"] - terms["nll"]
    return terms


def trl_terms(objective: str, trainer, loss: float) -> dict:
    """TRL's loss from its training_step and the terms it logged for that step."""
    terms = {"loss": loss}
    if objective == "kto":
        terms["kl"] = trainer._metrics["train"]["kl"][-1]
    if objective == "orpo":
        terms["nll"] = trainer._stored_metrics["train"]["nll_loss"][-1]
        terms["ratio"] = loss - terms["nll"]
    return terms


def terms_diff(objective: str, args, a: dict, t: dict) -> float:
    """Largest |alignctl - trl| over the compared terms, relative to max(1, |trl|)."""
    return max(abs(a[k] - t[k]) / max(1.0, abs(t[k])) for k in compared_terms(objective, args))


def show_terms(terms: dict) -> str:
    return " ".join(f"{k}={v:.6f}" for k, v in terms.items())


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


def warmup(trainers: dict, batches: dict, memory: bool) -> tuple[dict, float, dict]:
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
        b = batches[name]
        first[name] = run(lambda t=t, b=b, name=name: losses.__setitem__(name, float(t.training_step(t.model, b))))
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
    """Runs every objective asked for; returns its result (one objective, as before) or {objective: result}."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {}
    for objective in args.objectives:
        results[objective] = run_objective(args, objective)
        gc.collect()
    if len(results) > 1:
        summary(results)
    return results[args.objectives[0]] if len(results) == 1 else results


def run_objective(args, objective: str) -> dict:
    with tempfile.TemporaryDirectory() as out_dir:
        trainers, batches = make_trainers(args, objective, out_dir)
        a_batch = batches["alignctl"]
        rows, tokens = a_batch["input_ids"].shape
        completion = int(a_batch["completion_mask"][:, 1:].sum())
        print(f"\n=== {objective} ===\nmodel: GPT2LMHeadModel n_layer={args.n_layer} n_embd={args.n_embd} "
              f"vocab={args.vocab} float32, "
              f"{sum(p.numel() for p in trainers['trl'].model.parameters()) / 1e6:.1f}M parameters; "
              f"batch: {rows} rows x {tokens} tokens ({args.pairs} pairs), {completion} completion targets; "
              f"optimizer: {type(trainers['trl'].optimizer).__name__}"
              f"(fused={trainers['trl'].optimizer.defaults.get('fused')}) lr={args.lr}; "
              f"threads={torch.get_num_threads()}", flush=True)  # fmt: skip

        terms = {"warmup": {"alignctl": alignctl_terms(objective, trainers["alignctl"], trainers["alignctl"].model,
                                                       a_batch)}}  # fmt: skip
        t0 = time.perf_counter()
        losses, grad_rel, peaks = warmup(trainers, batches, memory=not args.no_memory)
        terms["warmup"]["trl"] = trl_terms(objective, trainers["trl"], losses["trl"])
        comparable = gradients_comparable(objective, args)
        print(f"warm-up step{'' if args.no_memory else ' (memory-profiled)'}, identical weights: loss "
              f"alignctl={losses['alignctl']:.6f} trl={losses['trl']:.6f}; gradients' relative L2 difference "
              f"{grad_rel:.2e}{'' if comparable else ' (not comparable: the NLL terms differ)'} "
              f"({time.perf_counter() - t0:.0f} s for both)", flush=True)  # fmt: skip
        for name in TRAINERS:
            print(f"  warm-up terms {name:8s}: {show_terms(terms['warmup'][name])}")

        # The loss check on a policy that differs from the reference: TRL's after its warm-up step, scored by
        # alignctl (no_grad) here and by TRL's own training_step in round 1 (nothing touches it in between).
        terms["after_step"] = {"alignctl": alignctl_terms(objective, trainers["alignctl"], trainers["trl"].model,
                                                          a_batch)}  # fmt: skip
        times = {name: [] for name in TRAINERS}
        with OtherLoad() as load:
            for r in range(args.rounds):
                order = TRAINERS if r % 2 == 0 else TRAINERS[::-1]
                for name in order:
                    t0 = time.perf_counter()
                    loss = step(trainers[name], batches[name])
                    times[name].append(time.perf_counter() - t0)
                    if r == 0 and name == "trl":
                        terms["after_step"]["trl"] = trl_terms(objective, trainers["trl"], loss)
                print(f"round {r + 1}/{args.rounds}: " + "  ".join(f"{n} {times[n][-1]:.2f} s" for n in TRAINERS),
                      flush=True)  # fmt: skip
        moved = terms["after_step"]
        print(f"TRL's policy after one step, scored by both: alignctl {show_terms(moved['alignctl'])}; "
              f"trl {show_terms(moved['trl'])}")  # fmt: skip
        if load.share is not None:
            print(f"other processes used {100 * load.share:.0f}% of the machine's CPU time during the timed rounds")
            if load.share > 0.05:
                print("WARNING: the machine was not idle; timings are inflated and noisy (the ratios less so)")

        if args.profile:
            for name in TRAINERS:
                print(f"\n--- {name}: one step, top ops by self CPU time ---\n{top_ops(trainers[name], batches[name])}")
        del trainers, batches

    compared = compared_terms(objective, args)
    loss_diff = max(terms_diff(objective, args, terms[k]["alignctl"], terms[k]["trl"]) for k in terms)
    result = {
        "objective": objective, "n_layer": args.n_layer, "n_embd": args.n_embd, "vocab": args.vocab, "rows": rows,
        "tokens": tokens, "threads": torch.get_num_threads(), "rounds": args.rounds, "other_load": load.share,
        "grad_rel_diff": grad_rel, "grads_comparable": comparable,
        "loss_after_step": [moved[name]["loss"] for name in TRAINERS],
        "terms": terms, "compared_terms": list(compared), "loss_rel_diff": loss_diff, "same_loss": loss_diff <= 1e-4,
        "trainers": {
            name: {"seconds_median": statistics.median(times[name]), "seconds_min": min(times[name]),
                   "seconds": times[name], "peak_bytes": peaks[name], "warmup_loss": losses[name]}
            for name in TRAINERS
        },
    }  # fmt: skip
    report(result)
    out = out_path(args, objective)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


def mib(x: int) -> str:
    return f"{x / 2**20:.1f}" if x >= 0 else "-"


def ratios(result: dict) -> tuple[float, float, float, float]:
    """alignctl / trl: median time, min time, median of the per-round ratios, peak memory (nan if not measured)."""
    a, t = result["trainers"]["alignctl"], result["trainers"]["trl"]
    per_round = statistics.median(x / y for x, y in zip(a["seconds"], t["seconds"]))
    mem = a["peak_bytes"] / t["peak_bytes"] if a["peak_bytes"] >= 0 and t["peak_bytes"] > 0 else float("nan")
    return a["seconds_median"] / t["seconds_median"], a["seconds_min"] / t["seconds_min"], per_round, mem


def report(result: dict) -> None:
    a, t = result["trainers"]["alignctl"], result["trainers"]["trl"]
    mem = a["peak_bytes"] >= 0 and t["peak_bytes"] > 0
    objective = result.get("objective", "dpo")

    print(f"\nOne {objective.upper()} step ({result['rows']} rows x {result['tokens']} tokens, n_layer={result['n_layer']}, "
          f"{result['threads']} threads, {result['rounds']} interleaved rounds)")  # fmt: skip
    print(f"{'trainer':9s} {'median s':>9s} {'min s':>8s} {'peak MiB':>10s} {'warm-up loss':>13s}")
    for name, r in (("alignctl", a), ("trl", t)):
        print(f"{name:9s} {r['seconds_median']:9.2f} {r['seconds_min']:8.2f} {mib(r['peak_bytes']):>10s} "
              f"{r['warmup_loss']:13.6f}")  # fmt: skip
    time_ratio, min_ratio, _, mem_ratio = ratios(result)
    print(f"{'ratio':9s} {time_ratio:9.2f} {min_ratio:8.2f} {mem_ratio:10.2f}   (alignctl / trl)")
    per_round = [x / y for x, y in zip(a["seconds"], t["seconds"])]
    print(f"per-round time ratios (alignctl / trl, the two steps of a round run back to back): "
          f"{' '.join(f'{r:.2f}' for r in per_round)}; median {statistics.median(per_round):.2f}")  # fmt: skip
    print(f"targets: time <= 1.0 x trl (median): {'met' if time_ratio <= 1.0 else 'NOT met'} ({time_ratio:.2f} x); "
          f"peak memory <= trl: " + (f"{'met' if mem_ratio <= 1.0 else 'NOT met'} ({mem_ratio:.2f} x)" if mem
                                     else "not measured (--no-memory)"))  # fmt: skip
    terms, compared = result["terms"], result["compared_terms"]

    def pair(phase: str, k: str) -> str:
        return f"{terms[phase]['alignctl'][k]:.6f} vs {terms[phase]['trl'][k]:.6f}"

    checked = "; ".join(f"{k}: identical weights {pair('warmup', k)}, one policy after a step {pair('after_step', k)}"
                        for k in compared)  # fmt: skip
    grads = f"{result['grad_rel_diff']:.1e}" + ("" if result["grads_comparable"] else " (not comparable)")
    print(f"same loss on the batch ({'/'.join(compared)}, |diff| <= 1e-4 x max(1, |value|)): "
          f"{'yes' if result['same_loss'] else 'NO'} ({checked}); gradients' relative L2 difference {grads}")  # fmt: skip
    other = [k for k in terms["after_step"]["alignctl"] if k not in compared]
    if other:
        print("not compared (different conventions, see the module docstring): " + "; ".join(
            f"{k}: {pair('warmup', k)} (identical weights), {pair('after_step', k)} (after a step)" for k in other))  # fmt: skip


def summary(results: dict) -> None:
    print(f"\nSummary (alignctl / trl, each objective's trainers measured side by side; {len(results)} objectives "
          f"one after another)")  # fmt: skip
    print(f"{'objective':9s} {'alignctl s':>10s} {'trl s':>8s} {'x time':>7s} {'x round':>8s} {'alignctl MiB':>13s} "
          f"{'trl MiB':>9s} {'x mem':>6s} {'loss':>5s} {'load':>5s}")  # fmt: skip
    for objective, r in results.items():
        a, t = r["trainers"]["alignctl"], r["trainers"]["trl"]
        time_ratio, _, per_round, mem_ratio = ratios(r)
        load = f"{100 * r['other_load']:.0f}%" if r["other_load"] is not None else "-"
        print(f"{objective:9s} {a['seconds_median']:10.2f} {t['seconds_median']:8.2f} {time_ratio:7.2f} "
              f"{per_round:8.2f} {mib(a['peak_bytes']):>13s} {mib(t['peak_bytes']):>9s} {mem_ratio:6.2f} "
              f"{'same' if r['same_loss'] else 'DIFF':>5s} {load:>5s}")  # fmt: skip


if __name__ == "__main__":
    main()
