"""KTO: Kahneman-Tversky Optimization, on unpaired binary feedback (a completion is desirable or undesirable).

Paper: Ethayarajh, Xu, Muennighoff, Jurafsky, Kiela, "KTO: Model Alignment as Prospect Theoretic Optimization",
arXiv 2402.01306 (2024), eq. (7) and section 4.1.

    desirable y:    L = desirable_weight   * (1 - sigmoid(beta * (h - z0)))
    undesirable y:  L = undesirable_weight * (1 - sigmoid(beta * (z0 - h)))

- h = l_theta(y) - l_ref(y): the row's sequence log-ratio (log-probs summed over completion tokens).
- z0: the reference point, KL(pi_theta || pi_ref) estimated on mismatched pairs (each prompt x_i with another
  row's completion y_j of the batch): z0 = max(0, mean_j(l_theta(y_j | x_i) - l_ref(y_j | x_i))), detached (no
  gradient flows through it). `BinaryLogps.kl` passes z0 itself instead.
- beta: the value function's risk aversion / the implicit reward's inverse temperature; desirable_weight and
  undesirable_weight are the paper's lambda_D and lambda_U (the paper's advice for imbalanced data:
  lambda_D n_D / (lambda_U n_U) in [1, 4/3]).

Same computation as TRL 1.16's KTOTrainer with loss_type="kto" (there inline in `_compute_loss`): 1 - sigmoid(x) is
written sigmoid(-x) here (equal; exact in the tails), and the loss of a batch is the plain mean over its rows.
Rewards: beta * h, the implied reward of the reverse-KL regularised objective the paper starts from (z0 is common
to all rows, so it cancels in any comparison of two rows). Reverse KL only: with an f-divergence the implied reward
becomes beta f'(u), but z0 is then no longer the divergence the paper's reference point estimates (E_pi[f'(u)] is
not D_f(pi || pi_ref)), so no other divergence is offered.
"""

from __future__ import annotations

from typing import Annotated

from alignctl.constraints import Positive
from alignctl.divergences import Divergence
from alignctl.lazy import torch
from alignctl.objectives.base import (
    BinaryLogps,
    BinaryOutput,
    Objective,
    resolve_divergence,
    wide,
)


def reference_point(b: BinaryLogps) -> torch.Tensor:
    """z0, detached: `b.kl` as given, else max(0, mean(policy_kl_logps - ref_kl_logps))."""
    if b.kl is not None:
        return wide(b.kl).detach()
    if b.policy_kl_logps is None or b.ref_kl_logps is None:
        raise ValueError("KTO needs its reference point: BinaryLogps.kl, or policy_kl_logps and ref_kl_logps")
    return (wide(b.policy_kl_logps) - wide(b.ref_kl_logps)).detach().mean().clamp(min=0)


def loss(
    b: BinaryLogps,
    *,
    divergence: Divergence | None,
    beta: Annotated[float, Positive] = 0.1,  # the KTO paper's value (and TRL's KTOConfig default)
    desirable_weight: Annotated[float, Positive] = 1.0,  # lambda_D (paper and TRL default)
    undesirable_weight: Annotated[float, Positive] = 1.0,  # lambda_U (paper and TRL default)
) -> BinaryOutput:
    """Per-example KTO loss [B]; divergence None means reverse_kl (the only one accepted)."""
    resolve_divergence(OBJECTIVE, divergence)
    h = wide(b.policy_logps) - wide(b.ref_logps)
    z0 = reference_point(b).to(h.dtype)
    desirable = b.labels.to(device=h.device, dtype=torch.bool)
    margin = torch.where(desirable, h - z0, z0 - h)
    weight = torch.where(desirable, torch.full_like(h, desirable_weight), torch.full_like(h, undesirable_weight))
    losses = weight * torch.sigmoid(-beta * margin)  # = weight * (1 - sigmoid(beta * margin))
    return BinaryOutput(losses, (beta * h).detach(), z0)


OBJECTIVE = Objective(
    name="kto",
    loss=loss,
    description=(
        "KTO (Ethayarajh et al. 2024, arXiv 2402.01306) on binary feedback: lambda_D (1 - sigmoid(beta (h - z0))) if "
        "desirable, lambda_U (1 - sigmoid(beta (z0 - h))) if not; z0 the batch's KL estimate."
    ),
    divergences=("reverse_kl",),
    data="binary",
    needs_reference=True,
)
