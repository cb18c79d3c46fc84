"""RLOO: REINFORCE with a leave-one-out baseline, as TRL's RLOOTrainer computes it, with GRPO's choice of divergence.

Paper: Ahmadian et al., "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human Feedback in
LLMs", arXiv 2402.14740; TRL 1.16's RLOOTrainer (`_generate_and_score_completions` for the advantages,
`_compute_loss` for the loss). Generator divergences: DPH-RL (Li et al., arXiv 2509.07430), as in objectives.grpo.

Each prompt has k completions y_1..y_k (train.num_generations) sampled from pi_old, with rewards r_i (TRL's
weighted sum over reward functions). Per-token log-probs: l_theta (policy, with grad), l_old (pi_old, detached), l_0
(the starting policy pi_0); m the completion mask.

Reward, by `divergence=`:
- reverse_kl (the paper's and TRL's RLOO): a sequence-level KL penalty in the reward,
      r'_i = r_i - divergence_coef * sum_t m_t (l_old,t - l_0,t),
  TRL's first-order (k1) estimate of KL(pi_theta || pi_0) summed over the completion's tokens, on pi_old's detached
  log-probs: it reaches the gradient through the advantage (REINFORCE on the KL), not as a loss term, and can be
  negative per token (GRPO's k3 is a per-token loss term, >= 0). divergence_coef is TRL's `beta` (the trainer sets it,
  so TRL loads pi_0 and scores the samples under it).
- forward_kl / js / alpha: r'_i = r_i; the trainer adds DPH-RL's generator term divergence_coef * token-mean
  f(pi_theta / pi_0) over pi_0's *stored* samples to the loss: objectives.grpo's loss (its exact estimator), the term
  objective=grpo adds (alignctl.trainers.online.StoredSampleDivergence). No reference model is kept.
- None (`divergence=none`): r'_i = r_i, plain RLOO.

Advantage (leave-one-out over the completions of the same prompt, `group_ids`):
    A_i = r'_i - (1/(k-1)) sum_{j != i} r'_j        (= k/(k-1) (r'_i - mean_j r'_j)),
then with normalize_advantages A <- (A - mean A) / (std A + 1e-4) over the batch (std with Bessel's correction; TRL
normalises over its generation batch, which is the trainer's batch on one process). A completion that no reward
function scored (NaN reward) is left out of its siblings' baselines (divisor: the scorable count - 1) and gets
advantage 0; so does a completion with no scorable sibling (as TRL: nan-aware sums, then NaN -> 0).

Loss (TRL's: a PPO-clipped *sequence-level* ratio, mean over the B completions of the batch):
    rho_i = exp(sum_t m_t l_theta,t - sum_t m_t l_old,t),
    L = -(1/B) sum_i min(rho_i A_i, clip(rho_i, 1 - clip_low, 1 + clip_high) A_i).
At the first update on a batch rho_i = 1 and the gradient is -(1/B) sum_i A_i grad log pi_theta(y_i | x): the paper's
estimator (1/k) sum_i [R(y_i) - mean_{j != i} R(y_j)] grad log pi(y_i | x), averaged over prompts. The paper makes
one update per batch and has no clipping; TRL clips for train.num_iterations > 1 (the clip range is the trainer's:
TRL's epsilon 0.2 below, train.clip_high above, as for grpo). TRL's RLOO has no importance correction for vLLM's
sampler; neither has this (GroupLogps.sampling_weights is not read).

Defaults: divergence_coef 0.05 = TRL's RLOOConfig.beta (DPH-RL's generator coefficient c is 0.01: set it for those);
normalize_advantages false = TRL's default (the paper does not normalise). Computed in float32 (float64 stays
float64).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, NamedTuple

from alignctl.constraints import NonNegative
from alignctl.divergences import Divergence
from alignctl.lazy import torch
from alignctl.objectives.base import GroupLogps, Objective, OnlineOutput, group_index, wide

NORMALIZE_EPS = 1e-4  # TRL's: (A - mean) / (std + 1e-4)


@dataclass(frozen=True)
class RlooLogps(GroupLogps):
    """GroupLogps plus the trainer's ratio clip range [1 - clip_low, 1 + clip_high] (TRL's epsilon_low/high)."""

    clip_low: float = 0.2
    clip_high: float = 0.2


class Advantages(NamedTuple):
    """`advantages` [B] (detached) and the shaped rewards r'_i [B] they come from."""

    advantages: torch.Tensor
    rewards: torch.Tensor


def sequence_kl(logps: GroupLogps) -> torch.Tensor:
    """TRL's RLOO KL estimate per completion [B]: sum_t m_t (l_old,t - l_0,t) (k1 on pi_old's log-probs)."""
    m = logps.mask.to(wide(logps.old_logps).dtype)
    return ((wide(logps.old_logps) - wide(logps.ref_logps)) * m).sum(-1).detach()


