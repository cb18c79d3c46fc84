"""f-DPO: DPO with a general f-divergence regulariser.

Paper: Wang, Jiang, Yang, Liu, Chen, "Beyond Reverse KL: Generalizing Direct Preference Optimization with Diverse
Divergence Constraints", arXiv 2309.16240 (2023).

    L = -log sigmoid(beta * (f'(u_w) - f'(u_l))),    u = pi_theta(y|x) / pi_ref(y|x) = exp(h)

- h = l_theta(y) - l_ref(y): sequence log-ratio (log-probs summed over completion tokens); w/l = chosen/rejected.
- f': the derivative of the divergence's generator, `Divergence.f_prime(h)` (alignctl.divergences, standardised
  so that f'(1) = 0; the constants of the paper's unstandardised f' cancel in the difference):
  reverse_kl h; forward_kl 1 - e^{-h}; js log 2 + log sigmoid(h); alpha (1 - e^{-alpha h})/alpha (the paper's
  alpha: alpha -> 0 is reverse KL, alpha -> 1 forward KL; TRL's f_alpha_divergence_coef is 1 - alpha).
- beta: regularisation strength.

With reverse_kl this is exactly DPO; it is the same computation as TRL 1.16's DPOTrainer sigmoid loss with
`f_divergence_type`. The implicit reward is r = beta f'(u) (+ a constant that cancels), returned as the
chosen/rejected rewards, so P(y_w > y_l) = sigmoid(r_w - r_l). The paper recommends JS as the trade-off between
alignment and diversity; that is this objective's default divergence. Computed in float32 (float64 stays float64);
`Divergence.f_prime` holds exponentials at e^80, so value and gradient stay finite for any log-ratio.
"""

from __future__ import annotations

from typing import Annotated

from alignctl.constraints import Positive
from alignctl.divergences import NAMES, Divergence
from alignctl.lazy import F
from alignctl.objectives.base import Objective, ObjectiveOutput, PreferenceLogps, resolve_divergence, wide


def loss(
    logps: PreferenceLogps,
    *,
    divergence: Divergence | None,
    beta: Annotated[float, Positive] = 0.1,  # the f-DPO paper's value (its IMDB experiments follow DPO's)
) -> ObjectiveOutput:
    """Per-example f-DPO loss [B]; divergence None means js."""
    div = resolve_divergence(OBJECTIVE, divergence)
    h_w = wide(logps.policy_chosen_logps) - wide(logps.ref_chosen_logps)
    h_l = wide(logps.policy_rejected_logps) - wide(logps.ref_rejected_logps)
    chosen = beta * div.f_prime(h_w)
    rejected = beta * div.f_prime(h_l)
    losses = -F.logsigmoid(chosen - rejected)
    return ObjectiveOutput(losses, chosen.detach(), rejected.detach())


OBJECTIVE = Objective(
    name="fdpo",
    loss=loss,
    description="f-DPO (Wang et al. 2023, arXiv 2309.16240): -log sigmoid(beta (f'(u_w) - f'(u_l))), u = pi/pi_ref.",
    divergences=("js", *[n for n in NAMES if n != "js"]),
    data="pairs",
    needs_reference=True,
    preferred_divergence="js",
)
