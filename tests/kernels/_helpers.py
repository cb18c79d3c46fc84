"""Shared cases for the kernel tests: random problems, one forward + backward per impl, per-dtype tolerances."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from alignctl.kernels import token_logprobs_and_divergence

# (divergence argument, alpha) and readable ids; "none" is log-probs (and entropy) only
DIVERGENCES = [("none", 0.5), ("reverse_kl", 0.5), ("forward_kl", 0.5), ("js", 0.5), ("alpha", 0.3), ("alpha", 0.5)]
DIV_IDS = ["none", "reverse_kl", "forward_kl", "js", "alpha0.3", "alpha0.5"]

# Every impl widens fp16/bf16 inputs exactly and accumulates in fp32, so values agree to fp32 summation-order
# noise; gradients are rounded to the input dtype on the way out (one ulp of that dtype, relative).
VALUE_TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.bfloat16: dict(rtol=2e-4, atol=2e-4),
    torch.float16: dict(rtol=2e-4, atol=2e-4),
}
GRAD_TOL = {
    torch.float64: dict(rtol=1e-9, atol=1e-10),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.bfloat16: dict(rtol=1.6e-2, atol=2e-3),
    torch.float16: dict(rtol=2e-3, atol=2e-4),
}


@dataclass
class Case:
    hidden: torch.Tensor
    weight: torch.Tensor
    targets: torch.Tensor
    ref_hidden: torch.Tensor | None
    ref_weight: torch.Tensor | None
    upstream: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # random dLoss/d(logprobs, divergence, entropy)
    bias: torch.Tensor | None = None  # [V] policy head bias
    ref_bias: torch.Tensor | None = None  # [V] reference head bias


def stable_seed(*parts) -> int:
    """A seed per parametrisation that is the same in every process (the built-in hash() of a string is salted
    per interpreter, so a failure seen once could not be reproduced)."""
    return zlib.crc32(repr(parts).encode()) % 1000


def make_case(
    n: int = 37,
    d: int = 24,
    vocab: int = 301,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    masked: tuple[int, ...] = (3, 10, 11, 12),
    ref: bool = True,
    d_ref: int | None = None,
    logit_scale: float = 3.0,
    bias: bool = False,
) -> Case:
    """Logits of std ~logit_scale (peaked but not one-hot distributions); `masked` rows get ignore_index; with
    `bias`, both heads get a bias of std ~logit_scale / 2."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    d_ref = d if d_ref is None else d_ref
    targets = torch.randint(0, vocab, (n,), generator=g)
    targets[[i for i in masked if i < n]] = -100
    return Case(
        hidden=randn(n, d),
        weight=randn(vocab, d, scale=logit_scale / d**0.5),
        targets=targets,
        ref_hidden=randn(n, d_ref) if ref else None,
        ref_weight=randn(vocab, d_ref, scale=logit_scale / d_ref**0.5) if ref else None,
        upstream=tuple(torch.randn(n, generator=g, dtype=torch.float64) for _ in range(3)),
        bias=randn(vocab, scale=logit_scale / 2) if bias else None,
        ref_bias=randn(vocab, scale=logit_scale / 2) if bias and ref else None,
    )


def run(case: Case, impl: str, divergence="reverse_kl", alpha=0.5, temperature=1.0, use=("lp", "div", "ent"), **kw):
    """Outputs (detached) and gradients w.r.t. hidden and weight of sum(upstream * outputs) over `use`."""
    return run_map(case, impl, divergence, alpha, temperature, use, **kw)[:3]


def run_map(case: Case, impl: str, divergence="reverse_kl", alpha=0.5, temperature=1.0, use=("lp", "div", "ent"),
            **kw):  # fmt: skip
    """`run` with the case's biases passed to the kernel; also returns the gradient w.r.t. the policy bias (or None).
    Head-map keywords (logit_scale, softcap, ref_...) go through `kw`."""
    hidden = case.hidden.clone().requires_grad_()
    weight = case.weight.clone().requires_grad_()
    bias = case.bias.clone().requires_grad_() if case.bias is not None else None
    if case.ref_bias is not None:
        kw["ref_bias"] = case.ref_bias
    if bias is not None:
        kw["bias"] = bias
    out = token_logprobs_and_divergence(
        hidden, weight, case.targets, case.ref_hidden, case.ref_weight, divergence=divergence, alpha=alpha,
        impl=impl, temperature=temperature, **kw,
    )  # fmt: skip
    terms = {"lp": out.logprobs, "div": out.divergence, "ent": out.entropy}
    loss = sum(
        (terms[k] * g.to(terms[k].dtype)).sum() for k, g in zip(("lp", "div", "ent"), case.upstream)
        if k in use and terms[k] is not None
    )  # fmt: skip
    inputs = (hidden, weight) if bias is None else (hidden, weight, bias)
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return out, grads[0], grads[1], grads[2] if bias is not None else None


def assert_outputs_close(got, want, dtype: torch.dtype) -> None:
    for name in ("logprobs", "ref_logprobs", "divergence", "entropy"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype, name
            tol = dict(VALUE_TOL[dtype])
            # absolute floor relative to the output's scale: a token's divergence is a difference of log-probs
            # (hundreds at |z| ~ 150), so an entry near 0 carries the rounding of those terms, an ulp of theirs
            tol["atol"] = tol["atol"] * max(1.0, float(b.detach().abs().max()))
            torch.testing.assert_close(a.detach(), b.detach(), **tol, msg=lambda m: f"{name}: {m}")


def assert_grads_close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, name: str) -> None:
    assert got.dtype == want.dtype == dtype, name
    tol = dict(GRAD_TOL[dtype])
    # absolute floor relative to the gradient's scale (low precision rounds each entry to its own ulp)
    tol["atol"] = tol["atol"] * max(1.0, float(want.abs().max()))
    torch.testing.assert_close(got.float(), want.float(), **tol, msg=lambda m: f"{name}: {m}")
