"""Online objectives with their own policy loss (disco, fdpg) on TRL's GRPOTrainer.

TRL keeps prompt sampling (each prompt repeated num_generations times), generation, reward scoring, the old-policy
and reference log-probs, optimisation, logging and checkpointing. What changes: the loss. Every generated batch
gets each completion's reward (`rewards`: TRL's weighted sum over reward functions) and its prompt's id
(`group_ids`: a hash of the prompt text, the same on every process), and `compute_loss` hands per-token log-probs
to the objective's pure loss (alignctl.objectives.disco / fdpg) as `GroupLogps`.

Both objectives read whole groups, so one micro-batch must hold every completion of its prompts: TRL splits a
generated batch into gradient_accumulation_steps shuffled micro-batches, hence train.gradient_accumulation_steps
must be 1 for them (checked at compose time).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import torch
from trl import GRPOTrainer

from alignctl.divergences import Divergence
from alignctl.objectives.base import GroupLogps, Objective
from alignctl.objectives.fdpg import TargetLogps, log_importance_partition
from alignctl.trainers.checkpoint_state import CheckpointState
from alignctl.trainers.sampling import RowSeededGeneration


def prompt_id(prompt: str | list[dict[str, Any]]) -> int:
    """A stable 56-bit id of a prompt (text, or a conversation's messages), the same on every process and run."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=7).digest(), "big")


class GroupObjectiveTrainer(RowSeededGeneration, GRPOTrainer):
    """GRPOTrainer whose loss is `objective.loss(GroupLogps, divergence=..., **hyperparameters)`."""

    def __init__(
        self, *args: Any, objective: Objective, hyperparameters: dict[str, Any], divergence: Divergence | None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        self.objective = objective
        self.hyperparameters = hyperparameters
        self.divergence = divergence
        super().__init__(*args, **kwargs)

    # Private TRL method (tests/trainers/test_trl_seams.py): the one place where a generated batch can carry more
    # per-completion fields (rewards, group ids) to the loss; no public hook sees the batch between the two.
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        prompts = [x["prompt"] for x in inputs]
        output = super()._generate_and_score_completions(inputs)
        device = output["completion_ids"].device
        # TRL's rewards of all processes' completions, this process's slice (as TRL slices its advantages)
        everyone = (self._last_rewards_per_func * self.reward_weights.to(device).unsqueeze(0)).nansum(dim=1)
        start = self.accelerator.process_index * len(prompts)
        output["rewards"] = everyone[start : start + len(prompts)]
        output["group_ids"] = torch.tensor([prompt_id(p) for p in prompts], dtype=torch.long, device=device)
        return output

    # Private TRL method: keeps each reward function's scores, which TRL turns into advantages without returning them.
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._last_rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._last_rewards_per_func

    def objective_inputs(self, stats: GroupLogps, inputs: dict[str, Any]) -> GroupLogps:
        """Hook for what an objective needs beyond GroupLogps (fdpg: the log-partition estimates)."""
        return stats

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # TRL's public hook (its own compute_loss only hands over to the private _compute_loss, replaced here whole)
        if return_outputs:
            raise ValueError("the objective's trainer does not return outputs (neither does TRL's GRPOTrainer)")
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        per_token_logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True
        )
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
        old = inputs.get("old_per_token_logps")  # None: pi_old is pi_theta (first update on this batch)
        stats = GroupLogps(
            policy_logps=per_token_logps,
            old_logps=per_token_logps.detach() if old is None else old,
            mask=mask,
            rewards=inputs["rewards"],
            group_ids=inputs["group_ids"],
            ref_logps=inputs.get("ref_per_token_logps"),
            # present only when vLLM sampled and TRL's vllm_importance_sampling_correction is on (TRL's own test)
            sampling_weights=inputs.get("importance_sampling_ratio"),
        )
        out = self.objective.loss(self.objective_inputs(stats, inputs), divergence=self.divergence,
                                  **self.hyperparameters)  # fmt: skip
        mode = "train" if self.model.training else "eval"
        for name, value in out.stats.items():
            self._metrics[mode][f"{self.objective.name}/{name}"].append(float(value))
        m = mask.float()
        self._metrics[mode]["entropy"].append(float((entropies.detach() * m).sum() / m.sum().clamp(min=1.0)))
        normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0  # as TRL's losses
        return out.loss / normalizer


class RunningPartition:
    """Per-prompt running estimate of log Z(x) = log E_q[P/q]: the log of the mean of P/q over every completion
    sampled for the prompt so far, kept as (log-sum-exp, count) so large r/beta does not overflow."""

    def __init__(self) -> None:
        self.log_sum: dict[int, float] = {}
        self.count: dict[int, int] = {}

    def update(self, group_ids: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
        """Add log(P/q) of new completions; return each completion's prompt's log Z after the update."""
        for key, value in zip(group_ids.tolist(), log_weights.double().tolist()):
            old = self.log_sum.get(key, -math.inf)
            self.log_sum[key] = max(old, value) + math.log1p(math.exp(-abs(old - value))) if old > -math.inf else value
            self.count[key] = self.count.get(key, 0) + 1
        values = [self.log_sum[k] - math.log(self.count[k]) for k in group_ids.tolist()]
        return torch.tensor(values, dtype=torch.float64, device=log_weights.device)

    def state_dict(self) -> dict[str, list]:
        keys = sorted(self.count)
        return {"keys": keys, "log_sum": [self.log_sum[k] for k in keys], "count": [self.count[k] for k in keys]}

    def load_state_dict(self, state: dict[str, list]) -> None:
        self.log_sum = dict(zip(state["keys"], state["log_sum"]))
        self.count = dict(zip(state["keys"], state["count"]))


class FdpgTrainer(CheckpointState, GroupObjectiveTrainer):
    """f-DPG: TRL's reference model gives pi_0's log-probs (TRL's beta is set to the objective's beta, which only
    makes TRL load and score it: the loss is the objective's); the trainer keeps log Z per prompt."""

    STATE_FILE = "fdpg_partition.json"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["args"].beta = kwargs["hyperparameters"]["beta"]
        self.partition = RunningPartition()
        super().__init__(*args, **kwargs)

    def objective_inputs(self, stats: GroupLogps, inputs: dict[str, Any]) -> TargetLogps:
        if "log_z" not in inputs:  # first use of this generated batch: its completions join the estimate once
            log_w = log_importance_partition(stats, beta=self.hyperparameters["beta"])
            inputs["log_z"] = self.partition.update(stats.group_ids, log_w)
        return TargetLogps(**vars(stats), log_z=inputs["log_z"])

    def checkpoint_state(self) -> dict[str, list]:
        return self.partition.state_dict()

    def load_checkpoint_state(self, state: dict[str, list]) -> None:
        self.partition.load_state_dict(state)


# objective name -> its trainer (objectives with `reads_groups`)
GROUP_TRAINERS: dict[str, type[GroupObjectiveTrainer]] = {"disco": GroupObjectiveTrainer, "fdpg": FdpgTrainer}
