"""Distillation from a DPO-aligned teacher (dckd, adpa): the teachers load here, and ADPA's trainer.

* dckd is the PreferenceTrainer as it is, with the DPO teacher in the reference's place: its full-vocabulary
  D(pi_T || pi_theta) on chosen and rejected is what TDPO reads as the reference's sequential divergence.
* adpa (`AdvantageTrainer`): the pair's rejected response is replaced, once before training, by the starting
  student's own sample (`with_student_samples`, as the authors' offline `vllm_generate.py` does); chosen rows are
  scored by the student alone (the SFT term), sample rows by the student against each teacher
  (`advantage_stats`: two reverse_kl passes through `alignctl.models.scoring`, so the fused path never holds [tokens, vocab]
  logits; the student's entropy cancels in their difference).

Teacher and student must share one vocabulary (checked when the teachers load). The teachers are frozen and
prepared by accelerate the way DPOTrainer prepares its reference model.
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset

from alignctl.divergences import get as get_divergence
from alignctl.models.sampling import sample
from alignctl.models.scoring import SequenceStats, sequence_stats
from alignctl.objectives.adpa import AdvantageLogps, expected_advantage
from alignctl.trainers.preference import PreferenceTrainer, token_entropy

REVERSE_KL = get_divergence("reverse_kl")
# Sequences per generate() call when drawing ADPA's samples: fixed, since the batch size changes the random streams
# and a resumed run (which may change eval.*) must draw the same samples.
SAMPLE_BATCH_SIZE = 64


def distillation_trainer(
    train_data: Dataset, teacher, teacher_reference, kernel: str, max_new_tokens: int, seed: int, **kwargs: Any
) -> PreferenceTrainer:
    """dckd (no teacher_reference): PreferenceTrainer with the teacher as its reference; adpa: AdvantageTrainer on
    the student's samples. The teachers are loaded and checked by alignctl.run.sources.load_teachers.
    kwargs: PreferenceTrainer's (model, args, processing_class, callbacks, peft_config, objective, ...)."""
    if teacher_reference is None:  # dckd
        return PreferenceTrainer(ref_model=teacher, train_dataset=train_data, kernel=kernel, **kwargs)
    samples = with_student_samples(
        kwargs["model"], kwargs["processing_class"], train_data, max_new_tokens=max_new_tokens,
        seed=seed, batch_size=SAMPLE_BATCH_SIZE,
    )  # fmt: skip
    return AdvantageTrainer(
        teacher=teacher, teacher_reference=teacher_reference, train_dataset=samples, kernel=kernel, **kwargs
    )


def with_student_samples(model, tokenizer, pairs: Dataset, max_new_tokens: int, seed: int, batch_size: int) -> Dataset:
    """The pairs with each rejected response replaced by one completion the student samples for its prompt
    (ancestral, temperature 1, seeded: a resumed run draws the same). Drawn once, before training, from the
    starting weights, as the authors generate their ADPA data offline; the human rejected responses are not used."""
    was_training = model.training
    model.eval()
    drawn = sample(model, tokenizer, list(pairs["prompt"]), n=1, max_new_tokens=max_new_tokens, temperature=1.0,
                   seed=seed, batch_size=batch_size)  # fmt: skip
    model.train(was_training)
    return pairs.map(lambda row, i: {"rejected": drawn.completions[i]}, with_indices=True, keep_in_memory=True,
                     desc="ADPA: the student's samples as rejected responses")  # fmt: skip


def advantage_stats(
    student, teacher, teacher_reference, input_ids, attention_mask, completion_mask, kernel: str
) -> tuple[SequenceStats, torch.Tensor]:
    """The student's statistics on its samples and, per sequence, sum_t sum_a pi_theta (log pi_dpo - log pi_ref)
    = sum_t [KL(pi_theta || pi_ref) - KL(pi_theta || pi_dpo)] (gradient through the student only)."""
    args = (input_ids, attention_mask, completion_mask)
    to_reference = sequence_stats(student, *args, reference=teacher_reference, divergence=REVERSE_KL, kernel=kernel)
    to_dpo = sequence_stats(student, *args, reference=teacher, divergence=REVERSE_KL, kernel=kernel)
    return to_reference, expected_advantage(to_reference.divergence, to_dpo.divergence)


class AdvantageTrainer(PreferenceTrainer):
    """ADPA on TRL's DPOTrainer: batches are (chosen, student sample) pairs (see `with_student_samples`)."""

    def __init__(self, *args: Any, teacher, teacher_reference, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # adpa needs no reference: DPOTrainer keeps no ref_model
        self.teacher = self._prepare_frozen(teacher)
        self.teacher_reference = self._prepare_frozen(teacher_reference)

    def _prepare_frozen(self, model):
        """As DPOTrainer prepares its ref_model (evaluation mode; sharded alike under DeepSpeed/FSDP)."""
        from trl.models import prepare_deepspeed, prepare_fsdp

        if self.is_deepspeed_enabled:
            return prepare_deepspeed(model, self.accelerator)
        if self.is_fsdp_enabled:
            return prepare_fsdp(model, self.accelerator)
        return self.accelerator.prepare_model(model, evaluation_mode=True)

    def objective_batch(self, model, inputs: dict[str, torch.Tensor]) -> tuple[AdvantageLogps, dict[str, torch.Tensor]]:
        """Chosen rows (the first half of TRL's collation): the student's log-probs; sample rows (the second half):
        the student's log-probs and the teacher's expected advantage."""
        ids, mask, completion = inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"]
        half = ids.shape[0] // 2
        chosen = sequence_stats(model, ids[:half], mask[:half], completion[:half], kernel=self.kernel)
        drawn, advantage = advantage_stats(model, self.teacher, self.teacher_reference, ids[half:], mask[half:],
                                           completion[half:], self.kernel)  # fmt: skip
        stats = AdvantageLogps(
            policy_chosen_logps=chosen.logps,
            policy_rejected_logps=drawn.logps,
            chosen_lengths=chosen.lengths.to(chosen.logps.dtype),
            rejected_lengths=drawn.lengths.to(drawn.logps.dtype),
            sample_advantage=advantage,
        )
        logged = {
            "logps/chosen": chosen.logps,
            "logps/sample": drawn.logps,
            "entropy": token_entropy(drawn),
            # per sample token: what the loss maximises, and the student's KL to the DPO teacher
            "advantage/sample": advantage / drawn.lengths.clamp(min=1),
        }
        return stats, logged
