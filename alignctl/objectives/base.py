"""What every objective module shares: the inputs it reads and the outputs it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from alignctl.divergences import Divergence
from alignctl.divergences import get as get_divergence
from alignctl.lazy import torch

# Data kinds an objective can require; the dataset builders produce each of them.
DATA_KINDS = ("pairs", "binary", "candidates", "negatives", "groups", "sft")


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
    preferred_divergence: str | None = None  # what `divergence=auto` picks; None: the first accepted, or "none"
    # Online objectives whose loss compares the completions of one prompt (disco, fdpg): a micro-batch must hold
    # whole groups.
    reads_groups: bool = False
    # Divergences with which the trainer loads a reference model although the loss itself needs none (grpo: TRL's
    # k3 reverse KL scores the policy's samples under pi_0).
    reference_with: tuple[str, ...] = ()
    # Hyperparameter values that only some divergences accept: (hyperparameters, divergence name) -> the one-line
    # reason they do not go together, or None. Checked when the config is composed, before anything loads.
    check: Callable[[dict[str, Any], str], str | None] | None = None
    # The loss reads rewards only through `reward > positive_threshold` (disco): a monotone reward transform
    # (reward.transform) changes nothing but where that threshold falls, so it is refused.
    reward_threshold_only: bool = False
    # Config options naming models the objective reads besides the policy (distillation teachers: dckd, adpa):
    # string fields of the objective's config (null by default), not loss hyperparameters; resolved and checked by
    # alignctl.run.sources.teacher_sources when the run is validated, before anything loads.
    model_options: tuple[str, ...] = ()
    # The objective trains a reward model (a sequence classifier with one output, TRL's RewardTrainer) rather than a
    # policy: nothing is sampled, no reference loads, and eval scores held-out pairs (reward_model).
    trains_reward_model: bool = False

    @property
    def default_divergence(self) -> str:
        return self.preferred_divergence or (self.divergences[0] if self.divergences else "none")


@dataclass(frozen=True)
class BinaryLogps:
    """Sequence statistics of one batch of unpaired binary feedback (KTO; data kind "binary").

    `policy_logps`, `ref_logps`, `labels` are [B]: each row is one (prompt, completion) with its label (True =
    desirable, False = undesirable); log-probs are sums over completion tokens. The KL reference point z0 is
    `kl` (a scalar, used as given) or, when that is None, estimated from `policy_kl_logps` / `ref_kl_logps` [M]: the
    log-probs of mismatched (prompt, completion) pairs (another row's completion after each prompt), as
    max(0, mean(policy_kl_logps - ref_kl_logps)), detached. The trainer gathers them over processes first.
    """

    policy_logps: torch.Tensor
    ref_logps: torch.Tensor
    labels: torch.Tensor
    kl: torch.Tensor | None = None
    policy_kl_logps: torch.Tensor | None = None
    ref_kl_logps: torch.Tensor | None = None


class BinaryOutput(NamedTuple):
    """Per-example loss [B], implicit rewards [B] (of each row's own completion; P(a over b) = sigmoid(r_a - r_b)),
    and the KL reference point z0 (a detached scalar) the losses used."""

    losses: torch.Tensor
    rewards: torch.Tensor
    kl: torch.Tensor


@dataclass(frozen=True)
class CandidateLogps:
    """Sequence statistics of n candidate completions per prompt (ADPO; data kind "candidates").

    Tensors are [B, n]; log-probs are sums over completion tokens. Pairs are the case n = 2 with the chosen
    completion at index 0. The target distribution q over the candidates comes from, in this order:
    `labels` (non-negative weights, e.g. (q_w, 1 - q_w) from annotator agreement; renormalised over the valid
    candidates), else `scores` (rewards R, turned into q = softmax(R / beta_r) by the objective), else the hard
    label q = one-hot(index 0). `mask` (bool, True = real candidate) pads groups of unequal size; None = all real.
    """

    policy_logps: torch.Tensor
    anchor_logps: torch.Tensor
    labels: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    mask: torch.Tensor | None = None


@dataclass(frozen=True)
class NegativeLogps:
    """Sequence statistics for D2O (data kind "negatives"): one human negative y_l and K self-samples y_i per prompt.

    `*_negative_logps` are [B]; `*_sample_logps` are [B, K]; all are sums over completion tokens. In the D2O
    paper's notation `ref_sample_logps` is pi_r^- evaluated on the self-samples and `ref_negative_logps` is
    pi_r^+ evaluated on y_l (both are the SFT model in the simplest setting). `sample_mask` (bool [B, K],
    True = real sample) allows a different K per prompt; None = all K are real.
    """

    policy_negative_logps: torch.Tensor
    ref_negative_logps: torch.Tensor
    policy_sample_logps: torch.Tensor
    ref_sample_logps: torch.Tensor
    sample_mask: torch.Tensor | None = None


@dataclass(frozen=True)
class GroupLogps:
    """Per-token log-probs of sampled completions, several per prompt (online objectives; data kind "groups").

    Token tensors are [B, T] over completion tokens, `mask` 1/True on real tokens: `policy_logps` under pi_theta
    (with grad), `old_logps` under the policy that sampled them (pi_old, detached; equal to pi_theta's values at
    the first update on a batch), `ref_logps` under the starting policy pi_0 (None when the objective does not need
    it). `rewards` [B] score each completion; `group_ids` [B] (integers) say which completions share a prompt.
    `sampling_weights` ([B, T] per token or [B, 1] per completion) is TRL's truncated importance ratio
    pi_old / pi_sampler when vLLM sampled the completions (its log-probs differ from the trainer's); None when the
    trainer sampled them itself (ratio 1). Objectives multiply their per-token loss terms by it, as TRL's GRPO does.
    """

    policy_logps: torch.Tensor
    old_logps: torch.Tensor
    mask: torch.Tensor
    rewards: torch.Tensor
    group_ids: torch.Tensor
    ref_logps: torch.Tensor | None = None
    sampling_weights: torch.Tensor | None = None


class OnlineOutput(NamedTuple):
    """`loss` (scalar, with grad) and detached per-batch statistics worth logging (name -> scalar tensor)."""

    loss: torch.Tensor
    stats: dict[str, torch.Tensor]


def group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Group ids -> dense indices 0..G-1 (for scatter/index_add) and the number of groups G."""
    _, dense = torch.unique(group_ids, return_inverse=True)
    return dense, int(dense.max()) + 1 if dense.numel() else 0


def token_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real tokens (DPH-RL's and DAPO's token-mean aggregation); 0 when there are none."""
    if mask is None:
        return values.mean() if values.numel() else values.sum()
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def wide(x: torch.Tensor) -> torch.Tensor:
    """Compute dtype for the loss math: float64 stays float64, anything else (bfloat16, float16) becomes float32."""
    return x if x.dtype == torch.float64 else x.float()


# Odds of a response from its mean token log-prob lbar (ORPO, ASFT): P = e^lbar. log(1 - P) is evaluated at
# min(lbar, MAX_MEAN_LOGP), i.e. P <= 0.99999, so a response of probability ~1 (or an impossible lbar > 0) gets large
# finite log-odds (about lbar + 11.5, gradient 1 through lbar) instead of infinity.
MAX_MEAN_LOGP = -1e-5


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x < 0, accurate on both sides of -log 2 (Maechler 2012)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def log_1m_p(lbar: torch.Tensor) -> torch.Tensor:
    """log(1 - P), P = e^lbar, with lbar clamped to <= MAX_MEAN_LOGP there (the log-odds are lbar - log_1m_p(lbar))."""
    return log1mexp(lbar.clamp(max=MAX_MEAN_LOGP))


def resolve_divergence(entry: Objective, divergence: Divergence | None) -> Divergence | None:
    """Check `divergence=` against `entry.divergences`; None means the entry's default divergence.

    Objectives that use no divergence (divergences == ()) take only None and get None back.
    """
    if not entry.divergences:
        if divergence is not None:
            raise ValueError(f"objective={entry.name} uses no divergence; pass divergence=None, not {divergence!r}")
        return None
    if divergence is None:
        name = entry.default_divergence
        return get_divergence(name, 0.5 if name == "alpha" else None)
    if not isinstance(divergence, Divergence):
        raise TypeError(f"divergence must be a Divergence or None, not {type(divergence).__name__}")
    if divergence.name not in entry.divergences:
        raise ValueError(
            f"divergence={divergence.name} is not accepted by objective={entry.name}; "
            f"choose one of: {', '.join(entry.divergences)}"
        )
    return divergence
