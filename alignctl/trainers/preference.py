"""Offline preference training: TRL's DPOTrainer with the loss replaced by an alignctl objective.

TRL keeps data collation, the reference model, optimisation, logging and checkpointing; this subclass only
turns a batch into sequence statistics (PreferenceLogps, through alignctl's kernels rather than TRL's fused
LM head, since TDPO needs full-vocabulary divergences) and calls the objective's pure loss function. Objectives that
read only the reference's sequence log-probs get them precomputed once and shared across jobs
(alignctl.trainers.reference_cache) instead of a reference forward at every step.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from accelerate.utils import is_peft_model
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
from trl import DPOTrainer

from alignctl.divergences import Divergence
from alignctl.models.scoring import SequenceStats, sequence_stats
from alignctl.objectives.base import Objective, ObjectiveOutput, PreferenceLogps
from alignctl.trainers import batches, reference_cache


class PreferenceTrainer(DPOTrainer):
    # A subclass that scores fresh samples under the reference at every step (HybridTrainer) keeps the reference
    # model although the pairs' reference log-probs are precomputed.
    keeps_reference_model = False

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
        training_args = kwargs["args"]
        if objective.needs_token_divergence and training_args.precompute_ref_log_probs:
            raise ValueError(f"{objective.name} reads the reference's full distributions at every step; "
                             "set precompute_ref_log_probs=False")  # fmt: skip
        # Pairs objectives that read only the reference's sequence log-probs get them precomputed (shared through
        # alignctl.trainers.reference_cache); reference-free ones need none: with precompute on and no ref_model,
        # DPOTrainer keeps no reference model. TDPO keeps it (full-vocabulary divergences at every step).
        self.caches_reference = (
            objective.data == "pairs" and objective.needs_reference and not objective.needs_token_divergence
        )
        if self.caches_reference or not objective.needs_reference:
            training_args.precompute_ref_log_probs = True
        self._reference_freed = False
        super().__init__(*args, **kwargs)
        if self.args.train_sampling_strategy == "group_by_length":  # train.group_by_length
            self.train_dataset = with_lengths(self.train_dataset, self.args.max_length)
        if self.caches_reference and self.ref_model is not None and not self.keeps_reference_model:
            # Every batch now carries the reference log-probs: drop the reference model, which TRL keeps when given
            # one (accelerate's own hold on it goes when train() starts: Trainer calls accelerator.free_memory()).
            self.ref_model, self._reference_freed = None, True

    def _reference(self) -> tuple[torch.nn.Module | None, Any]:
        """The reference model and a context to score it in: a separate model, or with LoRA and none, the policy
        with its adapter off (TRL's convention: no second copy in memory)."""
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            return unwrapped, unwrapped.disable_adapter
        return self.ref_model, contextlib.nullcontext

    # Overrides DPOTrainer's private hook, which it calls from __init__ (train and eval datasets) and from evaluate()
    # (a dataset passed to it) when args.precompute_ref_log_probs: it returns the dataset with float columns
    # ref_chosen_logps / ref_rejected_logps, which DataCollatorForPreference copies into every batch.
    # TRL's version scores with its own fused LM head and caches per datasets fingerprint; ours scores through
    # alignctl's kernel (the numbers the on-the-fly path gives) and shares them across jobs (alignctl.trainers.reference_cache).
    def _precompute_ref_logps(self, dataset, name, batch_size):
        if not self.objective.needs_reference:  # SimPO, ASFT read no reference log-probs: no pass over the data
            return dataset
        if self._reference_freed:
            raise ValueError("the reference model was freed once its log-probs were cached; pass every evaluation "
                             "dataset to the trainer at construction")  # fmt: skip
        reference, context = self._reference()
        if reference is None:  # no ref_model and no adapter: before training, the policy is the reference
            reference = self.model
        return reference_cache.with_reference_logps(
            dataset, reference, collate=self.data_collator, batch_size=batch_size, kernel=self.kernel,
            device=self.accelerator.device, tokenizer=self._tokenizer, name=name,
            context=self._scoring_context(reference, context), skip=getattr(reference, "peft_config", {}).keys(),
            settings={"max_length": self.args.max_length, "truncation_mode": self.args.truncation_mode,
                      "mixed_precision": self.accelerator.mixed_precision},
        )  # fmt: skip

    def _scoring_context(self, reference: torch.nn.Module, context: Any) -> Any:
        """`context`, plus accelerate's autocast where the reference's forward will have it on the fly but does not
        yet: accelerate wraps a model's forward in autocast when it prepares it (TRL prepares a ref_model in
        __init__, Trainer the policy only in train()), and the naive kernel path calls that forward."""
        if not (self.kernel == "naive" and self.accelerator.native_amp and not hasattr(reference, "_original_forward")):
            return context

        @contextlib.contextmanager
        def both():
            with context(), self.accelerator.autocast():
                yield

        return both

    # Overrides Trainer's private hook (the only place it builds the train sampler) for train.group_by_length:
    # transformers' LengthGroupedSampler draws its order from torch's global RNG when the epoch starts, which a
    # resumed run reaches in another state (accelerate makes only a RandomSampler seedable), so it would train on other
    # batches; SeededLengthGroupedSampler draws it from (data_seed, epoch). tests/e2e/test_grouping.py resumes a run.
    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return SeededLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths, seed=seed)
        return sampler

    def sequence_stats(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> SequenceStats:
        """Statistics of every sequence of a collated batch, with the reference (and the per-token divergence)
        only where the objective reads them; the reference's log-probs from the batch where they were precomputed
        (see _precompute_ref_logps), so no reference forward runs."""
        precomputed = self.caches_reference and "ref_chosen_logps" in inputs
        reference, reference_context = self._reference()
        stats = sequence_stats(
            model,
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["completion_mask"],
            reference=reference if self.objective.needs_reference and not precomputed else None,
            divergence=self.divergence if self.objective.needs_token_divergence else None,
            kernel=self.kernel,
            reference_context=reference_context,
        )
        if precomputed:
            ref = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]])
            stats.ref_logps = ref.to(device=stats.logps.device, dtype=stats.logps.dtype)
        return stats

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


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' LengthGroupedSampler (shuffled megabatches of batches, each megabatch sorted by length) with the
    order of epoch e drawn from a generator seeded by (seed, e): the same batches however often, and after whatever
    resume, the epoch is started (Trainer and accelerate call set_epoch)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def with_lengths(dataset, max_length: int | None):
    """The tokenized pairs with a `length` column, what the collator pads a pair's two rows to: prompt + the longer
    completion, at most max_length (it truncates each sequence there). transformers' LengthGroupedSampler reads it."""

    def length(row: dict[str, Any]) -> dict[str, int]:
        n = len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))
        return {"length": min(n, max_length) if max_length else n}

    return dataset.map(length, keep_in_memory=True, desc="Pair lengths")
