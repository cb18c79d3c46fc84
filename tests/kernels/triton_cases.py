"""impl="triton" against the reference; run by test_triton.py in a subprocess (not collected by the main session).

Without a GPU the kernels run in Triton's interpreter on CPU tensors. TRITON_INTERPRET=1 has to be in the environment
before `triton` itself is first imported (its standard library is built by the same decorator), and the main test
session imports Triton early through TRL, hence the separate process.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

pytest.importorskip("numpy", reason="Triton's interpreter needs numpy")
if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="triton is not installed (pip install triton)")
triton_impl = importlib.import_module("alignctl.kernels.triton")

from alignctl.kernels import token_logprobs_and_divergence  # noqa: E402

from ._helpers import (  # noqa: E402
    DIV_IDS,
    DIVERGENCES,
    assert_grads_close,
    assert_outputs_close,
    make_case,
    run,
    run_map,
)

_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_REASON = triton_impl.unavailable_reason(_DEVICE)
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"impl='triton' unavailable: {_REASON}")

# 37 x 301 in 16 x 128 tiles (ragged on both axes); in the interpreter, 8 x 64 kernel blocks so that each tile takes
# several programs and each program several column steps of the online log-sum-exp.
AWKWARD = dict(row_chunk=16, vocab_chunk=128)


@pytest.fixture(autouse=True)
def _small_blocks(monkeypatch):
    if triton_impl.INTERPRET:
        cfg = dict(triton_impl.INTERPRET_CONFIG, fold_block=(8, 64), grad_block=(8, 64))
        monkeypatch.setattr(triton_impl, "INTERPRET_CONFIG", cfg)


def _to_device(case):
    for name in ("hidden", "weight", "targets", "ref_hidden", "ref_weight"):
        x = getattr(case, name)
        if x is not None:
            setattr(case, name, x.to(_DEVICE))
    case.upstream = tuple(u.to(_DEVICE) for u in case.upstream)
    return case


def _compare(case, dtype, **kw):
    case = _to_device(case)
    got = run(case, "triton", **kw)
    kw = {k: v for k, v in kw.items() if k not in ("row_chunk", "vocab_chunk")}
    want = run(case, "reference", **kw)
    assert_outputs_close(got[0], want[0], dtype)
    assert_grads_close(got[1], want[1], dtype, "grad hidden")
    assert_grads_close(got[2], want[2], dtype, "grad weight")
    return got


@pytest.mark.parametrize(("name", "alpha"), DIVERGENCES, ids=DIV_IDS)
def test_matches_reference(name, alpha):
    _compare(make_case(seed=21), torch.float32, divergence=name, alpha=alpha, **AWKWARD)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["float32", "bfloat16", "float16"])
@pytest.mark.parametrize(("name", "alpha"), DIVERGENCES, ids=DIV_IDS)
def test_beyond_the_float32_exp_range(name, alpha, dtype):
    """Logits of std ~150 (|z| past 88, where float32's exp overflows) over several vocab tiles and column steps:
    the online log-sum-exp must subtract its running maximum."""
    case = make_case(dtype=dtype, seed=25, logit_scale=150.0)
    assert float((case.hidden.double() @ case.weight.double().T).abs().max()) > 100.0
    _compare(case, dtype, divergence=name, alpha=alpha, **AWKWARD)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_low_precision(dtype):
    _compare(make_case(dtype=dtype, seed=22), dtype, divergence="forward_kl", **AWKWARD)


def test_temperature_and_partial_upstream():
    case = make_case(seed=23)
    _compare(case, torch.float32, divergence="alpha", alpha=0.3, temperature=0.55, use=("lp", "div"), **AWKWARD)


def test_masking():
    case = make_case(n=10, masked=(0, 4, 9), seed=24)
    out, grad_h, _ = _compare(case, torch.float32, divergence="reverse_kl", row_chunk=4, vocab_chunk=128)
    assert grad_h[[0, 4, 9]].abs().max() == 0 and out.divergence[[0, 4, 9]].abs().max() == 0
    out, grad_h, grad_w = run(_to_device(make_case(n=3, masked=(0, 1, 2))), "triton", divergence="js")
    assert all(x.abs().max() == 0 for x in out) and grad_w.abs().max() == 0


@pytest.mark.parametrize(("name", "alpha"), [("js", 0.5), ("alpha", 0.3), ("reverse_kl", 0.5)], ids=str)
def test_gradcheck_float64(name, alpha):
    case = _to_device(make_case(n=5, d=4, vocab=11, dtype=torch.float64, masked=(1,), seed=25))
    hidden = case.hidden.clone().requires_grad_()
    weight = case.weight.clone().requires_grad_()

    def fn(h, w):
        out = token_logprobs_and_divergence(
            h, w, case.targets, case.ref_hidden, case.ref_weight, divergence=name, alpha=alpha, impl="triton",
            temperature=0.7, row_chunk=2, vocab_chunk=8,
        )  # fmt: skip
        return out.logprobs, out.divergence, out.entropy

    # fast mode: a few random directions instead of one forward per input entry (the interpreter is slow)
    assert torch.autograd.gradcheck(fn, (hidden, weight), fast_mode=True)


# Head maps (bias, logit scale, softcap) are applied to the tiles by the shared driver: the Triton folds see final
# logits, the driver multiplies the gradient tile by the cap's chain-rule factor.
_MAP = dict(logit_scale=1.7, ref_logit_scale=0.8, softcap=5.0, ref_softcap=3.0, temperature=0.7)


def _compare_map(case, dtype, **kw):
    case = _to_device(case)
    if case.bias is not None:
        case.bias, case.ref_bias = case.bias.to(_DEVICE), case.ref_bias.to(_DEVICE)
    got = run_map(case, "triton", **kw)
    kw = {k: v for k, v in kw.items() if k not in ("row_chunk", "vocab_chunk")}
    want = run_map(case, "reference", **kw)
    assert_outputs_close(got[0], want[0], dtype)
    for a, b, name in zip(got[1:], want[1:], ("grad hidden", "grad weight", "grad bias")):
        assert_grads_close(a, b, dtype, name)
    return got


@pytest.mark.parametrize(("name", "alpha"), DIVERGENCES, ids=DIV_IDS)
def test_head_map_matches_reference(name, alpha):
    _compare_map(make_case(seed=26, bias=True), torch.float32, divergence=name, alpha=alpha, **_MAP, **AWKWARD)


@pytest.mark.parametrize(("name", "alpha"), DIVERGENCES[:5], ids=DIV_IDS[:5])
@pytest.mark.parametrize("capped", [False, True], ids=["uncapped", "softcap"])
def test_logits_beyond_exp_range(name, alpha, capped):
    kw = dict(softcap=30.0, ref_softcap=50.0) if capped else {}
    case = make_case(seed=43, bias=True, logit_scale=2000.0 if capped else 150.0)
    out = _compare_map(case, torch.float32, divergence=name, alpha=alpha, **kw, **AWKWARD)[0]
    assert all(x is None or bool(torch.isfinite(x).all()) for x in out)
