"""Fused per-token log-probs, entropy and divergence from hidden states and a bias-free LM head.

    >>> out = token_logprobs_and_divergence(hidden, lm_head.weight, targets,
    ...                                     ref_hidden=ref_hidden, ref_weight=ref_head.weight,
    ...                                     divergence="forward_kl")
    >>> out.logprobs, out.ref_logprobs, out.divergence, out.entropy    # each [N], float32

Implementations (`impl`):

* "reference": plain PyTorch on the full [N, V] logits, the readable definition (`reference.py`);
* "chunked": PyTorch over [row_chunk, vocab_chunk] tiles with an online log-sum-exp and a backward that recomputes
  each tile; never holds a full [N, V] tensor (`chunked.py`);
* "triton": the same tiling with the per-tile folds in Triton kernels, for CUDA (`triton.py`; on CPU tensors only
  under TRITON_INTERPRET=1, which is how it is tested without a GPU);
* "auto": "triton" for CUDA tensors when Triton is installed, "chunked" otherwise.

The divergence follows `alignctl.divergences` (D_f(p || q), p = policy, q = reference): reverse_kl = KL(p||q),
forward_kl = KL(q||p), js = KL(p||m) + KL(q||m), alpha = (sum p^(1-a) q^a - 1) / (a (a - 1)).
"""

from __future__ import annotations

import torch

from alignctl.divergences import Divergence

from .reference import TokenStats, compute_dtype, reference_token_logprobs_and_divergence, resolve_divergence

__all__ = ["IMPLS", "TokenStats", "token_logprobs_and_divergence"]

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
) -> TokenStats:
    """Per-token target log-probs (policy and reference), divergence and policy entropy.

    Args:
        hidden: [N, d] policy hidden states (any leading shape [..., d]; outputs then have shape [...]).
        weight: [V, d] policy LM head (no bias).
        targets: [N] target token ids; rows equal to `ignore_index` are masked: outputs 0, no gradient.
        ref_hidden: [N, d_ref] reference hidden states, or None for no reference.
        ref_weight: [V, d_ref] reference LM head; None with a `ref_hidden` means the policy head (detached).
        divergence: "reverse_kl", "forward_kl", "js", "alpha", a `Divergence`, or None / "none" for none.
        alpha: the alpha of divergence="alpha", in (0, 1) (alignctl.divergences convention).
        impl: "auto", "reference", "chunked" or "triton" (see the module docstring).
        temperature: divides the logits of both models.
        ignore_index: target value of masked rows.
        row_chunk, vocab_chunk: tile shape for "chunked" / "triton" (defaults tuned per implementation).

    Returns:
        TokenStats(logprobs, ref_logprobs, divergence, entropy), each float32 [N] (float64 for float64 inputs);
        ref_logprobs is None without a reference, divergence None without a reference or with divergence=None.
        Autograd reaches `hidden` and `weight` through logprobs, divergence and entropy; the reference side never
        gets a gradient. fp16/bf16 inputs are accumulated in fp32; their gradients come back in their own dtype.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is not one of {', '.join(IMPLS)}")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature={temperature!r} must be a positive number")
    spec_div = resolve_divergence(divergence, alpha)

    lead_shape = hidden.shape[:-1]
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1)
    if ref_hidden is not None:
        ref_hidden = ref_hidden.reshape(-1, ref_hidden.shape[-1])
        if ref_weight is None:
            ref_weight = weight
        ref_hidden, ref_weight = ref_hidden.detach(), ref_weight.detach()
    elif ref_weight is not None:
        raise ValueError("ref_weight was given without ref_hidden")
    _check(hidden, weight, targets, ref_hidden, ref_weight, ignore_index)

    if impl == "auto":
        impl = "triton" if hidden.is_cuda and _triton_module().available(hidden.device) else "chunked"

    if impl == "reference":
        out = reference_token_logprobs_and_divergence(
            hidden, weight, targets, ref_hidden, ref_weight, spec_div, temperature, ignore_index
        )
    else:
        out = _tiled(hidden, weight, targets, ref_hidden, ref_weight, spec_div, impl, temperature, ignore_index,
                     row_chunk, vocab_chunk)
    if len(lead_shape) != 1:
        out = TokenStats(*(x.reshape(lead_shape) if x is not None else None for x in out))
    return out


def _triton_module():
    from . import triton as triton_impl

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
           row_chunk, vocab_chunk) -> TokenStats:
    from .chunked import Spec, TokenStatsFunction, TorchTiles

    if impl == "triton":
        triton_impl = _triton_module()
        reason = triton_impl.unavailable_reason(hidden.device)
        if reason is not None:
            raise RuntimeError(f"impl='triton' is not usable here: {reason}")
        tiles = triton_impl.TritonTiles(hidden.device)
    else:
        tiles = TorchTiles()
    has_ref = ref_hidden is not None
    spec = Spec.make(spec_div, has_ref, temperature, row_chunk or tiles.row_chunk, vocab_chunk or tiles.vocab_chunk)
    if spec.row_chunk < 1 or spec.vocab_chunk < 1:
        raise ValueError("row_chunk and vocab_chunk must be positive")

    n = hidden.shape[0]
    dtype = compute_dtype(hidden)
    valid = targets != ignore_index
    n_valid = int(valid.sum())
    if n_valid == 0:
        # Nothing to compute; zeros still connected to the graph so that backward() gives zero gradients.
        anchor = hidden[:0].to(dtype).sum() + weight[:0].to(dtype).sum()
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
        hidden, weight, targets, ref_hidden, ref_weight, spec, tiles
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
