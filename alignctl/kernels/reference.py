"""Readable definition of `token_logprobs_and_divergence`: plain PyTorch on the full `[N, V]` logits.

The math runs on logits (`reference_from_logits`: what model.kernel=naive feeds a model's own forward logits to);
the hidden-states version is `head_logits` (the LM head as a map: bias, scale, softcap) followed by it. This is the
specification the chunked and Triton implementations are tested against. It materializes both models'
logits (and several `[N, V]` temporaries for autograd), so it is for tests, small sizes and the `naive` benchmark row.
The divergence itself comes from `alignctl.divergences.Divergence.token`, the project's one readable definition.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from alignctl.divergences import NAMES, Divergence
from alignctl.divergences import get as get_divergence


class TokenStats(NamedTuple):
    """Per-token outputs, all float32 (float64 for float64 inputs) of shape [N]; masked rows hold 0.

    logprobs: log p(target) under the policy (differentiable w.r.t. hidden and weight).
    ref_logprobs: log q(target) under the reference; None without a reference; never differentiable.
    divergence: D(p || q) between the full next-token distributions (alignctl.divergences convention);
        None without a reference or with divergence=None / "none". Gradient flows to the policy only.
    entropy: policy entropy -sum_v p_v log p_v (differentiable).
    """

    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor | None
    divergence: torch.Tensor | None
    entropy: torch.Tensor


def resolve_divergence(divergence: str | Divergence | None, alpha: float | None) -> Divergence | None:
    """`divergence` argument -> a Divergence, or None for log-probs only (None or "none")."""
    if divergence is None or isinstance(divergence, Divergence):
        return divergence
    if not isinstance(divergence, str):
        raise TypeError(f"divergence must be a name, a Divergence or None, not {type(divergence).__name__}")
    if divergence.lower() == "none":
        return None
    if divergence not in NAMES:
        raise ValueError(f"divergence={divergence!r} is not one of none, {', '.join(NAMES)}")
    return get_divergence(divergence, alpha)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64 (for gradcheck); everything else accumulates in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def head_logits(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    logit_scale: float = 1.0,
    softcap: float | None = None,
) -> torch.Tensor:
    """The LM head as a map, in the compute dtype: z = softcap((h W^T + b) * logit_scale), [..., V].

    softcap(u) = c tanh(u / c) (Gemma-2's final_logit_softcapping); the order is the one of the HF forwards (the
    head's bias, then Cohere's logit_scale, then Gemma's cap); a sampling temperature divides the result (TRL's
    order), see `reference_from_logits`.
    Low-precision inputs are widened before the product: bf16 x bf16 products are exact in fp32, so this is a GEMM
    with fp32 accumulation and fp32 output, like a tensor-core GEMM with out_dtype=float32.
    """
    dtype = compute_dtype(hidden)
    z = hidden.to(dtype) @ weight.to(dtype).T
    if bias is not None:
        z = z + bias.to(dtype)
    if logit_scale != 1.0:
        z = z * logit_scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    return z


def reference_from_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ref_logits: torch.Tensor | None,
    divergence: Divergence | None,
    temperature: float,
    ignore_index: int,
) -> TokenStats:
    """The definition on full logits [N, V] (and the reference's [N, V]); arguments already validated.

    Logits of any float dtype are widened to the compute dtype and divided by the temperature; the reference side
    is computed without gradient.
    """
    dtype = compute_dtype(logits)
    valid = targets != ignore_index
    safe_targets = torch.where(valid, targets, torch.zeros_like(targets)).unsqueeze(-1)

    logits = logits.to(dtype)
    logp = torch.log_softmax(logits / temperature if temperature != 1.0 else logits, dim=-1)
    logprobs = logp.gather(-1, safe_targets).squeeze(-1)
    p = logp.exp()
    entropy = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)

    ref_logprobs = token_divergence = None
    if ref_logits is not None:
        with torch.no_grad():
            ref_logits = ref_logits.detach().to(dtype)
            logq = torch.log_softmax(ref_logits / temperature if temperature != 1.0 else ref_logits, dim=-1)
            ref_logprobs = torch.where(valid, logq.gather(-1, safe_targets).squeeze(-1), 0.0)
        if divergence is not None:
            token_divergence = torch.where(valid, divergence.token(logp, logq).to(dtype), 0.0)

    return TokenStats(
        logprobs=torch.where(valid, logprobs, 0.0),
        ref_logprobs=ref_logprobs,
        divergence=token_divergence,
        entropy=torch.where(valid, entropy, 0.0),
    )


def reference_token_logprobs_and_divergence(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ref_hidden: torch.Tensor | None,
    ref_weight: torch.Tensor | None,
    divergence: Divergence | None,
    temperature: float,
    ignore_index: int,
    bias: torch.Tensor | None = None,
    ref_bias: torch.Tensor | None = None,
    logit_scale: float = 1.0,
    ref_logit_scale: float = 1.0,
    softcap: float | None = None,
    ref_softcap: float | None = None,
) -> TokenStats:
    """Full-logits definition from hidden states and heads: `head_logits` then `reference_from_logits`."""
    logits = head_logits(hidden, weight, bias, logit_scale, softcap)
    ref_logits = None
    if ref_hidden is not None:
        with torch.no_grad():
            ref_logits = head_logits(ref_hidden, ref_weight, ref_bias, ref_logit_scale, ref_softcap)
    return reference_from_logits(logits, targets, ref_logits, divergence, temperature, ignore_index)
