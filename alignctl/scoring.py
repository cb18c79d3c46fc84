"""Per-sequence statistics of completions under a policy (and a reference), through alignctl.kernels.

Only completion positions are projected through the LM head, and the kernel never holds [tokens, vocab]
logits (model.kernel=fused) unless asked for the plain reference path (model.kernel=naive).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from alignctl.divergences import Divergence
from alignctl.kernels import token_logprobs_and_divergence

KERNEL_IMPL = {"fused": "auto", "naive": "reference"}


@dataclass
class SequenceStats:
    """All [B]; sums run over completion tokens (targets shifted by one, as in causal LM training)."""

    logps: torch.Tensor  # sum of log pi(y_t | s_t)
    lengths: torch.Tensor  # number of completion tokens
    entropy: torch.Tensor  # sum of the policy's full-vocabulary entropy
    ref_logps: torch.Tensor | None = None  # sum of log pi_ref(y_t | s_t)
    divergence: torch.Tensor | None = None  # sum of D_f(pi || pi_ref) over the full vocabulary


def backbone_hidden(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden states [B, T, d] of the decoder, positions counted over real tokens (left padding safe)."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    return out.last_hidden_state


def sequence_stats(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    reference: PreTrainedModel | None = None,
    divergence: Divergence | None = None,
    kernel: str = "fused",
) -> SequenceStats:
    """Sequence sums of log-probs, entropy and (with a reference) the per-token divergence along each completion."""
    mask = completion_mask[:, 1:].bool()
    rows = mask.nonzero(as_tuple=True)[0]  # which sequence each completion token belongs to
    targets = input_ids[:, 1:][mask]
    hidden = backbone_hidden(model, input_ids, attention_mask)[:, :-1][mask]
    ref_hidden = ref_weight = None
    if reference is not None:
        with torch.no_grad():
            ref_hidden = backbone_hidden(reference, input_ids, attention_mask)[:, :-1][mask]
        ref_weight = reference.get_output_embeddings().weight
    out = token_logprobs_and_divergence(
        hidden,
        model.get_output_embeddings().weight,
        targets,
        ref_hidden=ref_hidden,
        ref_weight=ref_weight,
        divergence=divergence.name if (divergence is not None and reference is not None) else None,
        alpha=divergence.alpha if divergence is not None and divergence.alpha is not None else 0.5,
        impl=KERNEL_IMPL[kernel],
    )
    batch = input_ids.shape[0]

    def per_sequence(values: torch.Tensor | None) -> torch.Tensor | None:
        if values is None:
            return None
        return torch.zeros(batch, dtype=values.dtype, device=values.device).index_add(0, rows, values)

    return SequenceStats(
        logps=per_sequence(out.logprobs),
        lengths=mask.sum(1),
        entropy=per_sequence(out.entropy),
        ref_logps=per_sequence(out.ref_logprobs),
        divergence=per_sequence(out.divergence),
    )


def completion_token_logps(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    kernel: str = "fused",
) -> torch.Tensor:
    """Per-token log pi(y_t | s_t) of every completion token, flat [N] in row-major order of completion_mask[:, 1:]."""
    mask = completion_mask[:, 1:].bool()
    hidden = backbone_hidden(model, input_ids, attention_mask)[:, :-1][mask]
    out = token_logprobs_and_divergence(
        hidden, model.get_output_embeddings().weight, input_ids[:, 1:][mask], divergence=None, impl=KERNEL_IMPL[kernel]
    )
    return out.logprobs
