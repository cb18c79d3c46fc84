"""DisCO: discriminative constrained optimisation for RL with verifiable (binary) rewards.

Paper: Li et al., "DisCO: Reinforcing Large Reasoning Models with Discriminative Constrained Optimization",
arXiv 2505.12366; reference code github.com/Optimization-AI/DisCO (`verl/verl/trainer/ppo/core_algos.py`,
`compute_policy_loss_{disco,discob}_{logL,Lratio}`).

Each prompt q has G completions sampled from pi_old, split by reward into positives O+ (reward > positive_threshold)
and negatives O-. A completion's token-averaged score:
    logL:   s(o) = (1/|o|) sum_t log pi_theta(o_t | .)
    Lratio: s(o) = (1/|o|) sum_t pi_theta(o_t | .) / pi_old(o_t | .)
Per-prompt objective (maximised):
    dro=false (DisCO-b): J_q = mean_{O+} s - mean_{O-} s
    dro=true  (DisCO):   J_q = mean_{O+} s - tau log mean_{O-} exp(s / tau)   (softmax-weighted negatives; tau -> inf
                         gives DisCO-b)
Loss:
    L = -(1/N_q) sum_q J_q + (constraint_weight / 2) [D - delta]_+^2,
    D = token mean over the batch of (log pi_old - log pi_theta), an estimate of KL(pi_old || pi_theta).
Prompts whose completions are all positive or all negative have no J_q (dropped, as in the paper) but count in N_q.
The paper's code writes the penalty as beta sg([D - delta]_+) D and log S as S / sg(S): same gradients as the formula
above, which is what is computed here (its value is the formula's too).

The constraint is against pi_old, the sampling policy, not pi_0: with one update per sampled batch (TRL's
num_iterations = 1, alignctl's train.num_iterations default) pi_theta = pi_old at the update, so D = 0 and the penalty
is inactive; train.num_iterations > 1 reuses a batch and lets it bind. There is no `divergence=` option.
Completions sampled by vLLM (model.rollout=vllm) carry TRL's truncated importance ratio pi_old / pi_vllm
(GroupLogps.sampling_weights); each token's term of s(o) is multiplied by it, as TRL's GRPO multiplies its per-token
loss (the paper's code samples with the policy it trains, where the ratio is 1).
Defaults (official scripts): delta 1e-4, constraint_weight (the paper's beta) 1e3, tau 10 for logL and 1 for Lratio
(tau = None picks these). Computed in float32 (float64 stays float64).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from alignctl.constraints import NonNegative, Positive
from alignctl.lazy import torch
from alignctl.objectives.base import GroupLogps, Objective, OnlineOutput, group_index, token_mean, wide

SCORES = ("logL", "Lratio")
DEFAULT_TAU = {"logL": 10.0, "Lratio": 1.0}  # the official scripts' values


def completion_scores(stats: GroupLogps, score: str) -> torch.Tensor:
    """Token-averaged score s(o) [B] of each completion: mean log-prob (logL) or mean probability ratio (Lratio),
    each token's term weighted by the vLLM sampler's importance ratio where there is one (GroupLogps)."""
    policy, old = wide(stats.policy_logps), wide(stats.old_logps)
    per_token = policy if score == "logL" else torch.exp(policy - old)
    if stats.sampling_weights is not None:
        per_token = per_token * wide(stats.sampling_weights)
    m = stats.mask.to(policy.dtype)
    return (per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)


def negative_term(negative_scores: torch.Tensor, *, dro: bool, tau: float) -> torch.Tensor:
    """mean s (DisCO-b) or tau log mean exp(s / tau) (DRO) over one prompt's negatives; the DRO value is >= the mean."""
    if not dro:
        return negative_scores.mean()
    return tau * (torch.logsumexp(negative_scores / tau, dim=0) - math.log(negative_scores.numel()))


def loss(
    stats: GroupLogps,
    *,
    divergence: None,
    # logL (mean token log-prob) or Lratio (mean token ratio pi_theta / pi_old)
    score: Literal["logL", "Lratio"] = "logL",
    dro: bool = True,  # true: DisCO (tau log-mean-exp over negatives); false: DisCO-b (plain mean)
    tau: Annotated[float | None, Positive] = None,  # null: the official scripts' 10 for logL, 1 for Lratio
    delta: Annotated[float, Positive] = 1e-4,  # KL budget to pi_old (official scripts)
    # the paper's beta on (1/2)[D - delta]_+^2 (official scripts)
    constraint_weight: Annotated[float, NonNegative] = 1e3,
    # a completion is a positive when its reward > this (exact_match: 1 right, 0 wrong)
    positive_threshold: float = 0.5,
) -> OnlineOutput:
    """DisCO's loss on one batch of groups; see the module docstring. Logged stats: the mean objective J, the share
    of prompts kept (both positives and negatives present), D and the penalty."""
    if divergence is not None:
        raise ValueError(f"objective=disco takes no divergence (its constraint is KL(pi_old || pi_theta)), not {divergence!r}")
    if score not in SCORES:
        raise ValueError(f"objective.score={score!r} is not valid; choose one of: {', '.join(SCORES)}")
    tau = DEFAULT_TAU[score] if tau is None else tau
    s = completion_scores(stats, score)
    positive = stats.rewards > positive_threshold
    dense, num_groups = group_index(stats.group_ids)
    terms = []
    for g in range(num_groups):
        members = dense == g
        pos, neg = s[members & positive], s[members & ~positive]
        if pos.numel() and neg.numel():
            terms.append(pos.mean() - negative_term(neg, dro=dro, tau=tau))
    objective = torch.stack(terms).sum() / num_groups if terms else (s * 0.0).sum()
    kl_old = token_mean(wide(stats.old_logps) - wide(stats.policy_logps), stats.mask)
    penalty = 0.5 * constraint_weight * torch.clamp(kl_old - delta, min=0.0) ** 2
    kept = torch.tensor(len(terms) / max(num_groups, 1))
    return OnlineOutput(
        -objective + penalty,
        {"objective": objective.detach(), "kept_groups": kept, "kl_old": kl_old.detach(), "penalty": penalty.detach()},
    )


OBJECTIVE = Objective(
    name="disco",
    loss=loss,
    description=(
        "DisCO (Li et al. 2025, arXiv 2505.12366): score(positives) - DRO score(negatives) per prompt, s.t. KL(pi_old || "
        "pi_theta) <= delta."
    ),
    divergences=(),
    data="groups",
    reads_groups=True,
    needs_reference=False,
    reward_threshold_only=True,
)
