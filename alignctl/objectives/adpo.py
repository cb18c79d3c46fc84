"""ADPO: Anchored Direct Preference Optimization, pairwise with soft labels or listwise.

Paper: Wang Zixian, "Anchored Direct Preference Optimization", arXiv 2510.18913 (2025).

    z_i = (l_theta(y_i) - l_anc(y_i)) / tau,    p_theta(i | S) = softmax_i(z)
    L = -sum_i q_i log p_theta(i | S)        ( = KL(q || p_theta) + H(q) )

- S = {y_1..y_n}: the candidates of one prompt; l: log-probs summed over completion tokens.
- pi_anc: the anchor (the reference / SFT model here; an EMA or old policy in the paper's online variants).
- tau: anchor temperature. Hard label q = one-hot(chosen) with tau = 1/beta and pi_anc = pi_ref is exactly DPO
  with that beta; the default tau = 10 therefore matches dpo's default beta = 0.1. (The author's verl port uses
  tau = 0.8 with the old policy as anchor, an online setting.)
- q: target distribution over S (see `CandidateLogps`): given labels (e.g. pairwise q = (q_w, 1 - q_w) from
  annotator agreement or an RM), else q = softmax(R / beta_r) of given scores R (optionally z-scored within the
  group first, as the verl port does; off by default because with two candidates z-scoring erases the margin),
  else the hard label on candidate 0.
- beta_r: label temperature (0.5, the verl port's value); zscore: z-score R within each group first, with the
  group's unbiased (n - 1) standard deviation + 1e-6, as the port (torch.std) does.

Reading: we return the cross-entropy, i.e. KL(q || p) without the constant sum_i q_i log q_i, so that the pairwise
form is -q_w log sigmoid(z_w - z_l) - (1 - q_w) log sigmoid(z_l - z_w) and the spec's checks hold (hard labels equal
DPO; q = (1/2, 1/2) at pi = pi_anc gives log 2; uniform q over n at pi = pi_anc gives log n). Gradients are those
of the KL.

Rewards: z of the candidate with the largest q (chosen; first on ties) and of the one with the smallest q
(rejected; last on ties), detached; under the softmax (Plackett-Luce) model P(i over j) = sigmoid(z_i - z_j).
For pairs with the chosen at index 0 and tau = 1/beta these are DPO's beta * h.
"""

from __future__ import annotations

from typing import Annotated

from alignctl.constraints import Positive
from alignctl.divergences import Divergence
from alignctl.lazy import torch
from alignctl.objectives.base import CandidateLogps, Objective, ObjectiveOutput, resolve_divergence, wide


def target(c: CandidateLogps, mask: torch.Tensor, *, beta_r: float, zscore: bool) -> torch.Tensor:
    """The target distribution q [B, n] over the valid candidates (zero on padding)."""
    dtype = wide(c.policy_logps).dtype
    if c.labels is not None:
        q = wide(c.labels).to(dtype).clamp(min=0.0) * mask
        return q / q.sum(-1, keepdim=True)
    if c.scores is not None:
        r = wide(c.scores).to(dtype)
        if zscore:
            n = mask.sum(-1, keepdim=True).clamp(min=1)
            mean = (r * mask).sum(-1, keepdim=True) / n
            # the unbiased (n - 1) standard deviation, as the verl port's torch.std (one candidate: r - mean is 0)
            std = (((r - mean) * mask) ** 2).sum(-1, keepdim=True).div((n - 1).clamp(min=1)).sqrt()
            r = (r - mean) / (std + 1e-6)
        return torch.softmax((r / beta_r).masked_fill(~mask, float("-inf")), dim=-1)
    q = torch.zeros_like(wide(c.policy_logps))
    q[..., 0] = 1.0
    return q


def loss(
    c: CandidateLogps,
    *,
    divergence: Divergence | None,
    # 1/beta for dpo's beta = 0.1: with hard labels on pairs ADPO is then exactly DPO (spec section 5)
    tau: Annotated[float, Positive] = 10.0,
    beta_r: Annotated[float, Positive] = 0.5,  # the author's verl port
    # the verl port z-scores R per group; off here because with two candidates it erases the margin
    zscore: bool = False,
) -> ObjectiveOutput:
    """Per-example ADPO loss [B]; divergence None means reverse_kl (the only one accepted: z is a plain log-ratio)."""
    resolve_divergence(OBJECTIVE, divergence)
    z = (wide(c.policy_logps) - wide(c.anchor_logps)) / tau
    mask = torch.ones_like(z, dtype=torch.bool) if c.mask is None else c.mask.bool()
    q = target(c, mask, beta_r=beta_r, zscore=zscore).detach()
    log_p = torch.log_softmax(z.masked_fill(~mask, float("-inf")), dim=-1)
    losses = -(q * log_p.masked_fill(~mask, 0.0)).sum(-1)
    best = q.masked_fill(~mask, float("-inf")).argmax(-1, keepdim=True)
    n = q.shape[-1]
    worst = n - 1 - q.masked_fill(~mask, float("inf")).flip(-1).argmin(-1, keepdim=True)
    zd = z.detach()
    return ObjectiveOutput(losses, zd.gather(-1, best).squeeze(-1), zd.gather(-1, worst).squeeze(-1))


OBJECTIVE = Objective(
    name="adpo",
    loss=loss,
    description=(
        "ADPO (Wang Zixian 2025, arXiv 2510.18913): -sum_i q_i log softmax_i((l_i - l_anc,i)/tau), q = softmax(R/beta_r) "
        "over K candidates."
    ),
    divergences=("reverse_kl",),
    data="candidates",
    needs_reference=True,
    # (the paper's noisy-label studies: dataset.label_noise, a share of flipped training labels for every objective
    # trained on pairs or ranked candidates, so DPO and ADPO arms see the same noisy rows)
)
