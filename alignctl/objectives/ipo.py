"""IPO (Identity Preference Optimisation), with the f-divergence scores of TRL's DPOTrainer.

Paper: Azar et al., "A General Theoretical Paradigm to Understand Learning from Human Preferences",
arXiv 2310.12036 (2023), Eq. 17; f-divergence scores as in f-DPO (Wang et al., arXiv 2309.16240).

    L = (Delta - 1/(2 tau))^2,    Delta = f'(u_w)/|y_w| - f'(u_l)/|y_l|

- h = l_theta(y) - l_ref(y) (log-probs summed over completion tokens), u = e^h; w/l = chosen/rejected.
- f' = `Divergence.f_prime` (standardised; reverse_kl gives f'(e^h) = h, i.e. plain IPO).
- |y|: completion length in tokens (clamped to >= 1). TRL 1.16 divides each score by it and says the IPO
  authors confirmed this normalisation; the paper's formula has none.
- tau: the regularisation parameter (TRL passes it as `beta`).

Rewards: IPO has no sigmoid link (its implied preference is linear in Delta), so we return the scaled
length-normalised scores tau * f'(u)/|y|; their difference is tau * Delta, which has the sign of Delta
(reward accuracy is meaningful; sigmoid of the margin is only a monotone proxy for IPO's preference).
Numerics: f'(u) is bounded by e^80 (alignctl.divergences), but the square is not, so each score f'(u)/|y| is
clamped to +-1e18 (held constant, gradient zero beyond) to keep value and gradient finite in float32 for
forward_kl/alpha at log-ratios below about -41/alpha. Never reached with reverse_kl or js.
"""

from __future__ import annotations

from typing import Annotated

from alignctl.constraints import Positive
from alignctl.divergences import NAMES, Divergence
from alignctl.objectives.base import Objective, ObjectiveOutput, PreferenceLogps, resolve_divergence, wide

_SCORE_MAX = 1e18  # (2e18)^2 = 4e36 < float32 max 3.4e38


def loss(
    logps: PreferenceLogps,
    *,
    divergence: Divergence | None,
    tau: Annotated[float, Positive] = 0.1,  # TRL's default (passed as beta there); the IPO paper sweeps it
) -> ObjectiveOutput:
    """Per-example IPO loss [B]; divergence None means reverse_kl (plain IPO)."""
    div = resolve_divergence(OBJECTIVE, divergence)
    h_w = wide(logps.policy_chosen_logps) - wide(logps.ref_chosen_logps)
    h_l = wide(logps.policy_rejected_logps) - wide(logps.ref_rejected_logps)
    score_w = (div.f_prime(h_w) / wide(logps.chosen_lengths).clamp(min=1.0)).clamp(-_SCORE_MAX, _SCORE_MAX)
    score_l = (div.f_prime(h_l) / wide(logps.rejected_lengths).clamp(min=1.0)).clamp(-_SCORE_MAX, _SCORE_MAX)
    delta = score_w - score_l
    losses = (delta - 1.0 / (2.0 * tau)) ** 2
    return ObjectiveOutput(losses, (tau * score_w).detach(), (tau * score_l).detach())


OBJECTIVE = Objective(
    name="ipo",
    loss=loss,
    description="IPO (Azar et al. 2023, arXiv 2310.12036): (delta - 1/(2 tau))^2 on length-normalised log-ratios.",
    divergences=NAMES,
    data="pairs",
    needs_reference=True,
)
