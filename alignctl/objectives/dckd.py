"""DCKD: dual-constrained knowledge distillation from a DPO-aligned teacher, on chosen and rejected responses.

Paper: Gao, Wan, Guo, Quan, Wang, "Advantage-Guided Distillation for Preference Alignment in Small Language
Models", ICLR 2025, arXiv 2502.17927; authors' code github.com/SLIT-AI/ADPA (mirror gaoshiping/ADPA:
scripts/run_distill_dpo.py `get_kl_loss` / `get_batch_loss_metrics`, recipes/llama3.2-1b-deita-dpomix/student_dckd.yaml).

    L = sft_weight * (-l_theta(y_w) / |y_w|) + kd_weight * (K_w / |y_w| + K_l / |y_l|)

- K = sum over the completion positions t of D(pi_T(.|s_t) || pi_theta(.|s_t)) over the full vocabulary, pi_T the
  DPO teacher: `PreferenceLogps.chosen_seq_kl` / `rejected_seq_kl`, computed by the trainer with the teacher in the
  reference's place (`Divergence.token`; forward_kl = KL(pi_T || pi_theta), the paper's and the default).
- l_theta(y_w): the student's log-prob of the chosen response, summed over its tokens; |y|: completion tokens.
- Readings taken from the authors' code (the paper writes sums over t): each term is a mean over the response's
  tokens (their `F.kl_div(...).sum(-1).mean()` and `F.cross_entropy` over a micro-batch of one sequence,
  `per_device_train_batch_size: 1`), and the weights are their recipe's: sft_on_chosen 1 -> sft_weight = 1,
  distillation_weight 1 x chosen/rejected_distil_weight 0.1 -> kd_weight = 0.1. They store the teacher's top-50
  probabilities plus one bucket for the rest (a storage device); alignctl uses the full vocabulary (spec section 11).
- Not followed (the paper's formula instead): the authors' KL floors the student's probabilities at 1e-7 before
  the log (`get_kl_loss`: `input_probs[input_probs < 1e-7] = 1e-7`, then `F.kl_div`, i.e.
  sum_a q_a (log q_a - log max(p_a, 1e-7)), with zero gradient through a floored entry), after their loader clamped
  the student's and the teacher's 51 stored probabilities (top 50 + the rest) to [1e-8, 1 - 1e-8]
  (`load_input_and_target_probs_fast`, prob_stabilize=True; the upper bound rounds to 1.0 in its float32 buffers).
  alignctl's K has no floor. A floor acts on each vocabulary entry, and this loss sees only the per-sequence sums
  the trainer's kernel computed, so it would be applied there (alignctl.kernels), not here.
- Other divergences (reverse_kl: KL(pi_theta || pi_T), GKD's beta = 1; js; alpha) replace the per-token term: an
  alignctl extension. TRL: GKD with lmbda = 0 (no student samples), beta = 0 (forward KL), on both responses.

Rewards (for logging and held-out preference accuracy; DCKD has no implicit reward): the student's mean per-token
log-probs l_theta(y)/|y|, so P(y_w > y_l) = sigmoid(r_w - r_l) ranks the two by the student's likelihood.
"""

from __future__ import annotations

from typing import Annotated

from alignctl.constraints import NonNegative
from alignctl.divergences import NAMES, Divergence
from alignctl.lazy import torch
from alignctl.objectives.base import Objective, ObjectiveOutput, PreferenceLogps, resolve_divergence, wide


def per_token(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Sequence sums -> means over the sequence's completion tokens (a length of 0 counts as 1)."""
    return wide(values) / wide(lengths).clamp(min=1.0)


def loss(
    logps: PreferenceLogps,
    *,
    divergence: Divergence | None,
    # the authors' student_dckd.yaml: distillation_weight 1 x chosen/rejected_distil_weight 0.1
    kd_weight: Annotated[float, NonNegative] = 0.1,
    sft_weight: Annotated[float, NonNegative] = 1.0,  # same file: sft_on_chosen 1
) -> ObjectiveOutput:
    """Per-example DCKD loss [B]; divergence (the teacher-student token term the trainer computed) None: forward_kl."""
    resolve_divergence(OBJECTIVE, divergence)
    if logps.chosen_seq_kl is None or logps.rejected_seq_kl is None:
        raise ValueError("DCKD needs PreferenceLogps.chosen_seq_kl and rejected_seq_kl (teacher-student divergences)")
    chosen = per_token(logps.policy_chosen_logps, logps.chosen_lengths)
    rejected = per_token(logps.policy_rejected_logps, logps.rejected_lengths)
    kd = per_token(logps.chosen_seq_kl, logps.chosen_lengths) + per_token(logps.rejected_seq_kl, logps.rejected_lengths)
    losses = sft_weight * -chosen + kd_weight * kd
    return ObjectiveOutput(losses, chosen.detach(), rejected.detach())


# objective.teacher=<DPO run dir or model dir> is required: the run's final model is the teacher.
OBJECTIVE = Objective(
    name="dckd",
    loss=loss,
    description=(
        "DCKD (Gao et al. 2025, arXiv 2502.17927): SFT on y_w + kd_weight * token-mean KL(teacher || student) on y_w, "
        "y_l."
    ),
    divergences=("forward_kl", *[n for n in NAMES if n != "forward_kl"]),
    data="pairs",
    needs_reference=True,  # the teacher, loaded in the reference's place (alignctl.run.train.offline_trainer)
    needs_token_divergence=True,
    model_options=("teacher",),
)
