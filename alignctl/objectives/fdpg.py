"""f-DPG: f-divergence policy gradient towards the target p(y | x) proportional to pi_0(y | x) exp(r(x, y) / beta).

Paper: Go et al., "Aligning Language Models with Preferences through f-divergence Minimization", ICML 2023,
arXiv 2302.08215; reference code github.com/naver/disco (`disco/tuners/losses/*.py`, `fdpg_tuner.py`).

Target: P(y) = a(y) e^{r(y)/beta}, a = pi_0 (the starting policy), p = P / Z. Reverse KL(pi_theta || p) is exactly
KL-regularised RLHF with coefficient beta. The gradient of D_f(pi_theta || p) = E_p f(pi_theta / p) is
E_{pi_theta}[f'(pi_theta / p) grad log pi_theta]; with samples from a proposal q (the sampling policy pi_old):
    g = -E_q[(pi_theta / q) (R - B) grad log pi_theta],   R(y) = -f'(t),   t = pi_theta(y) Z / P(y),
at sequence level: log t = log pi_theta(y) + log Z - log a(y) - r(y) / beta, log-probs summed over completion tokens.
Pseudo-rewards from alignctl.divergences' standardised generators (f(1) = f'(1) = 0), each the paper's up to an
additive constant that the baseline removes:
    reverse_kl: -log t           (paper: -1 - log t)
    forward_kl: 1/t - 1          (paper: 1/t; DPG/GDC)
    js:         log((1 + 1/t)/2) (paper: the same)
    alpha:      (t^-a - 1) / a
Prompts: Z = Z(x) depends on the prompt (conditional target); the trainer keeps a running estimate per prompt, the
mean of P/q over every completion sampled for it so far (an importance-sampling estimate, unbiased for any proposal),
and passes log Z per completion (`log_z`).
Baseline B: the mean pseudo-reward of the completions that share the prompt (group), as GRPO/RLOO do; naver/disco's
window mean over 1024 samples suits unconditional targets, where one Z serves every sample.
Loss: its gradient is g with token-mean normalisation (as TRL's default "dapo" GRPO loss, so learning rates carry
over from objective=grpo), its value the batch's estimate of D_f(pi_theta || p) = E_q[w f(t) / t]:
    L = -sum_i A_i (s_i - sg(s_i)) / (completion tokens in the batch) + sg(mean_i w_i f(t_i) / t_i),
    s_i = sum_t log pi_theta(y_i,t),   A_i = sg(w_i (R_i - B_i)),   w_i = pi_theta(y_i) / q(y_i)
(w = 1 at the first update on a batch). Completions sampled by vLLM (model.rollout=vllm) carry TRL's truncated
importance ratio r = pi_old / pi_vllm (per token or per completion, GroupLogps.sampling_weights): each token's term
of the gradient is multiplied by it, as TRL's GRPO multiplies its per-token loss. Writing the gradient term as
s - sg(s), whose value is 0, keeps the value finite where A * s would overflow (pseudo-rewards near their e^80
ceiling times thousands of nats).
Default beta 0.1 (the temperature of the tilt; DPO's beta for the same KL-regularised target). Computed in float32
(float64 stays float64).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated

from alignctl.constraints import Positive
from alignctl.divergences import NAMES, Divergence
from alignctl.lazy import torch
from alignctl.objectives.base import GroupLogps, Objective, OnlineOutput, group_index, wide


@dataclass(frozen=True)
class TargetLogps(GroupLogps):
    """GroupLogps (with `ref_logps` = pi_0's) plus `log_z` [B]: the running log-partition estimate of each
    completion's prompt."""

    log_z: torch.Tensor | None = None


def sequence_logps(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of per-token log-probs over real tokens, [B, T] -> [B]."""
    logps = wide(token_logps)
    return (logps * mask.to(logps.dtype)).sum(-1)


def log_importance_partition(stats: GroupLogps, *, beta: float) -> torch.Tensor:
    """log(P(y) / q(y)) per completion: log a(y) + r(y)/beta - log q(y). The mean of P/q over y ~ q is Z."""
    rewards = wide(stats.rewards)
    return sequence_logps(stats.ref_logps, stats.mask) + rewards / beta - sequence_logps(stats.old_logps, stats.mask)


def log_ratio_to_target(stats: TargetLogps, *, beta: float) -> torch.Tensor:
    """log t = log pi_theta(y) + log Z - log a(y) - r(y)/beta per completion (detached)."""
    with torch.no_grad():
        log_p = sequence_logps(stats.ref_logps, stats.mask) + wide(stats.rewards) / beta - wide(stats.log_z)
        return sequence_logps(stats.policy_logps, stats.mask) - log_p


def pseudo_rewards(divergence: Divergence, log_t: torch.Tensor) -> torch.Tensor:
    """R = -f'(t) for each completion, from log t."""
    return -divergence.f_prime(log_t)


def centered_pseudo_rewards(divergence: Divergence, log_t: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """R - B, B the group mean of R, computed from R's varying part: R less the constant the baseline removes
    exactly (forward_kl: 1/t for 1/t - 1, js: -logsigmoid(log t) for -log 2 - logsigmoid(log t), alpha: t^-a / a for
    (t^-a - 1) / a). In float32 the constant swamps that part where it is small (forward_kl at log t >= 10, where
    1/t < 5e-5: R - B ~0.1% off, and all zero beyond log t ~ 17); without it R - B keeps its relative precision."""
    varying = -divergence.f_prime_varying(log_t)  # R = -f'(t), less the constant the baseline removes
    return varying - group_mean(varying, group_ids)


def group_mean(values: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Each entry replaced by the mean over the entries of its group."""
    dense, num_groups = group_index(group_ids)
    sums = torch.zeros(num_groups, dtype=values.dtype, device=values.device).index_add_(0, dense, values)
    counts = torch.zeros(num_groups, dtype=values.dtype, device=values.device).index_add_(0, dense, torch.ones_like(values))
    return (sums / counts)[dense]


def loss(
    stats: TargetLogps,
    *,
    divergence: Divergence | None,
    # temperature of the target's tilt; reverse KL to it is KL-regularised RL with this coefficient
    beta: Annotated[float, Positive] = 0.1,
) -> OnlineOutput:
    """f-DPG's surrogate loss on one batch of groups; see the module docstring. Logged stats: mean pseudo-reward,
    mean IS weight, mean log Z, and the batch's estimate of D_f(pi_theta || p) = E_q[w f(t) / t]."""
    if not isinstance(divergence, Divergence):
        raise ValueError(f"objective=fdpg needs a divergence ({', '.join(NAMES)}), not {divergence!r}")
    if stats.ref_logps is None or stats.log_z is None:
        raise ValueError("objective=fdpg needs pi_0's log-probs (ref_logps) and the log-partition estimates (log_z)")
    policy_seq = sequence_logps(stats.policy_logps, stats.mask)
    stats = dataclasses.replace(stats, log_z=stats.log_z.to(policy_seq.dtype))  # compute dtype throughout
    log_t = log_ratio_to_target(stats, beta=beta)
    rewards = pseudo_rewards(divergence, log_t)
    with torch.no_grad():
        weights = torch.exp(policy_seq.detach() - sequence_logps(stats.old_logps, stats.mask))
        advantages = weights * centered_pseudo_rewards(divergence, log_t, stats.group_ids)
        estimate = (weights * divergence.f(log_t) * torch.exp(-log_t.clamp(-80.0, 80.0))).mean()
    m = stats.mask.to(policy_seq.dtype)
    if stats.sampling_weights is None:
        gradient_term = -(advantages * (policy_seq - policy_seq.detach())).sum() / m.sum().clamp(min=1.0)
    else:  # per token: A_i r_it (log pi_theta(y_it) - sg), r the vLLM sampler's ratio; r = 1 gives the line above
        tokens = wide(stats.policy_logps)
        weighted = advantages[:, None] * wide(stats.sampling_weights) * (tokens - tokens.detach()) * m
        gradient_term = -weighted.sum() / m.sum().clamp(min=1.0)
    return OnlineOutput(
        gradient_term + estimate,
        {
            "pseudo_reward": rewards.mean(),
            "is_weight": weights.mean(),
            "log_z": wide(stats.log_z).mean(),
            "divergence_to_target": estimate,
        },
    )


OBJECTIVE = Objective(
    name="fdpg",
    loss=loss,
    description=(
        "f-DPG (Go et al. 2023, arXiv 2302.08215): policy gradient on D_f(pi_theta || p), p proportional to pi_0 exp(r / "
        "beta)."
    ),
    divergences=("js", *[n for n in NAMES if n != "js"]),
    data="groups",
    reads_groups=True,
    needs_reference=True,
)
