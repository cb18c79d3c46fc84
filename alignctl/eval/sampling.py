"""Sampling completions and scoring sequences with a policy and a reference model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignctl.kernels import token_logprobs_and_divergence


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
    texts: list[str] = []
    rows: list[tuple[list[int], list[int]]] = []
    step = max(1, batch_size // n)
    for start in range(0, len(prompts), step):
        chunk = prompts[start : start + step]
        enc = tokenizer(chunk, return_tensors="pt", padding=True)
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        prompt_len = enc["input_ids"].shape[1]
        for i, seq in enumerate(out):
            prompt_ids = enc["input_ids"][i // n][enc["attention_mask"][i // n].bool()].tolist()
            completion = _until_eos(seq[prompt_len:].tolist(), tokenizer.eos_token_id)
            rows.append((prompt_ids, completion))
            texts.append(tokenizer.decode(completion, skip_special_tokens=True))
    repeated = [p for p in prompts for _ in range(n)]
    return Samples(repeated, texts, pad_left(rows, tokenizer.pad_token_id))


def _until_eos(ids: list[int], eos: int) -> list[int]:
    """The completion up to and including the first EOS (the model chose to stop: that choice is scored)."""
    return ids[: ids.index(eos) + 1] if eos in ids else ids


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


@dataclass
class SequenceScores:
    policy_logps: torch.Tensor  # [B] sum of completion-token log-probs under the policy
    ref_logps: torch.Tensor  # [B] same under the reference
    token_kl: torch.Tensor  # [B, T-1] KL(pi || pi_ref) over the full vocabulary at each completion position
    entropy: torch.Tensor  # [B, T-1] policy entropy at each completion position
    mask: torch.Tensor  # [B, T-1] completion positions (targets shifted by one)


@torch.no_grad()
def score(policy: PreTrainedModel, reference: PreTrainedModel, batch: Batch, batch_size: int) -> SequenceScores:
    """Log-probs of both models, per-token KL(pi || pi_ref) and entropy, without [tokens, vocab] logits."""
    parts = [_score_rows(policy, reference, _rows(batch, s, batch_size)) for s in range(0, len(batch.input_ids), batch_size)]
    return SequenceScores(*(torch.cat(tensors) for tensors in zip(*(vars(p).values() for p in parts))))


def _rows(batch: Batch, start: int, size: int) -> Batch:
    sl = slice(start, start + size)
    return Batch(batch.input_ids[sl], batch.attention_mask[sl], batch.completion_mask[sl])


def _hidden(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
    # Positions count real tokens only, as in generate, so left padding does not shift them.
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=position_ids)
    return out.last_hidden_state[:, :-1]


def _score_rows(policy: PreTrainedModel, reference: PreTrainedModel, batch: Batch) -> SequenceScores:
    mask = batch.completion_mask[:, 1:].bool()
    targets = batch.input_ids[:, 1:].masked_fill(~mask, -100)
    hidden, ref_hidden = _hidden(policy, batch), _hidden(reference, batch)
    d = hidden.shape[-1]
    out = token_logprobs_and_divergence(
        hidden.reshape(-1, d),
        policy.get_output_embeddings().weight,
        targets.reshape(-1),
        ref_hidden=ref_hidden.reshape(-1, d),
        ref_weight=reference.get_output_embeddings().weight,
        divergence="reverse_kl",
    )
    shape = targets.shape
    return SequenceScores(
        policy_logps=out.logprobs.view(shape).sum(1),
        ref_logps=out.ref_logprobs.view(shape).sum(1),
        token_kl=out.divergence.view(shape),
        entropy=out.entropy.view(shape),
        mask=mask,
    )
