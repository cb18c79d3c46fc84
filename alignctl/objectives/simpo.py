"""SimPO: reference-free, length-normalised preference optimisation with a target margin.

Paper: Meng, Xia, Chen, "SimPO: Simple Preference Optimization with a Reference-Free Reward", arXiv 2405.14734
(2024); reference code github.com/princeton-nlp/SimPO (`simpo_loss`).

    L = -log sigmoid(beta * lbar_w - beta * lbar_l - gamma),    gamma = gamma_beta_ratio * beta

- lbar = l_theta(y)/|y|: policy log-prob summed over completion tokens divided by the completion length
  (clamped to >= 1); w/l = chosen/rejected. No reference model.
- beta: reward scale; gamma: target reward margin, given as gamma/beta (`gamma_beta_ratio`) as in the reference
  code, which computes -log sigmoid(beta * (lbar_w - lbar_l - gamma/beta)), the same number.

Rewards: beta * lbar per response (the reward SimPO defines; the margin gamma is not part of it, so
sigmoid(r_w - r_l) is the Bradley-Terry probability before the margin).
"""

from __future__ import annotations

from typing import Annotated

from alignctl.constraints import NonNegative, Positive
from alignctl.divergences import Divergence
from alignctl.lazy import F
from alignctl.objectives.base import Objective, ObjectiveOutput, PreferenceLogps, resolve_divergence, wide


def loss(
    logps: PreferenceLogps,
    *,
    divergence: Divergence | None,
    beta: Annotated[float, Positive] = 2.0,  # SimPO reference code, llama-3-8b-base config
    # gamma / beta, same config and its README's suggested start (SimPOConfig's default: 0.25)
    gamma_beta_ratio: Annotated[float, NonNegative] = 0.5,
) -> ObjectiveOutput:
    """Per-example SimPO loss [B]; uses no divergence (divergence must be None)."""
    resolve_divergence(OBJECTIVE, divergence)
    chosen = beta * wide(logps.policy_chosen_logps) / wide(logps.chosen_lengths).clamp(min=1.0)
    rejected = beta * wide(logps.policy_rejected_logps) / wide(logps.rejected_lengths).clamp(min=1.0)
    losses = -F.logsigmoid(chosen - rejected - gamma_beta_ratio * beta)
    return ObjectiveOutput(losses, chosen.detach(), rejected.detach())


OBJECTIVE = Objective(
    name="simpo",
    loss=loss,
    description=(
        "SimPO (Meng et al. 2024, arXiv 2405.14734): -log sigmoid(beta (mean l_w - mean l_l) - gamma); no reference "
        "model."
    ),
    divergences=(),
    data="pairs",
    needs_reference=False,
)
