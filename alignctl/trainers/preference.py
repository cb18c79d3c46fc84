"""Offline preference training: TRL's DPOTrainer with the loss replaced by an alignctl objective.

TRL keeps data collation, the reference model, optimisation, logging and checkpointing; this subclass only
turns a batch into sequence statistics (PreferenceLogps) and calls the objective's pure loss function.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import DPOTrainer

from alignctl.divergences import Divergence
from alignctl.objectives.base import Objective, ObjectiveOutput, PreferenceLogps


class PreferenceTrainer(DPOTrainer):
    def __init__(
        self,
        *args: Any,
        objective: Objective,
        hyperparameters: dict[str, Any],
        divergence: Divergence | None,
        **kwargs: Any,
    ) -> None:
        self.objective = objective
        self.hyperparameters = hyperparameters
        self.divergence = divergence
        super().__init__(*args, **kwargs)

    def sequence_logps(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-sequence sums of completion-token log-probs [2B] (chosen first), mean entropy and lengths."""
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        out = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            labels=labels,
            use_cache=False,
            fused_lm_head=True,
        )
        mask = completion_mask[:, 1:].to(out.log_probs.dtype)  # labels are shifted by one
        lengths = mask.sum(1)
        return {
            "logps": (out.log_probs * mask).sum(1),
            "entropy": (out.entropy * mask).sum() / mask.sum().clamp(min=1) if out.entropy is not None else None,
            "lengths": lengths,
        }

    def preference_logps(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[PreferenceLogps, Any]:
        policy = self.sequence_logps(model, inputs)
        chosen_logps, rejected_logps = policy["logps"].chunk(2)
        chosen_lengths, rejected_lengths = policy["lengths"].chunk(2)
        ref_chosen = ref_rejected = None
        if self.objective.needs_reference:
            with torch.no_grad():
                ref = self.sequence_logps(self.ref_model, inputs)
            ref_chosen, ref_rejected = ref["logps"].chunk(2)
        stats = PreferenceLogps(
            policy_chosen_logps=chosen_logps,
            policy_rejected_logps=rejected_logps,
            chosen_lengths=chosen_lengths,
            rejected_lengths=rejected_lengths,
            ref_chosen_logps=ref_chosen,
            ref_rejected_logps=ref_rejected,
        )
        return stats, policy["entropy"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        stats, entropy = self.preference_logps(model, inputs)
        result: ObjectiveOutput = self.objective.loss(stats, divergence=self.divergence, **self.hyperparameters)
        loss = result.losses.mean()
        self._record(stats, result, entropy, "train" if model.training else "eval")
        return (loss, {}) if return_outputs else loss

    def _record(self, stats: PreferenceLogps, result: ObjectiveOutput, entropy: Any, mode: str) -> None:
        gather = self.accelerator.gather_for_metrics
        chosen, rejected = result.chosen_rewards.detach(), result.rejected_rewards.detach()
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(gather(chosen).mean().item())
        metrics["rewards/rejected"].append(gather(rejected).mean().item())
        metrics["rewards/accuracies"].append(gather((chosen > rejected).float()).mean().item())
        metrics["rewards/margins"].append(gather(chosen - rejected).mean().item())
        metrics["logps/chosen"].append(gather(stats.policy_chosen_logps.detach()).mean().item())
        metrics["logps/rejected"].append(gather(stats.policy_rejected_logps.detach()).mean().item())
        if entropy is not None:
            metrics["entropy"].append(gather(entropy.detach()).mean().item())
