"""What every objective module shares: the inputs it reads and the outputs it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

# Data kinds an objective can require; the dataset builders produce each of them.
DATA_KINDS = ("pairs", "candidates", "negatives", "groups")


@dataclass(frozen=True)
class PreferenceLogps:
    """Sequence-level statistics of one batch of preference pairs (TRL's tensor vocabulary).

    All tensors are [B]. Log-probs are sums over completion tokens only.
    `ref_*` are None for reference-free objectives; `*_seq_kl` (sum over completion positions of the
    per-token full-vocabulary divergence selected by `divergence=`) only for objectives that need it.
    """

    policy_chosen_logps: torch.Tensor
    policy_rejected_logps: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor
    ref_chosen_logps: torch.Tensor | None = None
    ref_rejected_logps: torch.Tensor | None = None
    chosen_seq_kl: torch.Tensor | None = None
    rejected_seq_kl: torch.Tensor | None = None


class ObjectiveOutput(NamedTuple):
    """Per-example loss [B] and implicit rewards [B] with P(chosen > rejected) = sigmoid(chosen - rejected)."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


@dataclass(frozen=True)
class Objective:
    """A registry entry: the pure loss function plus what it accepts and needs."""

    name: str
    loss: Callable[..., ObjectiveOutput]
    description: str
    divergences: tuple[str, ...]  # accepted `divergence=` options; () means the objective uses none
    data: str  # one of DATA_KINDS
    needs_reference: bool
    needs_token_divergence: bool = False  # per-token full-vocabulary divergence (TDPO)
