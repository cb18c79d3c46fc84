"""One adapter per data kind: the sequence statistics of a scored batch -> the objective's input.

Shared by the trainers (alignctl.trainers) and eval (alignctl.run.evaluate), so a batch means the same thing in both.
Row layouts (what the collators produce, and what eval builds):
- pairs: B chosen rows, then the B rejected rows (TRL's DPO collation);
- candidates: B x K rows, row-major (row b*K + k is candidate k of example b), `mask` [B, K] marks real ones;
- negatives: the same with candidate 0 the negative and 1..K the self-samples;
- binary: B rows, one completion each, with its label (True = desirable).
"""

from __future__ import annotations

import torch

from alignctl.models.scoring import SequenceStats
from alignctl.objectives.base import BinaryLogps, CandidateLogps, NegativeLogps, Objective, PreferenceLogps


def pairs(stats: SequenceStats, objective: Objective) -> PreferenceLogps:
    """Chosen/rejected statistics, with the reference and per-token divergence only where the objective reads them."""

    def halves(t: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return t.chunk(2) if t is not None else (None, None)

    (chosen, rejected), (chosen_len, rejected_len) = halves(stats.logps), halves(stats.lengths)
    ref = halves(stats.ref_logps) if objective.needs_reference else (None, None)
    kl = halves(stats.divergence) if objective.needs_token_divergence else (None, None)
    return PreferenceLogps(
        policy_chosen_logps=chosen,
        policy_rejected_logps=rejected,
        chosen_lengths=chosen_len.to(chosen.dtype),
        rejected_lengths=rejected_len.to(rejected.dtype),
        ref_chosen_logps=ref[0],
        ref_rejected_logps=ref[1],
        chosen_seq_kl=kl[0],
        rejected_seq_kl=kl[1],
    )


def candidates(stats: SequenceStats, mask: torch.Tensor, scores: torch.Tensor | None) -> CandidateLogps:
    """Candidate sets [B, K] scored by the policy and the anchor (reference); `scores` are their rewards, if any."""
    return CandidateLogps(
        policy_logps=stats.logps.view(mask.shape),
        anchor_logps=stats.ref_logps.view(mask.shape),
        scores=scores,
        mask=mask.bool(),
    )


def negatives(stats: SequenceStats, mask: torch.Tensor) -> NegativeLogps:
    """D2O's negative (candidate 0) and self-samples (candidates 1..K)."""
    logps, ref, mask = stats.logps.view(mask.shape), stats.ref_logps.view(mask.shape), mask.bool()
    return NegativeLogps(logps[:, 0], ref[:, 0], logps[:, 1:], ref[:, 1:], sample_mask=mask[:, 1:])


def binary(stats: SequenceStats, labels: torch.Tensor, kl: torch.Tensor | None = None) -> BinaryLogps:
    """Rows of binary feedback scored by the policy and the reference. Without `kl` (z0) or mismatched pairs the
    reference point is taken as 0: right for what is read off the rows' rewards (z0 cancels in their differences),
    not for their losses."""
    zero = torch.zeros((), dtype=stats.logps.dtype, device=stats.logps.device)
    return BinaryLogps(stats.logps, stats.ref_logps, labels.bool().to(stats.logps.device), kl=zero if kl is None else kl)
