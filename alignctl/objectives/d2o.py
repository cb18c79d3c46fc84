"""D2O: Distributional Dispreference Optimization, learning from human negatives and self-samples.

Paper: Duan et al., "Negating Negatives: Alignment with Human Negative Samples via Distributional Dispreference
Optimization", arXiv 2403.03419 (2024).

    L = -log sigmoid( (beta/K) sum_i log[pi_theta(y_i) / pi_r^-(y_i)]  -  alpha log[pi_theta(y_l) / pi_r^+(y_l)] )

- y_l: the human negative; y_1..y_K: self-samples from pi_SFT (generated offline). log pi(y): log-probs summed over
  completion tokens (`NegativeLogps`; `ref_sample_logps` is pi_r^-, `ref_negative_logps` is pi_r^+).
- K: the number of self-samples of that prompt (`sample_mask` allows K to vary per prompt).
- beta: weight of the self-samples (each gets beta/K); alpha: weight of the negative.
Which of pi_r^+/pi_r^- the paper updates online is unverified (spec section 14); this loss takes whatever log-probs
the trainer supplies (simplest: both = pi_SFT, frozen). The defaults beta = alpha = 0.1 are unverified too (from a
third-party reimplementation). With K = 1 and alpha = beta this is DPO with y_w := y_1.

Rewards: chosen = (beta/K) sum_i h_i (the self-sample distribution), rejected = alpha h_l, detached, so that
P(samples over negative) = sigmoid(chosen - rejected) is exactly the loss's probability.
"""

from __future__ import annotations

from typing import Annotated

from alignctl.constraints import NonNegative, Positive
from alignctl.divergences import Divergence
from alignctl.lazy import F, torch
from alignctl.objectives.base import NegativeLogps, Objective, ObjectiveOutput, resolve_divergence, wide


def loss(
    n: NegativeLogps,
    *,
    divergence: Divergence | None,
    # a third-party reimplementation; the paper's value is unverified (spec section 14)
    beta: Annotated[float, Positive] = 0.1,
    alpha: Annotated[float, NonNegative] = 0.1,  # same source, same caveat
) -> ObjectiveOutput:
    """Per-example D2O loss [B]; divergence None means reverse_kl (the only one accepted)."""
    resolve_divergence(OBJECTIVE, divergence)
    h_samples = wide(n.policy_sample_logps) - wide(n.ref_sample_logps)
    mask = torch.ones_like(h_samples, dtype=torch.bool) if n.sample_mask is None else n.sample_mask.bool()
    k = mask.sum(-1).clamp(min=1).to(h_samples.dtype)
    positive = beta * h_samples.masked_fill(~mask, 0.0).sum(-1) / k
    negative = alpha * (wide(n.policy_negative_logps) - wide(n.ref_negative_logps))
    losses = -F.logsigmoid(positive - negative)
    return ObjectiveOutput(losses, positive.detach(), negative.detach())


OBJECTIVE = Objective(
    name="d2o",
    loss=loss,
    description=(
        "D2O (Duan et al. 2024, arXiv 2403.03419): -log sigmoid((beta/K) sum_i h(y_i) - alpha h(y_l)), human negative y_l"
        " vs K self-samples."
    ),
    divergences=("reverse_kl",),
    data="negatives",
    needs_reference=True,
)
