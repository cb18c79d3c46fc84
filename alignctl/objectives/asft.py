"""ASFT: Aligned Supervised Fine-Tuning through absolute likelihood (reference-free).

Paper: Wang, Sun, Hua, Fang, "ASFT: Aligned Supervised Fine-Tuning through Absolute Likelihood",
arXiv 2409.10571 (2024). Not "Anchored SFT" (arXiv 2509.23753).

    L = NLL(y_w) + lam * [-log sigmoid(r_w) - log sigmoid(-r_l)],   r = log(P / (1 - P)),   P = exp(lbar)
      = -lbar_w + lam * [-lbar_w - log(1 - exp(lbar_l))]            (since sigmoid(log odds) = P)

- lbar = l_theta(y)/|y|: policy log-prob summed over completion tokens divided by the length (clamped >= 1);
  w/l = chosen/rejected. No reference model. Each response is scored by its own absolute likelihood; there is no
  Bradley-Terry coupling between the two terms.
- lam: weight of the alignment term.

Readings taken (the spec marks the exact weighting and normalisation unverified, its section 14):
- P = exp(lbar) and the odds as in ORPO (the method is a small variant of ORPO);
- NLL(y_w) is token-averaged, -lbar_w, as ORPO's SFT term;
- lam = 0.1 by default, ORPO's lambda (TRL ORPOConfig.beta), pending the paper's value.
Numerics: log(1 - P) is computed as log1mexp(lbar) with lbar clamped to <= -1e-5 (P <= 0.99999) there only, so a
rejected response of probability ~1 gives a large finite loss (about 11.5 lam, gradient zero) instead of infinity.

Rewards: the log-odds r = lbar - log(1 - exp(lbar)) per response (detached); sigmoid(r_w - r_l) is ORPO's odds-ratio
preference probability.
"""

from __future__ import annotations

from typing import Annotated

from alignctl.constraints import NonNegative
from alignctl.divergences import Divergence
from alignctl.objectives.base import (
    Objective,
    ObjectiveOutput,
    PreferenceLogps,
    log_1m_p,
    resolve_divergence,
    wide,
)


def loss(
    logps: PreferenceLogps,
    *,
    divergence: Divergence | None,
    # ORPO's lambda, which ASFT builds on; the paper's value is unverified (spec section 14)
    lam: Annotated[float, NonNegative] = 0.1,
) -> ObjectiveOutput:
    """Per-example ASFT loss [B]; uses no divergence (divergence must be None)."""
    resolve_divergence(OBJECTIVE, divergence)
    lbar_w = wide(logps.policy_chosen_logps) / wide(logps.chosen_lengths).clamp(min=1.0)
    lbar_l = wide(logps.policy_rejected_logps) / wide(logps.rejected_lengths).clamp(min=1.0)
    log_1m_p_l = log_1m_p(lbar_l)  # log sigmoid(-r_l) = log(1 - P_l)
    losses = -lbar_w + lam * (-lbar_w - log_1m_p_l)  # log sigmoid(r_w) = log P_w = lbar_w
    chosen = lbar_w - log_1m_p(lbar_w)
    rejected = lbar_l - log_1m_p_l
    return ObjectiveOutput(losses, chosen.detach(), rejected.detach())


OBJECTIVE = Objective(
    name="asft",
    loss=loss,
    description=(
        "ASFT (Wang et al. 2024, arXiv 2409.10571): NLL(chosen) + lam (-log P_w - log(1 - P_l)), absolute likelihoods, no"
        " reference."
    ),
    divergences=(),
    data="pairs",
    needs_reference=False,
)
