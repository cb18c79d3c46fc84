"""Independent re-derivations shared by the objective tests: plain numpy/math, never alignctl's own code paths."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from alignctl.divergences import get
from alignctl.objectives.base import PreferenceLogps

DIVERGENCES = [("reverse_kl", None), ("forward_kl", None), ("js", None), ("alpha", 0.5), ("alpha", 0.2)]
DIV_IDS = ["reverse_kl", "forward_kl", "js", "alpha0.5", "alpha0.2"]
EXTREMES = (-1000.0, -100.0, -30.0, 0.0, 30.0, 100.0, 1000.0)
LOW_PRECISION = (torch.float32, torch.bfloat16)


def div(name: str, alpha: float | None = None):
    return get(name, alpha)


# --- f' straight from u = e^h, the spec's table (unstandardised: constants cancel in differences) -------------
def fprime_u(name: str, u: np.ndarray, alpha: float | None = None) -> np.ndarray:
    if name == "reverse_kl":
        return np.log(u) + 1.0
    if name == "forward_kl":
        return -1.0 / u
    if name == "js":
        return np.log(2.0 * u / (1.0 + u))
    return (1.0 - u ** (-alpha)) / alpha


def dfprime_dh(name: str, u: np.ndarray, alpha: float | None = None) -> np.ndarray:
    """d f'(e^h) / dh = u f''(u), differentiated by hand."""
    if name == "reverse_kl":
        return np.ones_like(u)
    if name == "forward_kl":
        return 1.0 / u
    if name == "js":
        return 1.0 / (1.0 + u)
    return u ** (-alpha)


def reward_u(name: str, u: np.ndarray, alpha: float | None = None) -> np.ndarray:
    """Standardised f' (f'(1) = 0)."""
    return fprime_u(name, u, alpha) - fprime_u(name, np.ones_like(u), alpha)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def neg_log_sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0.0)


# --- inputs ------------------------------------------------------------------------------------------------
def random_pairs(seed: int = 0, batch: int = 6, scale: float = 2.0, dtype=torch.float64, seq_kl: bool = False):
    """Random PreferenceLogps (leaves requiring grad) and the leaves in a dict."""
    g = torch.Generator().manual_seed(seed)
    ref_w = -torch.rand(batch, generator=g, dtype=torch.float64) * 30 - 5
    ref_l = -torch.rand(batch, generator=g, dtype=torch.float64) * 30 - 5
    pol_w = ref_w + torch.randn(batch, generator=g, dtype=torch.float64) * scale
    pol_l = ref_l + torch.randn(batch, generator=g, dtype=torch.float64) * scale
    leaves = {
        "policy_chosen_logps": pol_w,
        "policy_rejected_logps": pol_l,
        "ref_chosen_logps": ref_w,
        "ref_rejected_logps": ref_l,
    }
    if seq_kl:
        leaves["chosen_seq_kl"] = torch.rand(batch, generator=g, dtype=torch.float64) * 3
        leaves["rejected_seq_kl"] = torch.rand(batch, generator=g, dtype=torch.float64) * 3
    leaves = {k: v.to(dtype).requires_grad_() for k, v in leaves.items()}
    lengths = {
        "chosen_lengths": torch.randint(1, 20, (batch,), generator=g),
        "rejected_lengths": torch.randint(1, 20, (batch,), generator=g),
    }
    return PreferenceLogps(**leaves, **lengths), leaves


def extreme_pairs(dtype, seq_kl: bool = False, reference: bool = True):
    """Every combination of log-ratios (or, without reference, policy log-probs) from EXTREMES, as one batch."""
    combos = list(itertools.product(EXTREMES, EXTREMES))
    h_w = torch.tensor([c[0] for c in combos], dtype=torch.float64)
    h_l = torch.tensor([c[1] for c in combos], dtype=torch.float64)
    n = len(combos)
    leaves = {}
    if reference:
        ref = torch.full((n,), -10.0, dtype=torch.float64)
        leaves.update(policy_chosen_logps=ref + h_w, policy_rejected_logps=ref + h_l,
                      ref_chosen_logps=ref.clone(), ref_rejected_logps=ref.clone())
    else:
        leaves.update(policy_chosen_logps=h_w, policy_rejected_logps=h_l)
    if seq_kl:
        leaves["chosen_seq_kl"] = torch.tensor([0.0, 1000.0] * (n // 2) + [0.0] * (n % 2), dtype=torch.float64)
        leaves["rejected_seq_kl"] = torch.tensor([1000.0, 0.0] * (n // 2) + [1000.0] * (n % 2), dtype=torch.float64)
    leaves = {k: v.to(dtype).requires_grad_() for k, v in leaves.items()}
    lengths = torch.tensor([1, 7] * (n // 2) + [1] * (n % 2))
    return PreferenceLogps(**leaves, chosen_lengths=lengths, rejected_lengths=lengths.flip(0)), leaves


def grads(losses: torch.Tensor, leaves: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
    names = list(leaves)
    gs = torch.autograd.grad(losses.sum(), [leaves[k] for k in names], allow_unused=True)
    return dict(zip(names, gs))


def assert_finite(out, leaves, require_signal: bool = True) -> None:
    assert torch.isfinite(out.losses).all(), out.losses
    assert torch.isfinite(out.chosen_rewards).all() and torch.isfinite(out.rejected_rewards).all()
    g = grads(out.losses, leaves)
    for name, v in g.items():
        if v is not None:
            assert torch.isfinite(v).all(), (name, v)
    # the gradient must actually reach the policy somewhere (a clamp must not silently cut everything)
    if require_signal:
        assert any(v is not None and v.abs().sum() > 0 for k, v in g.items() if k.startswith("policy"))


def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


LOG2 = math.log(2.0)


def check_entry(name, *, defaults, data, needs_reference, divergences, default_divergence):
    """An objective's registry facts: hyperparameter defaults (its loss signature), data kind, reference need,
    accepted divergences and what divergence=auto picks."""
    import inspect

    from alignctl import objectives

    entry = objectives.get(name)
    params = list(inspect.signature(entry.loss).parameters.values())[2:]
    assert {p.name: p.default for p in params} == defaults
    assert (entry.data, entry.needs_reference) == (data, needs_reference)
    assert set(entry.divergences) == divergences
    assert entry.default_divergence == default_divergence
