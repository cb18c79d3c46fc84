"""Per-sequence statistics of completions under a policy (and a reference), through alignctl.kernels.

Two paths, chosen by model.kernel:

* fused: the decoder's last hidden states and the model's LM head as a map (`alignctl.models.heads.Head`: weight,
  bias, logit scale, softcap) go through the tiled kernels; only completion positions are projected and no
  [tokens, vocab] logits are ever held. Right only for heads `describe_head` can describe, so `resolve_kernel`
  checks each model once at load time;
* naive: the model's own forward logits (whatever its architecture does after the decoder) through the plain
  reference math (`alignctl.kernels.token_logprobs_and_divergence_from_logits`): correct for any causal LM.

The policy and the reference may be different models (each scored with its own head).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch
from rich.console import Console
from transformers import PreTrainedModel

from alignctl.divergences import Divergence
from alignctl.kernels import token_logprobs_and_divergence, token_logprobs_and_divergence_from_logits
from alignctl.models.heads import (
    Head,
    causal_lm,
    decoder_hidden,
    describe_head,
    model_logits,
    positions_from_mask,
    verify_head,
)
from alignctl.models.schema import KERNELS

console = Console(stderr=True)


@dataclass
class SequenceStats:
    """All [B]; sums run over completion tokens (targets shifted by one, as in causal LM training)."""

    logps: torch.Tensor  # sum of log pi(y_t | s_t)
    lengths: torch.Tensor  # number of completion tokens
    entropy: torch.Tensor  # sum of the policy's full-vocabulary entropy
    ref_logps: torch.Tensor | None = None  # sum of log pi_ref(y_t | s_t)
    divergence: torch.Tensor | None = None  # sum of D_f(pi || pi_ref) over the full vocabulary


def resolve_kernel(model: PreTrainedModel, kernel: str) -> str:
    """The model.kernel to score `model` with, decided once at load time.

    "naive" stays "naive". "fused" stays "fused" when `describe_head` describes the model's LM head and
    `verify_head` confirms it against the model's own forward; otherwise one line on stderr says why and "naive"
    (the model's own logits, right for any architecture) is returned. Call it for the policy and for a separate
    reference model, and score both with "naive" if either needs it (one kernel path covers both models).
    """
    if kernel not in KERNELS:
        raise ValueError(f"model.kernel={kernel!r} is not one of {', '.join(KERNELS)}")
    if kernel == "naive":
        return kernel
    head = describe_head(model)
    reason = head if isinstance(head, str) else verify_head(model, head)
    if reason is None:
        return kernel
    try:
        name = type(causal_lm(model)).__name__
    except (TypeError, ValueError):
        name = type(model).__name__
    console.print(
        f"alignctl: model.kernel=fused cannot score {name} ({reason}); using model.kernel=naive",
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    return "naive"


def _fused_head(model: PreTrainedModel) -> Head:
    head = describe_head(model)
    if isinstance(head, str):
        raise ValueError(
            f"model.kernel=fused cannot score {type(model).__name__} ({head}); use model.kernel=naive "
            "(alignctl.models.scoring.resolve_kernel picks it at load time)"
        )
    return head


def _kernel_args(head: Head, prefix: str = "") -> dict:
    return {
        f"{prefix}bias": head.bias,
        f"{prefix}logit_scale": head.logit_scale,
        f"{prefix}softcap": head.softcap,
    }


def sequence_stats(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    reference: PreTrainedModel | None = None,
    divergence: Divergence | None = None,
    kernel: str = "fused",
    reference_context: Callable[[], ContextManager] = contextlib.nullcontext,
) -> SequenceStats:
    """Sequence sums of log-probs, entropy and (with a reference) the per-token divergence along each completion.

    `reference_context()` is entered around the reference's forward (e.g. a PeftModel's `disable_adapter` when the
    reference is the policy with its adapter off). Only the policy gets gradients.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is not one of {', '.join(KERNELS)}")
    mask = completion_mask[:, 1:].bool()
    rows = mask.nonzero(as_tuple=True)[0]  # which sequence each completion token belongs to
    targets = input_ids[:, 1:][mask]
    positions = positions_from_mask(attention_mask)
    div_name = divergence.name if (divergence is not None and reference is not None) else None
    alpha = divergence.alpha if divergence is not None and divergence.alpha is not None else 0.5

    if kernel == "fused":
        head = _fused_head(model)
        hidden = decoder_hidden(model, input_ids, attention_mask, positions)[:, :-1][mask]
        ref_hidden, ref_args = None, {}
        if reference is not None:
            with torch.no_grad(), reference_context():
                ref_head = _fused_head(reference)
                ref_hidden = decoder_hidden(reference, input_ids, attention_mask, positions)[:, :-1][mask]
            ref_args = {"ref_weight": ref_head.weight, **_kernel_args(ref_head, "ref_")}
        out = token_logprobs_and_divergence(
            hidden, head.weight, targets, ref_hidden=ref_hidden, divergence=div_name, alpha=alpha, impl="auto",
            **_kernel_args(head), **ref_args,
        )  # fmt: skip
    else:
        logits = model_logits(model, input_ids, attention_mask, positions)[:, :-1][mask]
        ref_logits = None
        if reference is not None:
            with torch.no_grad(), reference_context():
                ref_logits = model_logits(reference, input_ids, attention_mask, positions)[:, :-1][mask]
        out = token_logprobs_and_divergence_from_logits(logits, targets, ref_logits, divergence=div_name, alpha=alpha)
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
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is not one of {', '.join(KERNELS)}")
    mask = completion_mask[:, 1:].bool()
    targets = input_ids[:, 1:][mask]
    positions = positions_from_mask(attention_mask)
    if kernel == "fused":
        head = _fused_head(model)
        hidden = decoder_hidden(model, input_ids, attention_mask, positions)[:, :-1][mask]
        out = token_logprobs_and_divergence(hidden, head.weight, targets, divergence=None, **_kernel_args(head))
    else:
        logits = model_logits(model, input_ids, attention_mask, positions)[:, :-1][mask]
        out = token_logprobs_and_divergence_from_logits(logits, targets, divergence=None)
    return out.logprobs
