"""f-divergences used across alignctl, in one convention.

D_f(p || q) = E_q[f(p/q)] with p = the policy pi_theta and q = the reference pi_ref, u = p/q, h = log u.
Every generator is standardised so that f(1) = f'(1) = 0 (adding c(u - 1) to f leaves D_f unchanged):

| name       | f(u)                                         | f'(u)              | D_f(p || q) over a vocabulary  |
|------------|----------------------------------------------|--------------------|--------------------------------|
| reverse_kl | u log u - u + 1                              | log u              | KL(p || q)                     |
| forward_kl | u - 1 - log u                                | 1 - 1/u            | KL(q || p)                     |
| js         | u log u - (u + 1) log((u + 1)/2)             | log(2u / (1 + u))  | 2 JSD(p, q) = KL(p||m)+KL(q||m)|
| alpha      | (u^(1-a) - (1-a) u - a) / (a (a - 1))        | (1 - u^(-a)) / a   | (sum p^(1-a) q^a - 1)/(a(a-1)) |

The alpha convention is the f-DPO paper's (Wang et al. 2023): a -> 0 is reverse KL, a -> 1 forward KL.
(TRL's `f_alpha_divergence_coef` is 1 - a.) All functions take log-ratios or log-probs and compute in
float32 or wider, whatever the input dtype, so bfloat16 inputs do not overflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from alignctl.lazy import F, torch

NAMES = ("reverse_kl", "forward_kl", "js", "alpha")

# exp(80) ~ 5.5e34 stays finite in float32 and bfloat16 (same exponent range); beyond it the generator's
# value is held constant, so losses and gradients stay finite for log-ratios of any size.
EXP_CLAMP = 80.0


def _wide(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


@dataclass(frozen=True)
class Divergence:
    """One f-divergence: `name` from NAMES, `alpha` only for name == "alpha" (in (0, 1))."""

    name: str
    alpha: float | None = None

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise ValueError(f"divergence.name={self.name!r} is not one of {', '.join(NAMES)}")
        if self.name == "alpha":
            if self.alpha is None or not 0.0 < self.alpha < 1.0:
                raise ValueError(f"divergence.alpha={self.alpha!r} must lie in the open interval (0, 1)")
        elif self.alpha is not None:
            raise ValueError(f"divergence.alpha is only used by divergence=alpha, not {self.name}")

    # --- generator in terms of h = log u -------------------------------------------------------------
    def f(self, h: torch.Tensor) -> torch.Tensor:
        """Standardised generator f(e^h) (f(1) = f'(1) = 0), elementwise."""
        h = _wide(h).clamp(-EXP_CLAMP, EXP_CLAMP)
        u = h.exp()
        if self.name == "reverse_kl":
            return u * h - u + 1.0
        if self.name == "forward_kl":
            return u - 1.0 - h
        if self.name == "js":
            return u * h - (u + 1.0) * (F.softplus(h) - math.log(2.0))
        a = self.alpha
        return (torch.exp((1.0 - a) * h) - (1.0 - a) * u - a) / (a * (a - 1.0))

    def f_prime(self, h: torch.Tensor) -> torch.Tensor:
        """f'(e^h), the implicit-reward transform of f-DPO, elementwise; ceilings: inf, 1, log 2, 1/alpha."""
        h = _wide(h)
        if self.name == "reverse_kl":
            return h
        if self.name == "forward_kl":
            return 1.0 - torch.exp((-h).clamp(max=EXP_CLAMP))
        if self.name == "js":
            return math.log(2.0) + F.logsigmoid(h)
        a = self.alpha
        return (1.0 - torch.exp((-a * h).clamp(max=EXP_CLAMP))) / a

    def f_prime_varying(self, h: torch.Tensor) -> torch.Tensor:
        """f'(e^h) less its constant (its ceiling: 0, 1, log 2, 1/alpha), elementwise: -e^-h, logsigmoid(h),
        -e^(-a h)/a. Where f' sits near its ceiling, differences of these keep the relative precision that
        differences of f' lose in float32 (the constant swamps the varying part)."""
        h = _wide(h)
        if self.name == "reverse_kl":
            return h
        if self.name == "forward_kl":
            return -torch.exp((-h).clamp(max=EXP_CLAMP))
        if self.name == "js":
            return F.logsigmoid(h)
        a = self.alpha
        return -torch.exp((-a * h).clamp(max=EXP_CLAMP)) / a

    # --- full-vocabulary form ------------------------------------------------------------------------
    def token(self, policy_logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
        """D_f(p || q) per position from normalised log-probs [..., V] of p (policy) and q (reference) -> [...]."""
        logp, logq = _wide(policy_logprobs), _wide(ref_logprobs)
        # -inf entries (masked vocabulary) would give 0 * inf = nan in the backward pass; a finite floor keeps
        # values and gradients finite and changes nothing else (exp(floor) == 0).
        floor = torch.finfo(logp.dtype).min
        logp, logq = logp.clamp(min=floor), logq.clamp(min=floor)
        p, q = logp.exp(), logq.exp()
        if self.name == "reverse_kl":
            return _xlogy_ratio(p, logp, logq).sum(-1)
        if self.name == "forward_kl":
            return _xlogy_ratio(q, logq, logp).sum(-1)
        if self.name == "js":
            logm = torch.logaddexp(logp, logq) - math.log(2.0)
            return (_xlogy_ratio(p, logp, logm) + _xlogy_ratio(q, logq, logm)).sum(-1)
        a = self.alpha
        mixed = torch.exp((1.0 - a) * logp + a * logq).sum(-1)
        return (mixed - 1.0) / (a * (a - 1.0))


def _xlogy_ratio(p: torch.Tensor, logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """p * (log p - log q) with the 0 * log 0 = 0 convention."""
    return torch.where(p > 0, p * (logp - logq), torch.zeros_like(p))


def get(name: str, alpha: float | None = None) -> Divergence:
    return Divergence(name, alpha if name == "alpha" else None)
