"""Offline preference training: TRL's DPOTrainer with the loss replaced by an alignctl objective.

TRL keeps data collation, the reference model, optimisation, logging and checkpointing; this subclass only
turns a batch into sequence statistics (PreferenceLogps, through alignctl's kernels rather than TRL's fused
LM head, since TDPO needs full-vocabulary divergences) and calls the objective's pure loss function.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from accelerate.utils import is_peft_model
from trl import DPOTrainer

from alignctl import batches
from alignctl.divergences import Divergence
from alignctl.objectives.base import Objective, ObjectiveOutput, PreferenceLogps
from alignctl.scoring import SequenceStats, sequence_stats


class PreferenceTrainer(DPOTrainer):
    def __init__(
        self,
        *args: Any,
        objective: Objective,
        hyperparameters: dict[str, Any],
        divergence: Divergence | None,
        kernel: str = "fused",
        **kwargs: Any,
    ) -> None:
        self.kernel = kernel
        self.objective = objective
        self.hyperparameters = hyperparameters
        self.divergence = divergence
        if not objective.needs_reference:
            # With precompute on and no ref_model, DPOTrainer keeps no reference model (see _precompute_ref_logps).
            kwargs["args"].precompute_ref_log_probs = True
        super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        # Reference-free objectives (SimPO, ASFT) read no reference log-probs: skip TRL's pass over the data.
        if not self.objective.needs_reference:
            return dataset
        return super()._precompute_ref_logps(dataset, name, batch_size)

    def sequence_stats(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> SequenceStats:
        """Statistics of every sequence of a collated batch, with the reference (and the per-token divergence)
        only where the objective reads them. With LoRA and no separate reference model, the reference is the
        policy with its adapter off (TRL's convention: no second copy in memory)."""
        reference, reference_context = self.ref_model, None
        if self.objective.needs_reference and reference is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            reference, reference_context = unwrapped, unwrapped.disable_adapter
        return sequence_stats(
            model,
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["completion_mask"],
            reference=reference if self.objective.needs_reference else None,
            divergence=self.divergence if self.objective.needs_token_divergence else None,
            kernel=self.kernel,
            reference_context=reference_context or contextlib.nullcontext,
        )

    def preference_logps(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[PreferenceLogps, torch.Tensor]:
        """Chosen/rejected sequence statistics of a batch (TRL's collator puts chosen first, then rejected)."""
        stats = self.sequence_stats(model, inputs)
        return batches.pairs(stats, self.objective), token_entropy(stats)

    def objective_batch(
        self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        """The objective's input for a batch, and the per-example statistics to log beside its rewards."""
        stats, entropy = self.preference_logps(model, inputs)
        logged = {
            "logps/chosen": stats.policy_chosen_logps,
            "logps/rejected": stats.policy_rejected_logps,
            "entropy": entropy,
        }
        if stats.chosen_seq_kl is not None:
            logged["seq_kl/chosen"] = stats.chosen_seq_kl
            logged["seq_kl/rejected"] = stats.rejected_seq_kl
            logged["seq_kl/margin"] = stats.rejected_seq_kl - stats.chosen_seq_kl
        return stats, logged

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        batch, logged = self.objective_batch(model, inputs)
        result: ObjectiveOutput = self.objective.loss(batch, divergence=self.divergence, **self.hyperparameters)
        loss = result.losses.mean()
        self._record(result, logged, "train" if model.training else "eval")
        return (loss, {}) if return_outputs else loss

    def _record(self, result: ObjectiveOutput, logged: dict[str, torch.Tensor], mode: str) -> None:
        gather = self.accelerator.gather_for_metrics
        chosen, rejected = result.chosen_rewards.detach(), result.rejected_rewards.detach()
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(gather(chosen).mean().item())
        metrics["rewards/rejected"].append(gather(rejected).mean().item())
        metrics["rewards/accuracies"].append(gather((chosen > rejected).float()).mean().item())
        metrics["rewards/margins"].append(gather(chosen - rejected).mean().item())
        for key, value in logged.items():
            metrics[key].append(gather(value.detach()).mean().item())


def token_entropy(stats: SequenceStats) -> torch.Tensor:
    """The policy's mean full-vocabulary entropy per completion token of a batch."""
    return stats.entropy.sum() / stats.lengths.sum().clamp(min=1)