def nanstd(x: torch.Tensor) -> torch.Tensor:
    """Standard deviation of the non-NaN entries, Bessel-corrected; NaN with fewer than two."""
    keep = x[~torch.isnan(x)]
    return keep.std() if keep.numel() > 1 else torch.full((), float("nan"), dtype=x.dtype, device=x.device)


def leave_one_out(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """A_i = r_i - mean of r_j over i's scorable (non-NaN) siblings j != i; NaN where r_i is NaN or i has none."""
    r = wide(rewards).detach()
    scorable = ~torch.isnan(r)
    filled = torch.where(scorable, r, torch.zeros_like(r))
    dense, num_groups = group_index(group_ids)
    sums = torch.zeros(num_groups, dtype=r.dtype, device=r.device).index_add(0, dense, filled)
    counts = torch.zeros(num_groups, dtype=r.dtype, device=r.device).index_add(0, dense, scorable.to(r.dtype))
    return r - (sums[dense] - filled) / (counts[dense] - 1.0)


def advantages(
    logps: GroupLogps, *, divergence: Divergence | None, divergence_coef: float, normalize_advantages: bool
) -> Advantages:
    """The shaped rewards r'_i and their leave-one-out advantages (module docstring)."""
    rewards = wide(logps.rewards).detach()
    if divergence is not None and divergence.name == "reverse_kl":
        if logps.ref_logps is None:
            raise ValueError("divergence=reverse_kl puts KL(pi_theta || pi_0) in the reward: it needs ref_logps")
        rewards = rewards - divergence_coef * sequence_kl(logps).to(rewards.dtype)
    adv = leave_one_out(rewards, logps.group_ids)
    if normalize_advantages:
        adv = (adv - torch.nanmean(adv)) / (nanstd(adv) + NORMALIZE_EPS)
    return Advantages(torch.nan_to_num(adv, nan=0.0), rewards)


def loss(
    logps: RlooLogps,
    *,
    divergence: Divergence | None,
    # TRL's RLOOConfig.beta: the sequence-level KL's weight in the reward (reverse_kl), or the generator term's weight
    # on pi_0's stored samples (forward_kl/js/alpha; DPH-RL's c is 0.01)
    divergence_coef: Annotated[float, NonNegative] = 0.05,
    # TRL's RLOOConfig.normalize_advantages (default false; the paper does not normalise)
    normalize_advantages: bool = False,
) -> OnlineOutput:
    """TRL's RLOO loss on one batch of whole groups (module docstring); the generator divergences' term, on other
    samples, is objectives.grpo's. Logged stats: the clipped share and the mean shaped reward."""
    if divergence is not None and not isinstance(divergence, Divergence):
        raise TypeError(f"divergence must be a Divergence or None, not {type(divergence).__name__}")
    adv, shaped = advantages(logps, divergence=divergence, divergence_coef=divergence_coef,
                             normalize_advantages=normalize_advantages)  # fmt: skip
    policy, old = wide(logps.policy_logps), wide(logps.old_logps)
    m = logps.mask.to(policy.dtype)
    log_ratio = (policy * m).sum(-1) - (old * m).sum(-1)
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - logps.clip_low, 1.0 + logps.clip_high)
    adv = adv.to(policy.dtype)
    per_sequence = -torch.min(ratio * adv, clipped * adv)
    total = per_sequence.mean() if per_sequence.numel() else (policy * 0.0).sum()
    was_clipped = ((ratio < 1.0 - logps.clip_low) & (adv < 0)) | ((ratio > 1.0 + logps.clip_high) & (adv > 0))
    stats = {"clip_ratio": was_clipped.to(policy.dtype).mean().detach(), "shaped_reward": torch.nanmean(shaped)}
    return OnlineOutput(total, stats)


# `divergence=`: reverse_kl = TRL's RLOO (k1 KL, summed per sequence, in the reward), forward_kl/js/alpha = DPH-RL's
# generators on stored pi_0 samples (as grpo), none = plain RLOO. Group size etc.: train.num_generations & co.
OBJECTIVE = Objective(
    name="rloo",
    loss=loss,
    description=(
        "RLOO (Ahmadian et al. 2024, arXiv 2402.14740) on TRL's RLOOTrainer: leave-one-out baseline over a prompt's "
        "completions; reverse_kl in the reward (TRL), or + divergence_coef * D(pi_theta, pi_0) on stored pi_0 samples"
    ),
    divergences=("reverse_kl", "forward_kl", "js", "alpha", "none"),
    data="groups",
    # the leave-one-out baseline reads a prompt's k completions together: one micro-batch holds whole groups
    reads_groups=True,
    needs_reference=False,
    reference_with=("reverse_kl",),
    preferred_divergence="reverse_kl",
)
