"""alignctl.divergences checked against independent numpy formulas (float64) and for finiteness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignctl.divergences import NAMES, Divergence, get

from ._helpers import DIV_IDS, DIVERGENCES, LOW_PRECISION, fprime_u

H = torch.linspace(-6.0, 6.0, 41, dtype=torch.float64)


def f_table(name: str, u: np.ndarray, alpha: float | None) -> np.ndarray:
    """The spec's generator f(u), before standardisation."""
    if name == "reverse_kl":
        return u * np.log(u)
    if name == "forward_kl":
        return -np.log(u)
    if name == "js":
        return u * np.log(u) - (u + 1.0) * np.log((u + 1.0) / 2.0)
    return (u ** (1.0 - alpha) - (1.0 - alpha) * u - alpha) / (alpha * (alpha - 1.0))


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_standardised_at_one(name, alpha):
    d = get(name, alpha)
    zero = torch.zeros(3, dtype=torch.float64)
    assert torch.equal(d.f(zero), torch.zeros(3, dtype=torch.float64)) or d.f(zero).abs().max() < 1e-15
    assert d.f_prime(zero).abs().max() < 1e-15


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_f_is_the_standardised_table_generator(name, alpha):
    """f(u) = f_table(u) - f_table(1) - f_table'(1) (u - 1): same divergence, f(1) = f'(1) = 0."""
    u = np.exp(H.numpy())
    one = np.ones(1)
    expected = f_table(name, u, alpha) - f_table(name, one, alpha) - fprime_u(name, one, alpha) * (u - 1.0)
    np.testing.assert_allclose(get(name, alpha).f(H).numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_f_prime_is_the_derivative_of_f(name, alpha):
    """d f(e^h)/dh = e^h f'(e^h), by autograd in float64."""
    d = get(name, alpha)
    h = H.clone().requires_grad_()
    (df_dh,) = torch.autograd.grad(d.f(h).sum(), h)
    torch.testing.assert_close(df_dh, H.exp() * d.f_prime(H), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_f_prime_matches_table_from_u(name, alpha):
    u = np.exp(H.numpy())
    expected = fprime_u(name, u, alpha) - fprime_u(name, np.ones(1), alpha)
    np.testing.assert_allclose(get(name, alpha).f_prime(H).numpy(), expected, rtol=1e-12, atol=1e-12)


def _np_token(name: str, p: np.ndarray, q: np.ndarray, alpha: float | None) -> np.ndarray:
    kl = lambda a, b: (a * (np.log(a) - np.log(b))).sum(-1)  # noqa: E731
    if name == "reverse_kl":
        return kl(p, q)
    if name == "forward_kl":
        return kl(q, p)
    if name == "js":
        m = (p + q) / 2.0
        return kl(p, m) + kl(q, m)
    return ((p ** (1.0 - alpha) * q**alpha).sum(-1) - 1.0) / (alpha * (alpha - 1.0))


def _random_logprobs(seed: int, shape=(2, 3, 7), scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).log_softmax(-1)


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_token_matches_numpy(name, alpha):
    logp, logq = _random_logprobs(1), _random_logprobs(2)
    got = get(name, alpha).token(logp, logq)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got.numpy(), _np_token(name, logp.exp().numpy(), logq.exp().numpy(), alpha), rtol=1e-10)


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_token_nonnegative_and_zero_at_equality(name, alpha):
    d = get(name, alpha)
    for seed in range(4):
        logp, logq = _random_logprobs(10 + seed, scale=4.0), _random_logprobs(20 + seed, scale=4.0)
        assert (d.token(logp, logq) >= 0).all()
        assert (d.token(logp, logp).abs() < 1e-12).all()
        assert (d.token(logp, logq) > 1e-6).all()  # and strictly positive when p != q


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_token_is_expectation_of_f_under_q(name, alpha):
    """D_f(p || q) = E_q[f(p/q)], the convention that ties the token form to the generator."""
    d = get(name, alpha)
    logp, logq = _random_logprobs(3), _random_logprobs(4)
    torch.testing.assert_close(d.token(logp, logq), (logq.exp() * d.f(logp - logq)).sum(-1), rtol=1e-10, atol=1e-12)


def test_alpha_limits():
    """alpha -> 0 approaches reverse KL, alpha -> 1 forward KL (f' and the token form)."""
    logp, logq = _random_logprobs(5), _random_logprobs(6)
    h = torch.linspace(-3.0, 3.0, 13, dtype=torch.float64)
    for a, target, tol in ((1e-6, "reverse_kl", 1e-4), (1 - 1e-6, "forward_kl", 1e-4)):
        torch.testing.assert_close(get("alpha", a).f_prime(h), get(target).f_prime(h), rtol=tol, atol=tol)
        torch.testing.assert_close(get("alpha", a).token(logp, logq), get(target).token(logp, logq), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_finite_at_extreme_log_ratios(name, alpha, dtype):
    d = get(name, alpha)
    h = torch.tensor([-1000.0, -100.0, -80.0, -30.0, 0.0, 30.0, 80.0, 100.0, 1000.0], dtype=dtype, requires_grad=True)
    for fn in (d.f, d.f_prime):
        v = fn(h)
        (g,) = torch.autograd.grad(v.sum(), h)
        assert torch.isfinite(v).all() and torch.isfinite(g).all(), (fn.__name__, v, g)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_token_finite_at_extreme_logits(name, alpha, dtype):
    d = get(name, alpha)
    logits_p = torch.tensor([[1000.0, -1000.0, 0.0, 3.0], [-1000.0, 1000.0, 2.0, 0.0]], dtype=dtype, requires_grad=True)
    logits_q = torch.tensor([[-1000.0, 1000.0, 1.0, 0.0], [0.0, 0.0, 1000.0, -1000.0]], dtype=dtype, requires_grad=True)
    v = d.token(logits_p.float().log_softmax(-1).to(dtype), logits_q.float().log_softmax(-1).to(dtype))
    gp, gq = torch.autograd.grad(v.sum(), [logits_p, logits_q])
    assert torch.isfinite(v).all() and torch.isfinite(gp).all() and torch.isfinite(gq).all()


@pytest.mark.parametrize("name,alpha", DIVERGENCES, ids=DIV_IDS)
def test_token_masked_vocabulary_has_finite_gradient(name, alpha):
    """-inf log-probs (masked vocabulary entries, in both models) must not turn the gradient into nan."""
    d = get(name, alpha)
    lp = torch.tensor([[0.0, float("-inf"), -1.0]], dtype=torch.float64).log_softmax(-1).requires_grad_()
    lq = torch.tensor([[0.5, float("-inf"), -1.0]], dtype=torch.float64).log_softmax(-1).requires_grad_()
    v = d.token(lp, lq)
    gp, gq = torch.autograd.grad(v.sum(), [lp, lq])
    assert torch.isfinite(v).all() and torch.isfinite(gp).all() and torch.isfinite(gq).all()
    expected = _np_token(name, lp.detach().exp()[:, [0, 2]].numpy(), lq.detach().exp()[:, [0, 2]].numpy(), alpha)
    np.testing.assert_allclose(v.detach().numpy(), expected, rtol=1e-10)


def test_get_and_validation():
    assert get("js", 0.3) == Divergence("js")  # alpha is ignored unless name == alpha
    assert get("alpha", 0.3).alpha == 0.3
    assert set(NAMES) == {"reverse_kl", "forward_kl", "js", "alpha"}
    for bad in (dict(name="alpha"), dict(name="alpha", alpha=1.0), dict(name="alpha", alpha=0.0),
                dict(name="js", alpha=0.5), dict(name="tv")):
        with pytest.raises(ValueError):
            Divergence(**bad)


def test_computes_wide_for_bfloat16():
    h = torch.tensor([50.0], dtype=torch.bfloat16)
    assert get("reverse_kl").f(h).dtype == torch.float32
    assert math.isfinite(get("forward_kl").f_prime(-h).item())
