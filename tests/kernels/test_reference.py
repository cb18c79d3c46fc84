"""The reference implementation against a direct numpy computation, and its autograd in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignctl.kernels import token_logprobs_and_divergence

from ._helpers import DIV_IDS, DIVERGENCES, make_case


def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _np_expected(case, name: str, alpha: float, temperature: float) -> dict[str, np.ndarray]:
    """Textbook formulas on the full distributions, written out independently of alignctl.divergences."""
    h, w = case.hidden.numpy(), case.weight.numpy()
    hr, wr = case.ref_hidden.numpy(), case.ref_weight.numpy()
    t = case.targets.numpy()
    logp = _np_log_softmax(h @ w.T / temperature)
    logq = _np_log_softmax(hr @ wr.T / temperature)
    p, q = np.exp(logp), np.exp(logq)
    m = 0.5 * (p + q)
    div = {
        "reverse_kl": (p * np.log(p / q)).sum(-1),
        "forward_kl": (q * np.log(q / p)).sum(-1),
        "js": (p * np.log(p / m)).sum(-1) + (q * np.log(q / m)).sum(-1),
        "alpha": ((p ** (1 - alpha) * q**alpha).sum(-1) - 1.0) / (alpha * (alpha - 1.0)),
        "none": None,
    }[name]
    valid = t != -100
    rows = np.arange(len(t))
    safe_t = np.where(valid, t, 0)
    out = {
        "logprobs": np.where(valid, logp[rows, safe_t], 0.0),
        "ref_logprobs": np.where(valid, logq[rows, safe_t], 0.0),
        "entropy": np.where(valid, -(p * logp).sum(-1), 0.0),
    }
    if div is not None:
        out["divergence"] = np.where(valid, div, 0.0)
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize(("name", "alpha"), DIVERGENCES, ids=DIV_IDS)
def test_reference_matches_numpy(name, alpha, temperature):
    case = make_case(n=4, d=3, vocab=5, dtype=torch.float64, masked=(2,), seed=7)
    out = token_logprobs_and_divergence(
        case.hidden, case.weight, case.targets, case.ref_hidden, case.ref_weight,
        divergence=name, alpha=alpha, impl="reference", temperature=temperature,
    )  # fmt: skip
    expected = _np_expected(case, name, alpha, temperature)
    for key in ("logprobs", "ref_logprobs", "entropy", "divergence"):
        got = getattr(out, key)
        if key not in expected:
            assert got is None
            continue
        assert got.dtype == torch.float64 and got.shape == (4,)
        np.testing.assert_allclose(got.numpy(), expected[key], rtol=1e-12, atol=1e-12, err_msg=key)
    assert out.logprobs[2] == 0 and out.entropy[2] == 0


def test_reference_float32_outputs_for_low_precision_inputs():
    case = make_case(n=6, d=8, vocab=20, dtype=torch.bfloat16, masked=())
    out = token_logprobs_and_divergence(
        case.hidden, case.weight, case.targets, case.ref_hidden, case.ref_weight, divergence="js", impl="reference"
    )
    assert all(x.dtype == torch.float32 for x in out)
    # fp32 accumulation of the exactly widened bf16 inputs: equal to the float64 computation to fp32 precision
    wide = token_logprobs_and_divergence(
        case.hidden.double(), case.weight.double(), case.targets, case.ref_hidden.double(),
        case.ref_weight.double(), divergence="js", impl="reference",
    )  # fmt: skip
    for a, b in zip(out, wide):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "alpha"), [("js", 0.5), ("alpha", 0.3)], ids=["js", "alpha0.3"])
def test_reference_gradcheck(name, alpha):
    case = make_case(n=4, d=3, vocab=6, dtype=torch.float64, masked=(1,), seed=3)
    hidden = case.hidden.clone().requires_grad_()
    weight = case.weight.clone().requires_grad_()

    def fn(h, w):
        out = token_logprobs_and_divergence(
            h, w, case.targets, case.ref_hidden, case.ref_weight, divergence=name, alpha=alpha,
            impl="reference", temperature=0.8,
        )  # fmt: skip
        return out.logprobs, out.divergence, out.entropy

    assert torch.autograd.gradcheck(fn, (hidden, weight))


def test_reference_masked_rows_get_no_gradient():
    case = make_case(n=5, d=4, vocab=9, masked=(0, 3))
    hidden = case.hidden.clone().requires_grad_()
    out = token_logprobs_and_divergence(
        hidden, case.weight, case.targets, case.ref_hidden, case.ref_weight, divergence="forward_kl", impl="reference"
    )
    (out.logprobs.sum() + out.divergence.sum() + out.entropy.sum()).backward()
    assert hidden.grad[[0, 3]].abs().max() == 0
    assert hidden.grad[[1, 2, 4]].abs().min() > 0
