"""Reward model: a Bradley-Terry scalar reward learned from preference pairs, trained by TRL's RewardTrainer.

Papers: Bradley, Terry, "Rank Analysis of Incomplete Block Designs" (1952); Ouyang et al., "Training language
models to follow instructions with human feedback" (InstructGPT), arXiv 2203.02155 (2022), eq. (1); the optional
margin: Touvron et al., "Llama 2", arXiv 2307.09288 (2023), eq. (2); the centering term: Eisenstein et al.,
"Helping or Herding? Reward Model Ensembles Mitigate but do not Eliminate Reward Hacking", arXiv 2312.09244 (2023).
TRL: `trl.RewardTrainer.compute_loss` (TRL 1.16).

    L = -log sigmoid(r_w - r_l - m) + center_rewards_coefficient * (r_w + r_l)^2

- r_w, r_l: the scalar output (one logit, num_labels = 1) of a sequence classifier on prompt + chosen and
  prompt + rejected; P(y_w > y_l) = sigmoid(r_w - r_l) is the Bradley-Terry model.
- m: a per-pair margin (Llama 2's), from the data's optional `margin` column; 0 without one.
- center_rewards_coefficient: pulls the rewards of each pair towards mean 0 (Eisenstein et al.'s "centering"),
  which Bradley-Terry leaves free (it reads only differences); 0 turns it off.

Same computation as TRL 1.16: its batch loss is -logsigmoid(r_w - r_l - m).mean() + c * mean((r_w + r_l)^2), the
mean over the batch of these per-pair losses. tests/objectives/test_reward_model.py checks both against TRL's own
compute_loss. Computed in float32 for low-precision rewards (float64 stays float64).

Rewards: r_w, r_l themselves (detached), so sigmoid(r_w - r_l) is the model's preference probability; no divergence
and no reference model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from alignctl.constraints import NonNegative
from alignctl.divergences import Divergence
from alignctl.lazy import F, torch
from alignctl.objectives.base import Objective, ObjectiveOutput, resolve_divergence, wide


@dataclass(frozen=True)
class PairRewards:
    """The reward model's scores of a batch of pairs: `chosen`, `rejected` [B]; `margin` [B] or None (all 0)."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    margin: torch.Tensor | None = None


def loss(
    rewards: PairRewards,
    *,
    divergence: Divergence | None,
    center_rewards_coefficient: Annotated[float, NonNegative] = 0.0,  # TRL's default (None: off); its docs: 0.01
) -> ObjectiveOutput:
    """Per-pair Bradley-Terry loss [B]; uses no divergence (divergence must be None)."""
    resolve_divergence(OBJECTIVE, divergence)
    chosen, rejected = wide(rewards.chosen), wide(rewards.rejected)
    difference = chosen - rejected
    if rewards.margin is not None:
        difference = difference - rewards.margin.to(difference)
    losses = -F.logsigmoid(difference) + center_rewards_coefficient * (chosen + rejected) ** 2
    return ObjectiveOutput(losses, chosen.detach(), rejected.detach())


OBJECTIVE = Objective(
    name="reward_model",
    loss=loss,
    description=(
        "Bradley-Terry reward model (InstructGPT, arXiv 2203.02155; TRL's RewardTrainer): -log sigmoid(r_w - r_l - "
        "margin) + c (r_w + r_l)^2; saves a sequence classifier for reward=classifier reward.mode=logit."
    ),
    divergences=(),
    data="pairs",
    needs_reference=False,
    trains_reward_model=True,
)
