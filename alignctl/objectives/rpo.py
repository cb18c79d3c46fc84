"""RPO (Liu et al.): DPO plus a summed NLL on the chosen response, against reward overoptimisation.

Paper: Liu, Lu, Zhang, Zhou, Wang et al., "Provably Mitigating Overoptimization in RLHF: Your SFT Loss is
Implicitly an Adversarial Regularizer", NeurIPS 2024, arXiv 2405.16436; reference code
github.com/YSLIU627/Regularized-Preference-Optimization (alignment-handbook/scripts/rpo_trainer.py).

    L = -log sigmoid(beta * (h_w - h_l)) + eta * beta * (-l_theta(y_w))

- h = l_theta(y) - l_ref(y); l_theta(y_w): policy log-prob of the chosen completion, SUMMED over its tokens
  (Liu's form; not Pang et al.'s "RPO", whose NLL is token-averaged with weight 1).
- beta: DPO regularisation strength; eta: weight of the SFT term relative to beta.

The DPO part is `alignctl.objectives.fdpo` with reverse_kl. Rewards: beta * h, as in DPO (the NLL term is
not a preference between the two responses).
"""

from __future__ import annotations

from typing import Annotated

from alignctl.constraints import NonNegative, Positive
from alignctl.divergences import Divergence
from alignctl.objectives import fdpo
from alignctl.objectives.base import Objective, ObjectiveOutput, PreferenceLogps, resolve_divergence, wide


def loss(
    logps: PreferenceLogps,
    *,
    divergence: Divergence | None,
    beta: Annotated[float, Positive] = 0.01,  # the authors' alignment-handbook recipe
    eta: Annotated[float, NonNegative] = 0.005,  # same source
) -> ObjectiveOutput:
    """Per-example RPO loss [B]; divergence None means reverse_kl (the only one accepted)."""
    div = resolve_divergence(OBJECTIVE, divergence)
    dpo = fdpo.loss(logps, divergence=div, beta=beta)
    nll = -wide(logps.policy_chosen_logps)
    return ObjectiveOutput(dpo.losses + eta * beta * nll, dpo.chosen_rewards, dpo.rejected_rewards)


OBJECTIVE = Objective(
    name="rpo",
    loss=loss,
    description="RPO (Liu et al. 2024, arXiv 2405.16436): DPO + eta * beta * NLL(chosen), NLL summed over tokens.",
    divergences=("reverse_kl",),
    data="pairs",
    needs_reference=True,
)
