"""objective=rloo: TRL's RLOOTrainer with its loss computed by alignctl.objectives.rloo and the divergence to the
starting policy pi_0 chosen by `divergence=`.

TRL keeps prompt sampling (each prompt repeated num_generations times), generation, reward scoring, pi_old's and
pi_0's log-probs, optimisation, logging (its `kl` included) and checkpointing. What changes:

- the loss: each generated batch also carries each completion's reward (`rewards`: TRL's weighted sum over reward
  functions, before any KL), its group (`group_ids`: its row's prompt group, as TRL's `view(-1, num_generations)`),
  and pi_old's and pi_0's per-token log-probs (TRL computes them and keeps only sums); `compute_loss` hands them with
  the policy's log-probs to `objectives.rloo.loss` as `RlooLogps`. That loss computes what TRL's does (the KL-shaped
  reward, leave-one-out advantages, the clipped sequence ratio; tests/objectives/test_rloo.py compares the two).
  The leave-one-out baseline reads whole groups, so train.gradient_accumulation_steps must be 1 (objective.reads_groups,
  checked at compose time) and each rank holds whole groups; `normalize_advantages` then normalises over the rank's
  batch (TRL: over the generation batch of all ranks; the same on one process).
- divergence=reverse_kl: TRL's `beta = divergence_coef`, so TRL loads pi_0 and scores the samples under it; the KL
  enters the reward (TRL's RLOO). forward_kl / js / alpha: beta 0 (no reference model), and DPH-RL's generator term on
  pi_0's stored samples is added to the loss (StoredSampleDivergence, as for objective=grpo). none: plain RLOO.
- sampling: row-seeded (RowSeededGeneration), as for grpo.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import RLOOTrainer

from alignctl.divergences import Divergence
from alignctl.objectives import rloo
from alignctl.objectives.base import Objective
from alignctl.trainers.online import ReferenceStore, StoredSampleDivergence
from alignctl.trainers.sampling import RowSeededGeneration


class RlooTrainer(StoredSampleDivergence, RowSeededGeneration, RLOOTrainer):
    def __init__(
        self,
        *args: Any,
        objective: Objective,
        hyperparameters: dict[str, Any],
        divergence: Divergence | None,
        reference_store: ReferenceStore | None = None,
        divergence_batch_size: int = 16,
        kernel: str = "fused",
        **kwargs: Any,
    ) -> None:
        # reverse_kl: TRL's KL goes into the reward; the generator term has no kl_estimator option for rloo (exact)
        self.setup_divergence(kwargs["args"], objective, hyperparameters, divergence, reference_store,
                              divergence_batch_size, kernel, kl_estimator="exact")  # fmt: skip
        # TRL's own advantages (logged in its completions table) are then those the loss computes
        kwargs["args"].normalize_advantages = hyperparameters["normalize_advantages"]
        self._captured_logps: list[torch.Tensor] | None = None
        super().__init__(*args, **kwargs)
        self.start_reference_order()

    # Private TRL method (tests/trainers/test_trl_seams.py): the one place where a generated batch can carry more
    # per-completion fields (rewards, groups, per-token log-probs) to the loss; no public hook sees it in between.
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._captured_logps = []
        try:
            output = super()._generate_and_score_completions(inputs)
            captured = self._captured_logps
        finally:
            self._captured_logps = None
        # TRL scores pi_old, then (beta != 0) pi_0, each in one call: per-token [B, T]
        output["old_per_token_logps"] = captured[0]
        if self.beta != 0.0:
            output["ref_per_token_logps"] = captured[1]
        device = output["completion_ids"].device
        n = len(inputs)
        everyone = (self._last_rewards_per_func * self.reward_weights.to(device).unsqueeze(0)).nansum(dim=1)
        everyone[torch.isnan(self._last_rewards_per_func).all(dim=1)] = torch.nan  # unscorable, as TRL marks them
        start = self.accelerator.process_index * n  # this process's slice, as TRL slices its advantages
        output["rewards"] = everyone[start : start + n]
        mode = "train" if self.model.training else "eval"
        k = self.num_generations if mode == "train" else self.num_generations_eval
        output["group_ids"] = torch.div(torch.arange(start, start + n, device=device), k, rounding_mode="floor")
        return output

    # Private TRL method: keeps each reward function's scores, which TRL turns into advantages without returning them.
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._last_rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._last_rewards_per_func

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any):
        # Private TRL method, overridden only to keep the per-token log-probs of pi_old and pi_0 that TRL's
        # _generate_and_score_completions computes and reduces to sums (a second forward would cost compute).
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._captured_logps is not None:
            self._captured_logps.append(out[0].detach())
        return out

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # TRL's public hook (its own compute_loss only hands over to the private _compute_loss, replaced here whole)
        if return_outputs:
            raise ValueError("the RLOO trainer does not return outputs (neither does TRL's RLOOTrainer)")
        completion_ids, mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], mask], dim=1)
        per_token_logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True
        )
        stats = rloo.RlooLogps(
            policy_logps=per_token_logps,
            old_logps=inputs["old_per_token_logps"],
            mask=mask,
            rewards=inputs["rewards"],
            group_ids=inputs["group_ids"],
            ref_logps=inputs.get("ref_per_token_logps"),
            clip_low=self.epsilon_low,
            clip_high=self.epsilon_high,
        )
        out = self.objective.loss(stats, divergence=self.divergence, **self.hyperparameters)
        mode = "train" if self.model.training else "eval"
        for name, value in out.stats.items():
            self._metrics[mode][f"{self.objective.name}/{name}"].append(float(value))
        m = mask.float()
        self._metrics[mode]["entropy"].append(float((entropies.detach() * m).sum() / m.sum().clamp(min=1.0)))
        loss = out.loss  # unscaled, as TRL's RLOO: Trainer divides by the accumulation steps
        if self.reference_store is not None:
            term, penalty = self.divergence_term(model)
            loss = loss + term
            self._metrics[mode]["divergence/penalty"].append(penalty.item())
        return loss
