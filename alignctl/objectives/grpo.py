"""GRPO's divergence to the starting policy: TRL's k3 reverse KL, or DPH-RL's generator penalty (forward KL, JS, alpha).

Papers: Shao et al., "DeepSeekMath" (GRPO), arXiv 2402.03300; Li et al., "The Choice of Divergence: A Neglected Key
to Mitigating Diversity Collapse in Reinforcement Learning with Verifiable Reward" (DPH-RL), arXiv 2509.07430.

GRPO's policy term (group sampling, group-normalised advantages, clipped ratios, `loss_type`) is TRL's own and
stays in TRL's GRPOTrainer (alignctl.trainers.online). This module holds only the divergence term added to it,
`divergence_coef * D`, with D computed from per-token log-probs (any shape; `mask` marks real tokens):

- divergence=reverse_kl: TRL's k3 estimator on samples y ~ pi_theta of KL(pi_theta || pi_0), token mean of
      k3_t = e^{l_0,t - l_theta,t} - (l_0,t - l_theta,t) - 1 >= 0,
  with l_0 the starting policy's log-probs of the policy's own samples (needs pi_0 in memory: the trainer uses
  TRL's `beta = divergence_coef` path, reference model included; TRL also multiplies by the IS ratio).
- divergence=forward_kl / js / alpha (DPH-RL): the generator form D_f = E_{y ~ pi_0}[f(pi_theta/pi_0)], token mean of
      f(u_t),  u_t = pi_theta(y_t|s_t) / pi_0(y_t|s_t) = e^{h_t},  h_t = l_theta,t - l_0,t,
  over *stored* samples y ~ pi_0 with *stored* l_0: no reference model is kept. f is `Divergence.f(h)`
  (alignctl.divergences, standardised so f(1) = f'(1) = 0): forward_kl u - 1 - log u (KL(pi_0 || pi_theta),
  k3 with the roles swapped), js u log u - (u+1) log((u+1)/2) (DPH-RL's "js_low_var", = 2 JS), alpha
  (u^{1-a} - (1-a) u - a)/(a(a-1)) (f-DPO's convention; DPH-RL uses a = 0.2).
- divergence=None (`divergence=none`): no divergence term, plain GRPO/DAPO (loss 0).

`kl_estimator` chooses how forward_kl's and reverse_kl's estimates are computed: "exact" (default) is the form above
as it is; "low_var_kl" is verl's `kl_penalty(logprob, ref_logprob, "low_var_kl")`, which DPH-RL trains with (its
verl/trainer/ppo/core_algos.py): c = clamp(ref_logprob - logprob, -20, 20), estimate min(e^c - c - 1, 10), i.e. k3
on the clamped log-ratio and capped: the same value for a log-ratio in about [-11, 2.6], constant (no gradient)
beyond. DPH-RL's forward KL calls it on pi_0 samples with (logprob, ref_logprob) = (l_0, l_theta); its reverse-KL
baseline (verl's kl loss) on policy samples with (l_theta, l_0). For reverse_kl the trainer then adds this term
itself instead of TRL's k3 (which has no clamp, and TRL multiplies it by the importance ratio; verl does not).
JS and alpha have no low_var_kl form: refused.

`needs_reference` is False: the objective's math reads only stored log-probs. Whether a reference model is loaded
is the trainer's choice: for reverse_kl TRL loads one (its k3 needs pi_0 on fresh policy samples); for the
generator divergences and none it does not. Default divergence_coef = 0.01: DPH-RL's c (and its reverse-KL
baseline's coefficient). Computed in float32 (float64 stays float64).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple

from alignctl.constraints import NonNegative
from alignctl.divergences import NAMES, Divergence
from alignctl.lazy import torch
from alignctl.objectives.base import Objective, token_mean, wide


@dataclass(frozen=True)
class TokenLogps:
    """Per-token log-probs of the same tokens under the policy (`policy_logps`, with grad) and the starting policy
    (`ref_logps`, stored); any shape, e.g. [B, T] with `mask` (True/1 = real token) or flat [N] with mask None.
    For reverse_kl the tokens are policy samples; for the generator divergences, stored pi_0 samples."""

    policy_logps: torch.Tensor
    ref_logps: torch.Tensor
    mask: torch.Tensor | None = None


class DivergenceOutput(NamedTuple):
    """`loss` = divergence_coef * penalty (scalar, with grad); `penalty` = the divergence estimate (detached)."""

    loss: torch.Tensor
    penalty: torch.Tensor


def k3(policy_logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """TRL's per-token k3 estimator of KL(pi_theta || pi_0) on policy samples: e^{l_0 - l} - (l_0 - l) - 1."""
    d = wide(ref_logps) - wide(policy_logps)
    return torch.expm1(d) - d


