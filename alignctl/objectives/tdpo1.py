"""TDPO1: token-level DPO with the sequential KL on both responses.

Paper: Zeng et al., "Token-level Direct Preference Optimization", ICML 2024, arXiv 2404.11999; reference code
github.com/Vance0124/Token-level-Direct-Preference-Optimization (trainers.py `tdpo_loss`, if_tdpo2=False).

    L = -log sigmoid(beta * (h_w - h_l + K_w - K_l))

- h = l_theta(y) - l_ref(y) (log-probs summed over completion tokens); w/l = chosen/rejected.
- K = D_SeqKL(y) = sum over completion positions t of D(pi_ref(.|s_t) || pi_theta(.|s_t)) over the full
  vocabulary: `PreferenceLogps.chosen_seq_kl` / `rejected_seq_kl`, computed by the trainer with
  `Divergence.token`. The paper's divergence is KL(pi_ref || pi_theta) = our forward_kl (the default); the other
  divergences substitute that per-token term (an alignctl extension, not in the paper). This loss only consumes K.
- beta: regularisation strength. This is the paper's -log sigmoid(u - delta) with delta = beta (K_l - K_w).

Rewards: beta * (h + K) per response (as the reference code logs them), so P(y_w > y_l) = sigmoid(r_w - r_l).
"""

from __future__ import annotations

from typing import Annotated

from alignctl.constraints import Positive
from alignctl.divergences import NAMES, Divergence
from alignctl.lazy import F, torch
from alignctl.objectives.base import Objective, ObjectiveOutput, PreferenceLogps, resolve_divergence, wide


def terms(logps: PreferenceLogps) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h_w, h_l, K_w, K_l) in the compute dtype; shared with tdpo2."""
    if logps.chosen_seq_kl is None or logps.rejected_seq_kl is None:
        raise ValueError("TDPO needs PreferenceLogps.chosen_seq_kl and rejected_seq_kl (sums of Divergence.token)")
    h_w = wide(logps.policy_chosen_logps) - wide(logps.ref_chosen_logps)
    h_l = wide(logps.policy_rejected_logps) - wide(logps.ref_rejected_logps)
    return h_w, h_l, wide(logps.chosen_seq_kl), wide(logps.rejected_seq_kl)


def loss(
    logps: PreferenceLogps,
    *,
    divergence: Divergence | None,
    beta: Annotated[float, Positive] = 0.1,  # the authors' config/loss/tdpo.yaml
) -> ObjectiveOutput:
    """Per-example TDPO1 loss [B]; divergence (the token term the trainer computed) None means forward_kl."""
    resolve_divergence(OBJECTIVE, divergence)
    h_w, h_l, k_w, k_l = terms(logps)
    chosen = beta * (h_w + k_w)
    rejected = beta * (h_l + k_l)
    losses = -F.logsigmoid(chosen - rejected)
    return ObjectiveOutput(losses, chosen.detach(), rejected.detach())


OBJECTIVE = Objective(
    name="tdpo1",
    loss=loss,
    description=(
        "TDPO1 (Zeng et al. 2024, arXiv 2404.11999): -log sigmoid(beta (h_w - h_l + K_w - K_l)), K = sequential "
        "full-vocab divergence."
    ),
    divergences=("forward_kl", *[n for n in NAMES if n != "forward_kl"]),
    data="pairs",
    needs_reference=True,
    needs_token_divergence=True,
)
