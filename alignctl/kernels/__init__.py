"""Fused per-token log-probs, entropy and divergence from hidden states and an LM head.

    >>> out = token_logprobs_and_divergence(hidden, lm_head.weight, targets,
    ...                                     ref_hidden=ref_hidden, ref_weight=ref_head.weight,
    ...                                     divergence="forward_kl")
    >>> out.logprobs, out.ref_logprobs, out.divergence, out.entropy    # each [N], float32

The head of each model is the map z = softcap((h W^T + b) * logit_scale) / temperature, softcap(u) = c tanh(u / c)
(bias: e.g. Phi, GPT-J; logit_scale: Cohere, Granite; softcap: Gemma-2), the order of the HF forwards, with TRL's
sampling temperature last. `token_logprobs_and_divergence_from_logits` is the same math on full logits, for a model
whose head is not such a map (model.kernel=naive).

Implementations (`impl`):

* "reference": plain PyTorch on the full [N, V] logits, the readable definition (`reference.py`);
* "chunked": PyTorch over [row_chunk, vocab_chunk] tiles with an online log-sum-exp and a backward that recomputes
  each tile; never holds a full [N, V] tensor; on CPU the vocabulary chunks are shared among
  `torch.get_num_threads()` worker threads with one intra-op thread each, which keeps it fast when another process
  holds a core (`chunked.py`);
* "triton": the same tiling with the per-tile folds in Triton kernels, for CUDA (`triton.py`; on CPU tensors only
  under TRITON_INTERPRET=1, which is how it is tested without a GPU);
* "auto": "triton" for CUDA tensors when Triton is installed, "chunked" otherwise.

Bias, logit scale and softcap are applied to each tile by the shared tiled driver, so "chunked" and "triton" support
all of them.

The divergence follows `alignctl.divergences` (D_f(p || q), p = policy, q = reference): reverse_kl = KL(p||q),
forward_kl = KL(q||p), js = KL(p||m) + KL(q||m), alpha = (sum p^(1-a) q^a - 1) / (a (a - 1)).
"""

from __future__ import annotations

import torch

from alignctl.divergences import Divergence

from .chunked import Spec, TokenStatsFunction, TorchTiles
from .reference import (
    TokenStats,
    compute_dtype,
    head_logits,
    reference_from_logits,
    reference_token_logprobs_and_divergence,
    resolve_divergence,
)

__all__ = [
    "IMPLS",
    "TokenStats",
    "head_logits",
    "token_logprobs_and_divergence",
    "token_logprobs_and_divergence_from_logits",
]

