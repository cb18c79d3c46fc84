"""DPO, and its f-divergence generalisation exactly as TRL's DPOTrainer sigmoid loss with `f_divergence_type`.

Paper: Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
arXiv 2305.18290 (2023); f-divergences: Wang et al., arXiv 2309.16240.

    reverse_kl (plain DPO):  L = -log sigmoid(beta * (h_w - h_l))
    other divergences:        L = -log sigmoid(beta * (f'(u_w) - f'(u_l)))

- h = l_theta(y) - l_ref(y) (log-probs summed over completion tokens), u = e^h; w/l = chosen/rejected.
- f' = `Divergence.f_prime` (standardised, f'(1) = 0; reverse_kl gives f'(e^h) = h).
- beta: regularisation strength (inverse temperature of the implicit reward).

The math lives once, in `alignctl.objectives.fdpo`; this module only differs in its default divergence
(reverse_kl) and registry entry. Rewards: beta * f'(u), i.e. beta * h for reverse_kl.
"""

from __future__ import annotations

from typing import Annotated

from alignctl.constraints import Positive
from alignctl.divergences import NAMES, Divergence
from alignctl.objectives import fdpo
from alignctl.objectives.base import Objective, ObjectiveOutput, PreferenceLogps, resolve_divergence


def loss(
    logps: PreferenceLogps,
    *,
    divergence: Divergence | None,
    beta: Annotated[float, Positive] = 0.1,  # the DPO paper's value for controlled sentiment generation
) -> ObjectiveOutput:
    """Per-example DPO loss [B]; divergence None means reverse_kl (plain DPO)."""
    return fdpo.loss(logps, divergence=resolve_divergence(OBJECTIVE, divergence), beta=beta)


OBJECTIVE = Objective(
    name="dpo",
    loss=loss,
    description="DPO (Rafailov et al. 2023, arXiv 2305.18290): -log sigmoid(beta (h_w - h_l)); other divergences give f-DPO.",
    divergences=NAMES,
    data="pairs",
    needs_reference=True,
)
