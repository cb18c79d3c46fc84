"""Reward-model training (objective=reward_model): TRL's RewardTrainer, with its loss handed to the objective's pure
function (alignctl.objectives.reward_model, the number TRL computes: tests/objectives/test_reward_model.py).

TRL keeps the collation (chosen then rejected rows, right-padded, in one batch; the optional `margin` column),
optimisation, logging (accuracy, margin, min/mean/max reward) and checkpointing; the model is the policy's starting
weights as a one-output sequence classifier (alignctl.models.loading.load_reward_model). One choice is alignctl's:
the pairs are tokenized here exactly as `reward=classifier` reads a text when it scores one (alignctl.rewards.
classifier): prompt + completion with the tokenizer's special tokens, no EOS appended, the last `max_length` tokens
kept. TRL appends EOS and drops longer pairs instead; but a policy's completions reach the reward decoded without
their EOS, so a model trained on EOS-ended texts would pool another token at use than in training (wherever the pad
token is not the EOS token, as in the embedded tiny model).
"""

from __future__ import annotations

from typing import Any

from trl import RewardConfig, RewardTrainer

from alignctl.models import loading
from alignctl.objectives.base import Objective
from alignctl.objectives.reward_model import PairRewards


def pair_ids(tokenizer, prompts: list[str], completions: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each prompt + completion as reward=classifier tokenizes it: special tokens added, cut from the
    left to `max_length` tokens (the completion's end is always kept)."""
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        texts = [p + c for p, c in zip(prompts, completions)]
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    finally:
        tokenizer.truncation_side = side


def tokenized_pairs(dataset, tokenizer, max_length: int):
    """prompt/chosen/rejected rows -> TRL's processed preference rows: chosen_ids, rejected_ids, and `margin` where
    the data has one (other columns, e.g. sampled pairs' chosen_reward, are dropped)."""

    def tokenize(rows: dict[str, list]) -> dict[str, list]:
        return {side + "_ids": pair_ids(tokenizer, rows["prompt"], rows[side], max_length)
                for side in ("chosen", "rejected")}  # fmt: skip

    dropped = [name for name in dataset.column_names if name != "margin"]
    return dataset.map(tokenize, batched=True, remove_columns=dropped, keep_in_memory=True, desc="Tokenizing pairs")


class RewardModelTrainer(RewardTrainer):
    """TRL's RewardTrainer whose loss is `objective.loss` on the batch's chosen and rejected scores."""

    def __init__(
        self,
        *args: Any,
        objective: Objective,
        hyperparameters: dict[str, Any],
        divergence: Any = None,
        **kwargs: Any,
    ) -> None:
        if not objective.trains_reward_model:
            raise ValueError(f"RewardModelTrainer trains reward models, not objective={objective.name}")
        self.objective, self.hyperparameters, self.divergence = objective, hyperparameters, divergence
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # TRL's compute_loss runs the forward and logs its metrics; its loss (the same value) is replaced by the
        # objective's, so the loss trained is the one tested on its own.
        _, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        chosen, rejected = outputs.logits.squeeze(-1).chunk(2)
        rewards = PairRewards(chosen, rejected, inputs.get("margin"))
        loss = self.objective.loss(rewards, divergence=self.divergence, **self.hyperparameters).losses.mean()
        return (loss, outputs) if return_outputs else loss


def reward_model_trainer(cfg: Any, shared_args: dict[str, Any], train_dataset, processing_class, **kwargs: Any):
    """The trainer of objective=reward_model. cfg: the run's config (train.max_length, model.lora); shared_args: the
    TrainingArguments every alignctl trainer takes (alignctl.run.train._shared_args); kwargs: RewardModelTrainer's
    (model, callbacks, objective, hyperparameters, divergence). With model.lora the adapter is a SEQ_CLS one, which
    trains the new score head in full."""
    coefficient = kwargs["hyperparameters"]["center_rewards_coefficient"]
    args = RewardConfig(**shared_args, max_length=cfg.train.max_length, dataset_num_proc=None,
                        center_rewards_coefficient=coefficient or None)  # TRL's own (replaced) loss says the same
    data = tokenized_pairs(train_dataset, processing_class, cfg.train.max_length)
    return RewardModelTrainer(args=args, train_dataset=data, processing_class=processing_class,
                              peft_config=loading.lora_config(cfg, task_type="SEQ_CLS"), **kwargs)  # fmt: skip
