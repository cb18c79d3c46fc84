"""ORPO: monolithic preference optimisation with an odds-ratio penalty on the SFT loss (reference-free).

Paper: Hong, Lee, Thorne, "ORPO: Monolithic Preference Optimization without Reference Model", arXiv 2403.07691
(2024), eqs. (4), (6), (7); authors' code github.com/xfactlab/orpo (`src/orpo_trainer.py`, where lambda is `alpha`);
TRL: `trl.experimental.orpo.ORPOTrainer` (where lambda is `ORPOConfig.beta`).

    L = NLL(y_w) + lam * [-log sigmoid(r_w - r_l)],   r = log odds = log(P / (1 - P)) = lbar - log(1 - exp(lbar)),
    NLL(y_w) = -lbar_w,                                P = exp(lbar)

- lbar = l_theta(y)/|y|: policy log-prob summed over completion tokens divided by the completion length (clamped to
  >= 1); w/l = chosen/rejected. No reference model.
- lam: weight of the odds-ratio term (the paper's lambda).

Readings taken:
- P (hence the odds) is the per-token geometric mean, exp(lbar), as in the paper, its code and TRL.
- The SFT term is the token-mean NLL of the chosen completion per example, -lbar_w; the trainer then averages over
  examples (the paper's expectation over (x, y_w, y_l)). The paper's L_SFT is the causal-LM NLL "of generating the
  reference tokens", averaged over tokens; TRL differs in two ways: its NLL also covers the prompt tokens ("computed
  over the full prompt and response") and it is one token mean pooled over the chosen half of the batch, so a longer
  chosen response weighs more. The authors' code pools over the batch too and includes the prompt unless
  `--disable_prompt_loss`.
- lam = 0.1 by default: TRL's ORPOConfig.beta default and the authors' Mistral-ORPO-beta script (`--alpha 0.1`).
Numerics: log(1 - P) is computed as log1mexp(lbar) (TRL branches at -log 2 the same way; the authors' code takes
log1p(-exp(lbar))), with lbar clamped to <= -1e-5 (P <= 0.99999) there only (alignctl.objectives.base.log_1m_p, as
ASFT). Where TRL's loss or gradient is infinite or NaN (a response with P = 1, or an impossible lbar > 0), this gives
large finite log-odds. Computed in float32 for low-precision inputs (TRL casts its log-probs to float32), float64
for float64.

Rewards: the log-odds r per response (detached), so sigmoid(r_w - r_l) is ORPO's odds-ratio preference probability
and r_w - r_l is the log odds ratio TRL logs as `log_odds_chosen`. TRL's `rewards/*` are beta * lbar instead.
"""

from __future__ import annotations

from typing import Annotated

from alignctl.constraints import NonNegative
from alignctl.divergences import Divergence
from alignctl.lazy import F
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
    lam: Annotated[float, NonNegative] = 0.1,  # TRL ORPOConfig.beta; the authors' Mistral-ORPO-beta script
) -> ObjectiveOutput:
    """Per-example ORPO loss [B]; uses no divergence (divergence must be None)."""
    resolve_divergence(OBJECTIVE, divergence)
    lbar_w = wide(logps.policy_chosen_logps) / wide(logps.chosen_lengths).clamp(min=1.0)
    lbar_l = wide(logps.policy_rejected_logps) / wide(logps.rejected_lengths).clamp(min=1.0)
    chosen = lbar_w - log_1m_p(lbar_w)  # log odds
    rejected = lbar_l - log_1m_p(lbar_l)
    losses = -lbar_w - lam * F.logsigmoid(chosen - rejected)
    return ObjectiveOutput(losses, chosen.detach(), rejected.detach())


OBJECTIVE = Objective(
    name="orpo",
    loss=loss,
    description=(
        "ORPO (Hong et al. 2024, arXiv 2403.07691): NLL(chosen) + lam (-log sigmoid(log odds_w - log odds_l)), odds of"
        " the mean token probability; no reference model."
    ),
    divergences=(),
    data="pairs",
    needs_reference=False,
)