def generator(divergence: Divergence, policy_logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """DPH-RL's per-token generator value f(pi_theta/pi_0) on pi_0 samples: `divergence.f(l_theta - l_0)`."""
    return divergence.f(wide(policy_logps) - wide(ref_logps))


LOW_VAR_KL_LOG_RATIO = 20.0  # verl clamps the per-token log-ratio to [-20, 20] ...
LOW_VAR_KL_MAX = 10.0  # ... and the estimate to [-10, 10] (it is >= 0)


def low_var_kl(logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
    """verl's kl_penalty(logprob, ref_logprob, "low_var_kl"): k3 on c = clamp(ref_logprob - logprob, -20, 20),
    capped at 10, i.e. min(e^c - c - 1, 10). Argument names and order are verl's (see the module docstring)."""
    c = (wide(ref_logprob) - wide(logprob)).clamp(-LOW_VAR_KL_LOG_RATIO, LOW_VAR_KL_LOG_RATIO)
    return k3(torch.zeros_like(c), c).clamp(max=LOW_VAR_KL_MAX)


LOW_VAR_KL_DIVERGENCES = ("forward_kl", "reverse_kl")


def check(hyperparameters: dict[str, Any], divergence: str) -> str | None:
    if hyperparameters["kl_estimator"] == "low_var_kl" and divergence not in LOW_VAR_KL_DIVERGENCES:
        return (
            f"objective.kl_estimator=low_var_kl applies to divergence=forward_kl or reverse_kl (verl's estimator "
            f"of KL, as DPH-RL uses it), not divergence={divergence}; use objective.kl_estimator=exact"
        )
    return None


def loss(
    logps: TokenLogps,
    *,
    divergence: Divergence | None,
    # DPH-RL's c, also its reverse-KL baseline's coefficient (spec section 8)
    divergence_coef: Annotated[float, NonNegative] = 0.01,
    # forward_kl's and reverse_kl's estimate: exact (u - 1 - log u; TRL's k3) or low_var_kl (verl's clamped k3, which
    # DPH-RL trains with: its forward KL and its reverse-KL baseline)
    kl_estimator: Literal["exact", "low_var_kl"] = "exact",
) -> DivergenceOutput:
    """divergence_coef * (token-mean divergence estimate); see the module docstring for which one."""
    if divergence is None:
        zero = (wide(logps.policy_logps) * 0.0).sum()
        return DivergenceOutput(zero, zero.detach())
    if not isinstance(divergence, Divergence):
        raise TypeError(f"divergence must be a Divergence or None, not {type(divergence).__name__}")
    problem = check({"kl_estimator": kl_estimator}, divergence.name)
    if problem:
        raise ValueError(problem)
    if divergence.name == "reverse_kl" and kl_estimator == "low_var_kl":  # on policy samples
        per_token = low_var_kl(logprob=logps.policy_logps, ref_logprob=logps.ref_logps)
    elif divergence.name == "reverse_kl":
        per_token = k3(logps.policy_logps, logps.ref_logps)
    elif kl_estimator == "low_var_kl":  # forward KL on stored pi_0 samples
        per_token = low_var_kl(logprob=logps.ref_logps, ref_logprob=logps.policy_logps)
    else:
        per_token = generator(divergence, logps.policy_logps, logps.ref_logps)
    penalty = token_mean(per_token, logps.mask)
    return DivergenceOutput(divergence_coef * penalty, penalty.detach())


# `divergence=`: reverse_kl = TRL's k3 (beta), forward_kl/js/alpha = DPH-RL's generators on stored pi_0 samples (Li et
# al. 2025, arXiv 2509.07430), none = plain GRPO/DAPO. Group size etc.: train.num_generations & co.
OBJECTIVE = Objective(
    name="grpo",
    loss=loss,
    description="GRPO (Shao et al. 2024, arXiv 2402.03300) on TRL's GRPOTrainer + divergence_coef * D(pi_theta, pi_0); D by",
    divergences=("forward_kl", *[n for n in NAMES if n != "forward_kl"], "none"),
    data="groups",
    needs_reference=False,
    reference_with=("reverse_kl",),
    preferred_divergence="forward_kl",
    check=check,
)
