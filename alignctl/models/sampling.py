"""Sampling completions and scoring sequences with a policy and a reference model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignctl.divergences import Divergence
from alignctl.divergences import get as get_divergence
from alignctl.models.row_seeded import RowSeededSampler, row_seeded
from alignctl.models.scoring import SequenceStats, sequence_stats

REVERSE_KL = get_divergence("reverse_kl")
EVAL_STEP = -1  # the step key of sample_rows' noise (training steps are >= 0): eval never reuses a training draw
BUILD_STEP = -2  # the step key of the data builders' samples (alignctl.data.tasks.tiny_lm.sample_continuations)


@dataclass
class Batch:
    """Left-padded prompt + completion token ids with the completion positions marked."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    completion_mask: torch.Tensor  # [B, T], 1 on completion tokens


@dataclass
class Samples:
    prompts: list[str]  # one per sample (prompts repeated n times, grouped by prompt)
    completions: list[str]
    batch: Batch


@torch.no_grad()
def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    n: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    batch_size: int,
) -> Samples:
    """n completions per prompt (ancestral sampling: top_k=0, top_p=1), seeded, batched."""
    tokenizer.padding_side = "left"
    torch.manual_seed(seed)
    rows: list[tuple[list[int], list[int]]] = []
    step = max(1, batch_size // n)
    for start in range(0, len(prompts), step):
        rows += _generate(model, tokenizer, prompts[start : start + step], n, max_new_tokens, temperature)
    texts = [tokenizer.decode(completion, skip_special_tokens=True) for _, completion in rows]
    repeated = [p for p in prompts for _ in range(n)]
    return Samples(repeated, texts, pad_left(rows, tokenizer.pad_token_id))


@torch.no_grad()
def sample_rows(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    n: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    batch_size: int,
    by_length: bool = True,
) -> Samples:
    """n completions per prompt (ancestral, temperature applied), completion j of prompt i drawn with noise keyed by
    (seed, i * n + j, position) (alignctl.models.row_seeded): the same completions however the prompts are grouped
    into batches, ordered or padded. by_length: batches of prompts of similar token length, which wastes less
    compute on padding; the result is in the prompts' order either way. The caller's RNG state is left as it was."""
    rows = draw_rows(model, tokenizer, prompts, n, max_new_tokens, temperature, seed, batch_size, by_length=by_length)
    return samples_from_rows(tokenizer, prompts, n, rows)


@torch.no_grad()
def draw_rows(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    n: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    batch_size: int,
    by_length: bool = True,
    step: int = EVAL_STEP,
    on_batch: Callable[[int], object] | None = None,
) -> list[tuple[list[int], list[int]]]:
    """The (prompt ids, completion ids up to and including EOS) rows of :func:`sample_rows`, n per prompt in the
    prompts' order. step: the noise's step key (eval's by default; the data builders pass their own, so a dataset
    and an eval never share a draw). on_batch(k): called after each generate() call with its k sequences."""
    tokenizer.padding_side = "left"
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]] if prompts else []
    order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i)) if by_length else list(range(len(prompts)))
    drawn: dict[int, list[tuple[list[int], list[int]]]] = {}  # prompt index -> its n (prompt ids, completion ids)
    per_call = max(1, batch_size // n)
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for start in range(0, len(order), per_call):
            chunk = order[start : start + per_call]
            rows = torch.tensor([i * n + j for i in chunk for j in range(n)], dtype=torch.int64)
            sampler = RowSeededSampler(seed, step, temperature=temperature, rows=rows)
            with row_seeded(model, sampler):  # the sampler applies the temperature
                got = _generate(model, tokenizer, [prompts[i] for i in chunk], n, max_new_tokens, temperature=1.0)
            drawn |= {i: got[k * n : (k + 1) * n] for k, i in enumerate(chunk)}
            if on_batch is not None:
                on_batch(len(got))
    return [row for i in range(len(prompts)) for row in drawn[i]]


def samples_from_rows(tokenizer, prompts: list[str], n: int, rows: list[tuple[list[int], list[int]]]) -> Samples:
    """Samples from (prompt ids, completion ids) rows, n per prompt in the prompts' order (whichever sampler drew
    them): prompts repeated, completions decoded, the padded batch to score (None when there is no row)."""
    texts = [tokenizer.decode(completion, skip_special_tokens=True) for _, completion in rows]
    repeated = [p for p in prompts for _ in range(n)]
    return Samples(repeated, texts, pad_left(rows, tokenizer.pad_token_id) if rows else None)


def _generate(model, tokenizer, prompts: list[str], n: int, max_new_tokens: int, temperature: float):
    """One generate() call: n ancestral samples per prompt (top_k=0, top_p=1), as (prompt ids, completion ids up to
    and including EOS) rows, prompt by prompt."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)  # a trainer's model may be on a GPU
    out = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                         max_new_tokens=max_new_tokens, num_return_sequences=n, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    prompt_len = enc["input_ids"].shape[1]
    rows = []
    for i, seq in enumerate(out):
        prompt_ids = enc["input_ids"][i // n][enc["attention_mask"][i // n].bool()].tolist()
        rows.append((prompt_ids, _until_eos(seq[prompt_len:].tolist(), tokenizer.eos_token_id)))
    return rows


def _until_eos(ids: list[int], eos: int) -> list[int]:
    """The completion up to and including the first EOS (the model chose to stop: that choice is scored)."""
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def split_at_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of prompt + completion + EOS, cut where the tokens of the prompt alone stop
    matching (a merge across the boundary goes to the completion), as TRL's DPOTrainer does."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    eos = "" if completion.endswith(tokenizer.eos_token) else tokenizer.eos_token
    full = tokenizer(prompt + completion + eos)["input_ids"]
    cut = next((i for i, (a, b) in enumerate(zip(prompt_ids, full)) if a != b), min(len(prompt_ids), len(full)))
    return full[:cut], full[cut:]


def tokenize_rows(tokenizer: PreTrainedTokenizerBase, rows: list[tuple[str, str]]) -> Batch:
    """(prompt, completion) texts as one left-padded batch, each split at its prompt as TRL's DPOTrainer does."""
    return pad_left([split_at_prompt(tokenizer, prompt, completion) for prompt, completion in rows],
                    tokenizer.pad_token_id)  # fmt: skip


def pad_left(rows: list[tuple[list[int], list[int]]], pad_id: int) -> Batch:
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    completion = torch.zeros_like(ids)
    for i, (p, c) in enumerate(rows):
        seq = p + c
        ids[i, width - len(seq) :] = torch.tensor(seq)
        attention[i, width - len(seq) :] = 1
        completion[i, width - len(c) :] = 1 if c else 0
    return Batch(ids, attention, completion)


@torch.no_grad()
def score(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    batch: Batch,
    batch_size: int,
    kernel: str = "fused",
    divergence: Divergence = REVERSE_KL,
) -> SequenceStats:
    """Both models' log-probs, the policy's entropy and a divergence (default KL(pi || pi_ref)) along each completion."""
    parts = []
    for start in range(0, len(batch.input_ids), batch_size):
        sl = slice(start, start + batch_size)
        parts.append(
            sequence_stats(
                policy, batch.input_ids[sl], batch.attention_mask[sl], batch.completion_mask[sl],
                reference=reference, divergence=divergence, kernel=kernel,
            )
        )
    return SequenceStats(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(SequenceStats)))
