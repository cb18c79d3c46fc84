"""Head maps (bias, logit scale, softcap) in impl="chunked" against the reference: values and gradients to hidden,
weight and bias over several vocabulary tiles, low precision, float64 gradcheck, and logits far beyond exp's range."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignctl.kernels import head_logits, token_logprobs_and_divergence

from ._helpers import (
    DIV_IDS,
    DIVERGENCES,
    assert_grads_close,
    assert_outputs_close,
    make_case,
    run_map,
    stable_seed,
)

# 37 rows x 301 columns in 16 x 64 tiles: 5 vocabulary tiles (the last one ragged), 3 row blocks
AWKWARD = dict(row_chunk=16, vocab_chunk=64)
# logits of std ~3 (make_case): caps of 4-6 bend most of them, 3 clips hard
MAPS = {
    "bias": dict(bias=True),
    "scale": dict(logit_scale=0.3, ref_logit_scale=2.0),
    "softcap": dict(softcap=4.0, ref_softcap=6.0),
    "all": dict(bias=True, logit_scale=1.7, ref_logit_scale=0.8, softcap=5.0, ref_softcap=3.0),
}


def _split(spec: dict) -> tuple[bool, dict]:
    kw = dict(spec)
    return kw.pop("bias", False), kw


def _compare(case, dtype, impl="chunked", **kw):
    got = run_map(case, impl, **kw)
    kw = {k: v for k, v in kw.items() if k not in ("row_chunk", "vocab_chunk")}
    want = run_map(case, "reference", **kw)
    assert_outputs_close(got[0], want[0], dtype)
    for a, b, name in zip(got[1:], want[1:], ("grad hidden", "grad weight", "grad bias")):
        assert (a is None) == (b is None), name
        if a is not None:
            assert_grads_close(a, b, dtype, name)
    return got, want


@pytest.mark.parametrize(("name", "alpha"), DIVERGENCES, ids=DIV_IDS)
@pytest.mark.parametrize("head_map", list(MAPS), ids=list(MAPS))
def test_head_map_matches_reference(head_map, name, alpha):
    has_bias, kw = _split(MAPS[head_map])
    case = make_case(bias=has_bias, seed=stable_seed(head_map, name, alpha))
    (got, *_), _ = _compare(case, torch.float32, divergence=name, alpha=alpha, temperature=0.7, **kw, **AWKWARD)
    assert torch.isfinite(got.logprobs).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_head_map_low_precision(dtype):
    _, kw = _split(MAPS["all"])
    _compare(make_case(dtype=dtype, bias=True, seed=41), dtype, divergence="js", **kw, **AWKWARD)


def test_reference_uses_the_policy_map_without_ref_weight():
    _, kw = _split(MAPS["all"])
    kw = {k: v for k, v in kw.items() if not k.startswith("ref_")}
    case = make_case(bias=True, seed=42)
    case.ref_weight, case.ref_bias = None, None
    _compare(case, torch.float32, divergence="forward_kl", **kw, **AWKWARD)
    # the same as passing the policy head explicitly as the reference head
    a = run_map(case, "chunked", divergence="forward_kl", **kw, **AWKWARD)[0]
    case.ref_weight, case.ref_bias = case.weight, case.bias
    b = run_map(case, "chunked", divergence="forward_kl", **kw, **{f"ref_{k}": v for k, v in kw.items()}, **AWKWARD)[0]
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize(("name", "alpha"), DIVERGENCES, ids=DIV_IDS)
@pytest.mark.parametrize("capped", [False, True], ids=["uncapped", "softcap"])
def test_logits_beyond_exp_range(name, alpha, capped):
    """|z| in the hundreds (exp overflows float32 beyond 88): uncapped, and capped at 30 from pre-cap values of
    thousands. Both implementations stay finite and agree; the reference itself is checked against float64."""
    case = make_case(bias=True, seed=43, logit_scale=150.0 if not capped else 2000.0)
    kw = dict(softcap=30.0, ref_softcap=50.0) if capped else {}
    z = head_logits(case.hidden, case.weight, case.bias)
    assert float(z.abs().max()) > 300
    got, want = _compare(case, torch.float32, divergence=name, alpha=alpha, **kw, **AWKWARD)
    for x in (*got[0], *got[1:], *want[0], *want[1:]):
        assert x is None or torch.isfinite(x).all()
    wide = make_case(bias=True, seed=43, logit_scale=150.0 if not capped else 2000.0, dtype=torch.float64)
    exact = run_map(wide, "reference", divergence=name, alpha=alpha, **kw)[0]
    for a, b in zip(want[0], exact):
        if a is not None:
            torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(("name", "alpha"), [("reverse_kl", 0.5), ("js", 0.5), ("alpha", 0.3)], ids=str)
def test_head_map_gradcheck_float64(name, alpha):
    case = make_case(n=5, d=4, vocab=11, dtype=torch.float64, masked=(1,), seed=44, bias=True)
    hidden = case.hidden.clone().requires_grad_()
    weight = case.weight.clone().requires_grad_()
    bias = case.bias.clone().requires_grad_()

    def fn(h, w, b):
        out = token_logprobs_and_divergence(
            h, w, case.targets, case.ref_hidden, case.ref_weight, divergence=name, alpha=alpha, impl="chunked",
            temperature=0.7, row_chunk=2, vocab_chunk=4, bias=b, ref_bias=case.ref_bias, logit_scale=1.3,
            ref_logit_scale=0.6, softcap=2.5, ref_softcap=4.0,
        )  # fmt: skip
        return out.logprobs, out.divergence, out.entropy

    assert torch.autograd.gradcheck(fn, (hidden, weight, bias))


def test_reference_head_map_order_matches_numpy():
    """(h W^T + b) * scale, then c tanh(. / c), then / T, written out independently."""
    case = make_case(n=4, d=3, vocab=7, dtype=torch.float64, masked=(), seed=45, bias=True)
    h, w, b = case.hidden.numpy(), case.weight.numpy(), case.bias.numpy()
    z = 2.5 * np.tanh((h @ w.T + b) * 1.5 / 2.5) / 0.8
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    out = token_logprobs_and_divergence(
        case.hidden, case.weight, case.targets, bias=case.bias, logit_scale=1.5, softcap=2.5, temperature=0.8,
        impl="reference",
    )  # fmt: skip
    np.testing.assert_allclose(out.logprobs.numpy(), logp[np.arange(4), case.targets.numpy()], rtol=1e-12)
    np.testing.assert_allclose(out.entropy.numpy(), -(np.exp(logp) * logp).sum(-1), rtol=1e-12)


def test_bias_gradient_is_zero_for_masked_rows_only():
    case = make_case(n=6, masked=(0, 1, 2, 3, 4, 5), bias=True)
    out, grad_h, grad_w, grad_b = run_map(case, "chunked", divergence="js", softcap=3.0, **AWKWARD)
    assert all(x.abs().max() == 0 for x in out)
    assert grad_h.abs().max() == 0 and grad_w.abs().max() == 0 and grad_b.abs().max() == 0


def test_head_map_argument_errors():
    case = make_case(n=4, d=4, vocab=10, masked=(), bias=True)
    args = (case.hidden, case.weight, case.targets)
    with pytest.raises(ValueError, match=r"bias must be \[10\]"):
        token_logprobs_and_divergence(*args, bias=case.bias[:5])
    with pytest.raises(TypeError, match="bias must share"):
        token_logprobs_and_divergence(*args, bias=case.bias.double())
    with pytest.raises(ValueError, match="logit_scale"):
        token_logprobs_and_divergence(*args, logit_scale=0.0)
    with pytest.raises(ValueError, match="softcap"):
        token_logprobs_and_divergence(*args, softcap=-1.0)
    with pytest.raises(ValueError, match="without ref_hidden"):
        token_logprobs_and_divergence(*args, ref_softcap=3.0)
    with pytest.raises(ValueError, match="give ref_weight"):
        token_logprobs_and_divergence(*args, ref_hidden=case.ref_hidden, ref_bias=case.ref_bias)


def test_low_precision_operand_path_with_head_map(monkeypatch):
    """The CUDA fp16/bf16 path (scale on the fp32 tile, bias added after the GEMM) emulated on CPU, as in
    test_chunked.test_low_precision_operand_path."""
    from alignctl.kernels import chunked

    def project(h, w, out):
        return torch.mm(h.to(out.dtype), w.to(out.dtype).t(), out=out)

    def accumulate(acc, a, b):
        acc.addmm_(a.to(b.dtype).to(acc.dtype), b.to(acc.dtype))

    monkeypatch.setattr(chunked, "_keeps_low_precision", lambda x: x.dtype in (torch.float16, torch.bfloat16))
    monkeypatch.setattr(chunked, "_project", project)
    monkeypatch.setattr(chunked, "_accumulate", accumulate)
    _, kw = _split(MAPS["all"])
    case = make_case(dtype=torch.bfloat16, seed=46, bias=True)
    got = run_map(case, "chunked", divergence="reverse_kl", temperature=0.6, **kw, **AWKWARD)
    want = run_map(case, "reference", divergence="reverse_kl", temperature=0.6, **kw)
    assert_outputs_close(got[0], want[0], torch.bfloat16)
    for a, b, name in zip(got[1:], want[1:], ("grad hidden", "grad weight", "grad bias")):
        torch.testing.assert_close(a.float(), b.float(), rtol=3e-2, atol=1e-2 * float(b.abs().max()), msg=name)