IMPLS = ("auto", "reference", "chunked", "triton")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def token_logprobs_and_divergence(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ref_hidden: torch.Tensor | None = None,
    ref_weight: torch.Tensor | None = None,
    divergence: str | Divergence | None = "reverse_kl",
    alpha: float = 0.5,
    impl: str = "auto",
    temperature: float = 1.0,
    ignore_index: int = -100,
    row_chunk: int | None = None,
    vocab_chunk: int | None = None,
    *,
    bias: torch.Tensor | None = None,
    ref_bias: torch.Tensor | None = None,
    logit_scale: float = 1.0,
    ref_logit_scale: float = 1.0,
    softcap: float | None = None,
    ref_softcap: float | None = None,
) -> TokenStats:
    """Per-token target log-probs (policy and reference), divergence and policy entropy.

    Args:
        hidden: [N, d] policy hidden states (any leading shape [..., d]; outputs then have shape [...]).
        weight: [V, d] policy LM head weight.
        targets: [N] target token ids; rows equal to `ignore_index` are masked: outputs 0, no gradient.
        ref_hidden: [N, d_ref] reference hidden states, or None for no reference.
        ref_weight: [V, d_ref] reference LM head; None with a `ref_hidden` means the policy head (detached), with
            the policy's bias, logit_scale and softcap.
        divergence: "reverse_kl", "forward_kl", "js", "alpha", a `Divergence`, or None / "none" for none.
        alpha: the alpha of divergence="alpha", in (0, 1) (alignctl.divergences convention).
        impl: "auto", "reference", "chunked" or "triton" (see the module docstring).
        temperature: divides the logits of both models.
        ignore_index: target value of masked rows.
        row_chunk, vocab_chunk: tile shape for "chunked" / "triton" (defaults tuned per implementation).
        bias, ref_bias: [V] bias of each head (same dtype as its weight), or None.
        logit_scale, ref_logit_scale: positive multiplier of each model's logits (Cohere's logit_scale,
            1 / Granite's logits_scaling), applied after the bias and before the softcap.
        softcap, ref_softcap: c > 0 of each model's final softcap z -> c tanh(z / c), or None.

    Returns:
        TokenStats(logprobs, ref_logprobs, divergence, entropy), each float32 [N] (float64 for float64 inputs);
        ref_logprobs is None without a reference, divergence None without a reference or with divergence=None.
        Autograd reaches `hidden`, `weight` and `bias` through logprobs, divergence and entropy; the reference side
        never gets a gradient. fp16/bf16 inputs are accumulated in fp32; their gradients come back in their own dtype.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is not one of {', '.join(IMPLS)}")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature={temperature!r} must be a positive number")
    spec_div = resolve_divergence(divergence, alpha)

    lead_shape = hidden.shape[:-1]
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1)
    _check_map("logit_scale", logit_scale, "softcap", softcap)
    _check_map("ref_logit_scale", ref_logit_scale, "ref_softcap", ref_softcap)
    ref_head_given = ref_bias is not None or ref_logit_scale != 1.0 or ref_softcap is not None
    if ref_hidden is not None:
        ref_hidden = ref_hidden.reshape(-1, ref_hidden.shape[-1])
        if ref_weight is None:
            if ref_head_given:
                raise ValueError("ref_bias, ref_logit_scale and ref_softcap describe a reference head: give ref_weight")
            ref_weight, ref_bias, ref_logit_scale, ref_softcap = weight, bias, logit_scale, softcap
        ref_hidden, ref_weight = ref_hidden.detach(), ref_weight.detach()
        ref_bias = ref_bias.detach() if ref_bias is not None else None
    elif ref_weight is not None or ref_head_given:
        raise ValueError("ref_weight, ref_bias, ref_logit_scale or ref_softcap was given without ref_hidden")
    _check(hidden, weight, targets, ref_hidden, ref_weight, ignore_index)
    _check_bias("bias", bias, weight)
    if ref_hidden is not None:
        _check_bias("ref_bias", ref_bias, ref_weight)
    maps = dict(bias=bias, ref_bias=ref_bias, logit_scale=float(logit_scale), ref_logit_scale=float(ref_logit_scale),
                softcap=softcap, ref_softcap=ref_softcap)  # fmt: skip

    if impl == "auto":
        impl = "triton" if hidden.is_cuda and _triton_module().available(hidden.device) else "chunked"

    if impl == "reference":
        out = reference_token_logprobs_and_divergence(
            hidden, weight, targets, ref_hidden, ref_weight, spec_div, temperature, ignore_index, **maps
        )
    else:
        out = _tiled(hidden, weight, targets, ref_hidden, ref_weight, spec_div, impl, temperature, ignore_index,
                     row_chunk, vocab_chunk, **maps)  # fmt: skip
    if len(lead_shape) != 1:
        out = TokenStats(*(x.reshape(lead_shape) if x is not None else None for x in out))
    return out


def token_logprobs_and_divergence_from_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ref_logits: torch.Tensor | None = None,
    divergence: str | Divergence | None = "reverse_kl",
    alpha: float = 0.5,
    temperature: float = 1.0,
    ignore_index: int = -100,
) -> TokenStats:
    """`token_logprobs_and_divergence` on full logits: the plain reference math, for any model's own `.logits`.

    Args:
        logits: [N, V] policy logits (any leading shape [..., V]; outputs then have shape [...]), any float dtype.
        targets: [N] target token ids, `ignore_index` for masked rows.
        ref_logits: [N, V] reference logits (never differentiated), or None.
        divergence, alpha, temperature, ignore_index: as in `token_logprobs_and_divergence`.

    Returns:
        TokenStats as `token_logprobs_and_divergence`; autograd reaches `logits`. Holds several [N, V] temporaries.
    """
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature={temperature!r} must be a positive number")
    spec_div = resolve_divergence(divergence, alpha)
    lead_shape = logits.shape[:-1]
    logits = logits.reshape(-1, logits.shape[-1])
    targets = targets.reshape(-1)
    if logits.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"logits must be float16/bfloat16/float32/float64, got {logits.dtype}")
    if targets.shape[0] != logits.shape[0]:
        raise ValueError(f"targets has {targets.shape[0]} entries for {logits.shape[0]} rows of logits")
    if ref_logits is not None:
        ref_logits = ref_logits.reshape(-1, ref_logits.shape[-1])
        if ref_logits.shape != logits.shape:
            raise ValueError(f"ref_logits must be {list(logits.shape)}, got {list(ref_logits.shape)}")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer token ids, got {targets.dtype}")
    vocab = logits.shape[1]
    if bool(((targets != ignore_index) & ((targets < 0) | (targets >= vocab))).any()):
        raise ValueError(f"targets must lie in [0, {vocab}) or equal ignore_index={ignore_index}")
    out = reference_from_logits(logits, targets, ref_logits, spec_div, temperature, ignore_index)
    if len(lead_shape) != 1:
        out = TokenStats(*(x.reshape(lead_shape) if x is not None else None for x in out))
    return out


def _check_map(scale_name: str, scale, cap_name: str, cap) -> None:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (0 < scale < float("inf")):
        raise ValueError(f"{scale_name}={scale!r} must be a positive finite number")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap < float("inf")):
        raise ValueError(f"{cap_name}={cap!r} must be None or a positive finite number")


def _check_bias(name: str, bias: torch.Tensor | None, weight: torch.Tensor) -> None:
    if bias is None:
        return
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"{name} must be [{weight.shape[0]}], got {list(bias.shape)}")
    if bias.dtype != weight.dtype or bias.device != weight.device:
        raise TypeError(f"{name} must share its weight's dtype and device, got {bias.dtype} on {bias.device}")


def _triton_module():
    from . import triton as triton_impl  # triton: optional, CUDA-only, and slow to import

    return triton_impl


def _check(hidden, weight, targets, ref_hidden, ref_weight, ignore_index) -> None:
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"weight must be [V, {hidden.shape[1]}], got {list(weight.shape)}")
    if targets.shape[0] != hidden.shape[0]:
        raise ValueError(f"targets has {targets.shape[0]} entries for {hidden.shape[0]} hidden rows")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer token ids, got {targets.dtype}")
    pairs = [("hidden/weight", hidden, weight)]
    if ref_hidden is not None:
        if ref_hidden.shape[0] != hidden.shape[0]:
            raise ValueError(f"ref_hidden has {ref_hidden.shape[0]} rows for {hidden.shape[0]} hidden rows")
        if ref_weight.dim() != 2 or ref_weight.shape != (weight.shape[0], ref_hidden.shape[1]):
            raise ValueError(
                f"ref_weight must be [{weight.shape[0]}, {ref_hidden.shape[1]}], got {list(ref_weight.shape)}"
            )
        pairs.append(("ref_hidden/ref_weight", ref_hidden, ref_weight))
    for name, h, w in pairs:
        if h.dtype not in _FLOAT_DTYPES or h.dtype != w.dtype:
            raise TypeError(f"{name} must share one of float16/bfloat16/float32/float64, got {h.dtype}/{w.dtype}")
        if h.device != hidden.device or w.device != hidden.device or targets.device != hidden.device:
            raise ValueError("all tensors must be on one device")
    vocab = weight.shape[0]
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= vocab))
    if bool(bad.any()):
        raise ValueError(f"targets must lie in [0, {vocab}) or equal ignore_index={ignore_index}")


def _tiled(hidden, weight, targets, ref_hidden, ref_weight, spec_div, impl, temperature, ignore_index,
           row_chunk, vocab_chunk, bias, ref_bias, logit_scale, ref_logit_scale, softcap, ref_softcap) -> TokenStats:
    if impl == "triton":
        triton_impl = _triton_module()
        reason = triton_impl.unavailable_reason(hidden.device)
        if reason is not None:
            raise RuntimeError(f"impl='triton' is not usable here: {reason}")
        tiles = triton_impl.TritonTiles(hidden.device)
    else:
        tiles = TorchTiles()
    has_ref = ref_hidden is not None
    spec = Spec.make(spec_div, has_ref, temperature, row_chunk or tiles.row_chunk, vocab_chunk or tiles.vocab_chunk,
                     logit_scale, softcap, ref_logit_scale, ref_softcap)  # fmt: skip
    if spec.row_chunk < 1 or spec.vocab_chunk < 1:
        raise ValueError("row_chunk and vocab_chunk must be positive")

    n = hidden.shape[0]
    dtype = compute_dtype(hidden)
    valid = targets != ignore_index
    n_valid = int(valid.sum())
    if n_valid == 0:
        # Nothing to compute; zeros still connected to the graph so that backward() gives zero gradients.
        anchor = hidden[:0].to(dtype).sum() + weight[:0].to(dtype).sum()
        if bias is not None:
            anchor = anchor + bias[:0].to(dtype).sum()
        zeros = torch.zeros(n, dtype=dtype, device=hidden.device)
        return TokenStats(
            logprobs=zeros + anchor,
            ref_logprobs=zeros.clone() if has_ref else None,
            divergence=zeros + anchor if spec.kind != "none" else None,
            entropy=zeros + anchor,
        )

    index = None
    if n_valid < n:  # masked rows are dropped before the GEMMs, and their outputs scattered back as zeros
        index = valid.nonzero().squeeze(1)
        hidden, targets = hidden.index_select(0, index), targets.index_select(0, index)
        if has_ref:
            ref_hidden = ref_hidden.index_select(0, index)

    logprobs, ref_logprobs, div, entropy = TokenStatsFunction.apply(
        hidden, weight, bias, targets, ref_hidden, ref_weight, ref_bias, spec, tiles
    )

    def scatter(x: torch.Tensor) -> torch.Tensor:
        if index is None:
            return x
        return torch.zeros(n, dtype=x.dtype, device=x.device).index_copy(0, index, x)

    return TokenStats(
        logprobs=scatter(logprobs),
        ref_logprobs=scatter(ref_logprobs) if has_ref else None,
        divergence=scatter(div) if spec.kind != "none" else None,
        entropy=scatter(entropy),
    )
