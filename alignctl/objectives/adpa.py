"""ADPA: advantage-guided distillation for preference alignment (and ADPA+ when the student starts from DCKD).

Paper: Gao, Wan, Guo, Quan, Wang, "Advantage-Guided Distillation for Preference Alignment in Small Language
Models", ICLR 2025, arXiv 2502.17927; authors' code github.com/SLIT-AI/ADPA (mirror gaoshiping/ADPA:
scripts/run_distill_dpo.py `get_reverse_ce`, utils/merge_logits_adpa_dataset.py, README section 4,
recipes/llama3.2-1b-deita-dpomix/student_adpa.yaml).

    A(s_t, a) = log pi_dpo(a|s_t) - log pi_ref(a|s_t)          for every vocabulary token a
    L = sft_weight * (-l_theta(y_w) / |y_w|) - beta * (1/|y|) sum_t sum_a pi_theta(a|s_t) A(s_t, a)

- pi_dpo: the DPO teacher, pi_ref: its SFT reference (`objective.teacher`, `objective.teacher_reference`); y: the
  student's own sample for the prompt, y_w: the pair's chosen response (the SFT term).
- The expectation is computed as sum_a pi_theta (log pi_dpo - log pi_ref) = KL(pi_theta || pi_ref) -
  KL(pi_theta || pi_dpo): the student's entropy cancels, in value and in gradient, so the trainer needs only two
  reverse_kl passes of the fused kernel (student hidden states against each teacher's), never [tokens, vocab] logits
  (`alignctl.trainers.distill.advantage_stats`). Its sum over the sample's tokens is `AdvantageLogps.sample_advantage`.
- Readings taken from the authors' code: the sample term is a mean over the sample's tokens and the SFT term a mean
  over the chosen tokens (per-sequence means: micro-batches of one sequence); their margin is the unscaled
  log-ratio weighted by adpa_weight = 1.6 with sft_on_chosen = 1, i.e. beta = 1.6 and sft_weight = 1 here (the
  spec's beta * A with the weight folded in). The samples are drawn once, from the starting student, before training
  (their `vllm_generate.py` -> `form_preference_dataset.py`: the sample replaces the pair's rejected response).
- Not followed (the paper's formula and the spec instead): they keep A only on the DPO teacher's stored top-k tokens
  (`compress_probs`, k = 50 by default), computed offline with both teachers' probabilities floored at 1e-7 before
  the log (`merge_logits_adpa_dataset.get_margin_logp_token`: log(max(p_dpo, 1e-7) / max(p_ref, 1e-7)); a token
  missing from the reference's top k takes the DPO teacher's smallest stored probability, floored, in its place),
  and their loader clamps the stored margins, and the student's probabilities (zero gradient beyond), to
  [1e-8, 1 - 1e-8] (`load_input_and_target_probs_fast`, prob_stabilize=True): negative advantages become ~0 and
  positive ones are capped near 1, so the 1e-7 floor only changes margins that land in (0, 1). alignctl uses the
  full vocabulary and the signed, unbounded A, with no floor (one would act on each vocabulary entry of the teachers'
  distributions, inside the trainer's kernel passes, not in this loss, which sees only their per-sequence sums).
- Which model is pi_ref (spec section 14.7): the paper's SFT teacher. The README's example passes the DCKD student's
  path for the "ref teacher" log-probs; alignctl defaults to the teacher run's own reference (its SFT model).

Rewards (for logging and held-out preference accuracy): the student's mean per-token log-probs l_theta(y)/|y| of
the "chosen" and "rejected" slots (in training: the chosen response and the student's sample).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from alignctl.constraints import NonNegative, Positive
from alignctl.divergences import Divergence
from alignctl.lazy import torch
from alignctl.objectives.base import Objective, ObjectiveOutput, PreferenceLogps, resolve_divergence, wide
from alignctl.objectives.dckd import per_token


@dataclass(frozen=True)
class AdvantageLogps(PreferenceLogps):
    """PreferenceLogps whose rejected slot holds the student's own sample, plus `sample_advantage` [B]: the sum over
    the sample's tokens of sum_a pi_theta(a|s_t) (log pi_dpo(a|s_t) - log pi_ref(a|s_t)), with the student's
    gradient. None where no teachers scored the batch (eval's held-out pairs: only the rewards are read there)."""

    sample_advantage: torch.Tensor | None = None


def expected_advantage(kl_to_reference: torch.Tensor, kl_to_dpo: torch.Tensor) -> torch.Tensor:
    """sum_a pi (log pi_dpo - log pi_ref) from KL(pi || pi_ref) and KL(pi || pi_dpo) (elementwise)."""
    return wide(kl_to_reference) - wide(kl_to_dpo)


def loss(
    logps: PreferenceLogps,
    *,
    divergence: Divergence | None,
    beta: Annotated[float, Positive] = 1.6,  # the authors' student_adpa.yaml: adpa_weight 1.6 on the unscaled log-ratio
    sft_weight: Annotated[float, NonNegative] = 1.0,  # same file: sft_on_chosen 1
) -> ObjectiveOutput:
    """Per-example ADPA loss [B] (NaN where `sample_advantage` is missing: the rewards stay defined)."""
    resolve_divergence(OBJECTIVE, divergence)
    chosen = per_token(logps.policy_chosen_logps, logps.chosen_lengths)
    sample = per_token(logps.policy_rejected_logps, logps.rejected_lengths)
    advantage = logps.sample_advantage if isinstance(logps, AdvantageLogps) else None  # None: eval's held-out pairs
    if advantage is None:
        losses = torch.full_like(chosen, float("nan"))
    else:
        losses = sft_weight * -chosen - beta * per_token(advantage, logps.rejected_lengths)
    return ObjectiveOutput(losses, chosen.detach(), sample.detach())


# Token means. objective.teacher=<DPO run dir> is required; objective.teacher_reference defaults to that run's
# reference (its SFT model). ADPA+: start the student from a dckd run (model=hf model.path=<dckd run>/model
# model.reference=<the student's SFT model>).
OBJECTIVE = Objective(
    name="adpa",
    loss=loss,
    description="ADPA (Gao et al. 2025, arXiv 2502.17927): SFT on y_w - beta * E_student(log pi_dpo - log pi_ref) on its samples.",
    divergences=(),
    data="pairs",
    needs_reference=False,  # the two teachers are loaded by the trainer (alignctl.trainers.distill)
    model_options=("teacher", "teacher_reference"),
)
