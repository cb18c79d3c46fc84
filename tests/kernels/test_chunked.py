"""impl="chunked" against the reference: values and gradients, dtypes, awkward shapes, masking, float64 gradcheck."""

from __future__ import annotations

import os

import pytest
import torch

from alignctl.kernels import token_logprobs_and_divergence

from ._helpers import (
    DIV_IDS,
    DIVERGENCES,
    assert_grads_close,
    assert_outputs_close,
    make_case,
    run,
    stable_seed,
)

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# 37 rows and 301 columns in 16 x 64 tiles: ragged last tiles on both axes
AWKWARD = dict(row_chunk=16, vocab_chunk=64)


def _compare(case, dtype, impl="chunked", **kw):
    got = run(case, impl, **kw)
    kw = {k: v for k, v in kw.items() if k not in ("row_chunk", "vocab_chunk")}
    want = run(case, "reference", **kw)
    assert_outputs_close(got[0], want[0], dtype)
    assert_grads_close(got[1], want[1], dtype, "grad hidden")
    assert_grads_close(got[2], want[2], dtype, "grad weight")
    return got, want


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).split(".")[-1])
@pytest.mark.parametrize(("name", "alpha"), DIVERGENCES, ids=DIV_IDS)
def test_matches_reference(name, alpha, dtype):
    case = make_case(dtype=dtype, seed=stable_seed(name, alpha))
    _compare(case, dtype, divergence=name, alpha=alpha, **AWKWARD)


@pytest.mark.parametrize(("name", "alpha"), DIVERGENCES, ids=DIV_IDS)
def test_temperature(name, alpha):
    case = make_case(seed=5)
    _compare(case, torch.float32, divergence=name, alpha=alpha, temperature=0.55, **AWKWARD)


@pytest.mark.parametrize(
    ("n", "vocab", "row_chunk", "vocab_chunk"),
    [(1, 7, 256, 1024), (5, 64, 5, 64), (9, 130, 4, 1), (40, 33, 7, 32)],
    ids=["one-row-one-tile", "exact-tiles", "one-column-tiles", "vocab-just-over-chunk"],
)
def test_shapes(n, vocab, row_chunk, vocab_chunk):
    case = make_case(n=n, d=8, vocab=vocab, masked=(2,), seed=n)
    _compare(case, torch.float32, divergence="js", row_chunk=row_chunk, vocab_chunk=vocab_chunk)


@pytest.mark.parametrize("use", [("lp", "div"), ("ent",), ("div",)], ids=["no-entropy-grad", "entropy-only", "div-only"])
@pytest.mark.parametrize("name", ["reverse_kl", "forward_kl", "alpha"])
def test_partial_upstream_gradients(name, use):
    case = make_case(seed=11)
    _compare(case, torch.float32, divergence=name, alpha=0.3, use=use, **AWKWARD)


def test_without_reference():
    case = make_case(ref=False, seed=2)
    (out, _, _), _ = _compare(case, torch.float32, divergence="forward_kl", **AWKWARD)
    assert out.ref_logprobs is None and out.divergence is None


def test_reference_of_another_width_and_default_head():
    case = make_case(d=16, d_ref=24, seed=4)
    _compare(case, torch.float32, divergence="reverse_kl", **AWKWARD)
    # ref_weight=None: the reference reuses the policy head (detached)
    case = make_case(seed=4)
    case.ref_weight = None
    _compare(case, torch.float32, divergence="forward_kl", **AWKWARD)


@pytest.mark.parametrize("impl", ["chunked", "reference"])
def test_all_rows_masked(impl):
    case = make_case(n=6, masked=tuple(range(6)))
    out, grad_h, grad_w = run(case, impl, divergence="js", **(AWKWARD if impl == "chunked" else {}))
    for x in out:
        assert x.shape == (6,) and x.dtype == torch.float32 and x.abs().max() == 0
    assert grad_h.abs().max() == 0 and grad_w.abs().max() == 0


def test_masked_rows_get_zero_outputs_and_no_gradient():
    case = make_case(masked=(0, 1, 2, 36))
    out, grad_h, _ = run(case, "chunked", divergence="alpha", alpha=0.3, **AWKWARD)
    for x in out:
        assert x[[0, 1, 2, 36]].abs().max() == 0
    assert grad_h[[0, 1, 2, 36]].abs().max() == 0
    assert (grad_h[3:36].abs().sum(1) > 0).all()


def test_leading_dimensions_and_auto():
    case = make_case(n=12, masked=(5,))
    hidden, ref_hidden = case.hidden.view(3, 4, -1), case.ref_hidden.view(3, 4, -1)
    auto = token_logprobs_and_divergence(
        hidden, case.weight, case.targets.view(3, 4), ref_hidden, case.ref_weight, divergence="forward_kl"
    )
    flat = token_logprobs_and_divergence(
        case.hidden, case.weight, case.targets, case.ref_hidden, case.ref_weight, divergence="forward_kl",
        impl="chunked",
    )  # fmt: skip
    for a, b in zip(auto, flat):
        assert a.shape == (3, 4)
        torch.testing.assert_close(a.reshape(-1), b, rtol=0, atol=0)  # "auto" is "chunked" on CPU


