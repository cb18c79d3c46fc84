"""TDPO2: token-level DPO with a stop-gradient on the chosen response's sequential KL.

Paper: Zeng et al., "Token-level Direct Preference Optimization", ICML 2024, arXiv 2404.11999; reference code
github.com/Vance0124/Token-level-Direct-Preference-Optimization (trainers.py `tdpo_loss`, if_tdpo2=True).

    L = -log sigmoid(beta * (h_w - h_l + alpha * (sg(K_w) - K_l)))

- h = l_theta(y) - l_ref(y) (log-probs summed over completion tokens); w/l = chosen/rejected.
- K = D_SeqKL(y): sum over completion positions of the full-vocabulary D(pi_ref || pi_theta) per token
  (`PreferenceLogps.chosen_seq_kl` / `rejected_seq_kl`, computed by the trainer with `Divergence.token`;
  forward_kl = KL(pi_ref || pi_theta) is the paper's and the default; the others are an alignctl extension).
- sg: stop-gradient. No gradient reaches K_w; only the rejected response's KL is pushed down.
- alpha: weight of the KL term (0 gives DPO); beta: regularisation strength.

Rewards (a reading): beta * (h + alpha K) per response, detached, so P(y_w > y_l) = sigmoid(r_w - r_l) holds for
the logit this loss uses. The reference code logs beta * (h + K) regardless of alpha (equal only at alpha = 1).
"""

from __future__ import annotations

from typing import Annotated

from alignctl.constraints import NonNegative, Positive
from alignctl.divergences import NAMES, Divergence
from alignctl.lazy import F
from alignctl.objectives import tdpo1
from alignctl.objectives.base import Objective, ObjectiveOutput, PreferenceLogps, resolve_divergence


def loss(
    logps: PreferenceLogps,
    *,
    divergence: Divergence | None,
    beta: Annotated[float, Positive] = 0.1,  # the authors' config/loss/tdpo.yaml
    # same source (whose if_tdpo2 has been false, i.e. TDPO1, since 2024-07: docs/conventions.md)
    alpha: Annotated[float, NonNegative] = 0.5,
) -> ObjectiveOutput:
    """Per-example TDPO2 loss [B]; divergence (the token term the trainer computed) None means forward_kl."""
    resolve_divergence(OBJECTIVE, divergence)
    h_w, h_l, k_w, k_l = tdpo1.terms(logps)
    logits = beta * (h_w - h_l + alpha * (k_w.detach() - k_l))
    losses = -F.logsigmoid(logits)
    chosen = beta * (h_w + alpha * k_w)
    rejected = beta * (h_l + alpha * k_l)
    return ObjectiveOutput(losses, chosen.detach(), rejected.detach())


OBJECTIVE = Objective(
    name="tdpo2",
    loss=loss,
    description="TDPO2 (Zeng et al. 2024, arXiv 2404.11999): -log sigmoid(beta (h_w - h_l + alpha (sg(K_w) - K_l))).",
    divergences=("forward_kl", *[n for n in NAMES if n != "forward_kl"]),
    data="pairs",
    needs_reference=True,
    needs_token_divergence=True,
)