@pytest.mark.parametrize(("name", "alpha"), DIVERGENCES, ids=DIV_IDS)
def test_gradcheck_float64(name, alpha):
    case = make_case(n=5, d=4, vocab=11, dtype=torch.float64, masked=(1,), seed=13)
    hidden = case.hidden.clone().requires_grad_()
    weight = case.weight.clone().requires_grad_()

    def fn(h, w):
        out = token_logprobs_and_divergence(
            h, w, case.targets, case.ref_hidden, case.ref_weight, divergence=name, alpha=alpha, impl="chunked",
            temperature=0.7, row_chunk=2, vocab_chunk=4,
        )  # fmt: skip
        return tuple(x for x in (out.logprobs, out.divergence, out.entropy) if x is not None)

    assert torch.autograd.gradcheck(fn, (hidden, weight))


def _peak_extra_bytes(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return peak


def test_never_holds_full_logits():
    n, d, vocab = 512, 16, 2048
    case = make_case(n=n, d=d, vocab=vocab, masked=())
    hidden = case.hidden.clone().requires_grad_()
    weight = case.weight.clone().requires_grad_()

    def step(impl):
        out = token_logprobs_and_divergence(
            hidden, weight, case.targets, case.ref_hidden, case.ref_weight, divergence="forward_kl", impl=impl,
            row_chunk=64, vocab_chunk=256,
        )  # fmt: skip
        (out.logprobs.sum() + out.divergence.sum() + out.entropy.sum()).backward()
        hidden.grad = weight.grad = None

    logits_bytes = n * vocab * 4
    chunked = _peak_extra_bytes(lambda: step("chunked"))
    naive = _peak_extra_bytes(lambda: step("reference"))
    assert naive > 3 * logits_bytes  # the measurement sees the materialized logits
    assert chunked < logits_bytes / 4  # tiles, per-token statistics and the gradients only


def test_argument_errors():
    case = make_case(n=4, d=4, vocab=10, masked=())
    args = (case.hidden, case.weight, case.targets)
    with pytest.raises(ValueError, match="impl"):
        token_logprobs_and_divergence(*args, impl="cuda")
    with pytest.raises(ValueError, match="targets must lie"):
        token_logprobs_and_divergence(case.hidden, case.weight, torch.tensor([0, 1, 10, 2]))
    with pytest.raises(ValueError, match="ref_weight"):
        token_logprobs_and_divergence(*args, ref_weight=case.ref_weight)
    with pytest.raises(ValueError, match="divergence"):
        token_logprobs_and_divergence(*args, ref_hidden=case.ref_hidden, divergence="kl")
    with pytest.raises(ValueError, match="alpha"):
        token_logprobs_and_divergence(*args, ref_hidden=case.ref_hidden, divergence="alpha", alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs_and_divergence(*args, temperature=0.0)
    with pytest.raises(TypeError, match="share"):
        token_logprobs_and_divergence(case.hidden, case.weight.double(), case.targets)


@pytest.mark.skipif(
    torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") == "1",
    reason="impl='triton' can run here",
)
def test_triton_impl_says_why_it_cannot_run_on_cpu():
    case = make_case(n=4, d=4, vocab=10, masked=())
    with pytest.raises(RuntimeError, match="impl='triton' is not usable here"):
        token_logprobs_and_divergence(case.hidden, case.weight, case.targets, impl="triton")


def test_low_precision_operand_path(monkeypatch):
    """The CUDA fp16/bf16 path (operands kept in low precision, GEMMs with fp32 output, temperature applied to the
    tile, gradient tiles rounded to the operands' dtype) emulated on CPU, where torch.mm has no out_dtype."""
    from alignctl.kernels import chunked

    def project(h, w, out):
        return torch.mm(h.to(out.dtype), w.to(out.dtype).t(), out=out)

    def accumulate(acc, a, b):
        acc.addmm_(a.to(b.dtype).to(acc.dtype), b.to(acc.dtype))

    monkeypatch.setattr(chunked, "_keeps_low_precision", lambda x: x.dtype in (torch.float16, torch.bfloat16))
    monkeypatch.setattr(chunked, "_project", project)
    monkeypatch.setattr(chunked, "_accumulate", accumulate)
    case = make_case(dtype=torch.bfloat16, seed=31)
    got = run(case, "chunked", divergence="forward_kl", temperature=0.6, **AWKWARD)
    want = run(case, "reference", divergence="forward_kl", temperature=0.6)
    assert_outputs_close(got[0], want[0], torch.bfloat16)
    # the gradient tile is rounded to bf16 before the gradient GEMMs, as on the GPU: a little more error
    for a, b, name in ((got[1], want[1], "grad hidden"), (got[2], want[2], "grad weight")):
        torch.testing.assert_close(a.float(), b.float(), rtol=3e-2, atol=1e-2 * float(b.abs().max()), msg=name)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).split(".")[-1])
@pytest.mark.parametrize(("name", "alpha"), DIVERGENCES, ids=DIV_IDS)
def test_matches_reference_beyond_the_float32_exp_range(name, alpha, dtype):
    """Logits of std ~150 (|z| well past 88, where float32's exp overflows) over five vocab tiles: a tile
    log-sum-exp taken without subtracting the running maximum would give inf/nan here."""
    case = make_case(dtype=dtype, seed=stable_seed(name, alpha, "wide"), logit_scale=150.0)
    logits = case.hidden.double() @ case.weight.double().T
    assert float(logits.abs().max()) > 100.0
    _compare(case, dtype, divergence=name, alpha=alpha, **AWKWARD)
