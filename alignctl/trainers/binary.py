"""Offline training on binary feedback (KTO): PreferenceTrainer's flow on rows of prompt, completion, label.

TRL keeps optimisation, the reference model, logging and checkpointing; this subclass tokenizes one completion per
row (as TRL's KTOTrainer does: prompt and prompt + completion + EOS, split at their common prefix), collates with
TRL's own unpaired collator, scores through alignctl's kernels (alignctl.models.scoring, fused or naive, as every
offline trainer) and hands the sequence statistics to the objective's pure loss.

Why not a subclass of TRL's KTOTrainer: it scores with TRL's fused LM head (a `fused_lm_head=True` forward), not
alignctl's kernels and head maps; its loss is written inline in a private `_compute_loss`; and it fixes each row's
mismatched "KL" completion when it prepares the dataset (rotating completions within consecutive blocks of
per_device_train_batch_size rows), which holds only under a sequential sampler. Here the collator rotates the
completions of the batch it is given (row i gets row i-1's completion, row 0 the last row's: TRL's rotation), so
the mismatched completions are exactly the batch's own, whatever the sampler's order.

The reference log-probs of the mismatched pairs depend on the batch, so the reference scores every batch on the fly
(no precomputed cache). The KL rows are scored without gradient (z0 is detached) and gathered over processes, so
every rank uses the same z0: the mean over the global micro-batch (TRL: the mean of the ranks' means, equal when
ranks hold equal batches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from trl.data_utils import common_prefix_length
from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

from alignctl.objectives.base import BinaryLogps, BinaryOutput
from alignctl.trainers.preference import PreferenceTrainer, token_entropy


@dataclass
class BinaryCollator(DataCollatorForUnpairedPreference):
    """TRL's unpaired collator (input_ids, attention_mask, completion_mask right-padded, truncated to max_length from
    the end; label), plus each row's mismatched KL sequence (KL_input_ids, KL_attention_mask, KL_completion_mask):
    its prompt with the previous row's completion (row 0: the last row's)."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        rotated = [examples[-1]["completion_ids"], *(e["completion_ids"] for e in examples[:-1])]
        examples = [{**e, "KL_completion_ids": kl} for e, kl in zip(examples, rotated)]
        return super().torch_call(examples)


class BinaryTrainer(PreferenceTrainer):
    """PreferenceTrainer for the "binary" data kind (KTO): columns prompt, completion, label (True = desirable)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        objective, training_args = kwargs["objective"], kwargs["args"]
        if objective.data != "binary":
            raise ValueError(f"BinaryTrainer takes binary-feedback objectives, not {objective.name}")
        if training_args.precompute_ref_log_probs:
            raise ValueError("BinaryTrainer scores each batch's mismatched pairs with the reference on the fly; "
                             "set precompute_ref_log_probs=False")  # fmt: skip
        if training_args.per_device_train_batch_size < 2:  # row i's mismatched completion would be its own
            raise ValueError("KTO estimates its KL reference point from the other rows of a batch: "
                             "per_device_train_batch_size must be 2 or more")  # fmt: skip
        if training_args.truncation_mode != "keep_start":
            raise ValueError("BinaryTrainer truncates sequences with truncation_mode='keep_start' only")
        tokenizer = kwargs["processing_class"]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        kwargs.setdefault("data_collator", BinaryCollator(pad_id, training_args.max_length))
        super().__init__(*args, **kwargs)

    # Overrides DPOTrainer's private hook: its version tokenizes the "chosen"/"rejected" columns of pairs.
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        tokenizer, eos = self._tokenizer, self._tokenizer.eos_token

        def tokenize(row: dict[str, Any]) -> dict[str, Any]:
            completion = row["completion"] + ("" if row["completion"].endswith(eos) else eos)
            prompt_ids = tokenizer(row["prompt"])["input_ids"]
            full = tokenizer(row["prompt"] + completion)["input_ids"]
            cut = common_prefix_length(prompt_ids, full)  # where the completion starts
            return {"prompt_ids": prompt_ids[:cut], "completion_ids": full[cut:], "label": bool(row["label"])}

        dataset = dataset.map(tokenize, remove_columns=dataset.column_names, desc=f"Tokenizing {dataset_name} dataset")
        if args.max_length is not None:  # a prompt that fills max_length leaves no completion token to learn from
            dataset = dataset.filter(lambda row: len(row["prompt_ids"]) < args.max_length)
        return dataset

    # Overrides DPOTrainer's private hook: Trainer drops dataset columns not named here, and DPOTrainer names pairs'.
    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["prompt_ids", "completion_ids", "label"]

    def _gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """[B] on each rank -> every rank's rows, concatenated (ranks may hold batches of different sizes)."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return x
        counts = acc.gather(torch.tensor([x.numel()], device=x.device)).tolist()
        rows = acc.gather(acc.pad_across_processes(x, dim=0)).view(len(counts), -1)
        return torch.cat([row[:n] for row, n in zip(rows, counts)])

    def objective_batch(self, model, inputs):
        stats = self.sequence_stats(model, inputs)
        mismatched = {key: inputs[f"KL_{key}"] for key in ("input_ids", "attention_mask", "completion_mask")}
        with torch.no_grad():  # z0 is a constant of the loss: no gradient through the mismatched pairs
            kl = self.sequence_stats(model, mismatched)
        labels = inputs["label"].to(device=stats.logps.device, dtype=torch.bool)
        batch = BinaryLogps(
            policy_logps=stats.logps,
            ref_logps=stats.ref_logps,
            labels=labels,
            policy_kl_logps=self._gather_rows(kl.logps.detach()),
            ref_kl_logps=self._gather_rows(kl.ref_logps),
        )
        return batch, {"entropy": token_entropy(stats)}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        batch, logged = self.objective_batch(model, inputs)
        result: BinaryOutput = self.objective.loss(batch, divergence=self.divergence, **self.hyperparameters)
        loss = result.losses.mean()
        self._record_binary(result, batch, logged, "train" if model.training else "eval")
        return (loss, {}) if return_outputs else loss

    def _record_binary(self, result: BinaryOutput, batch: BinaryLogps, logged: dict[str, torch.Tensor], mode: str):
        """TRL's KTO metrics: rewards/ and logps/ chosen (desirable rows) and rejected (undesirable rows), each the
        mean over the rows of every rank that have that label (skipped in a batch with none), their margin when
        both are there, kl (z0), and the policy's entropy."""
        gather = self.accelerator.gather_for_metrics
        metrics = self._metrics[mode]
        rewards, logps = result.rewards.detach(), batch.policy_logps.detach()
        means = {}
        for name, rows in (("chosen", batch.labels), ("rejected", ~batch.labels)):
            count = gather(rows.sum().reshape(1)).sum().item()
            if count:
                for key, values in (("rewards", rewards), ("logps", logps)):
                    means[f"{key}/{name}"] = gather(values[rows].sum().reshape(1)).sum().item() / count
                    metrics[f"{key}/{name}"].append(means[f"{key}/{name}"])
        if "rewards/chosen" in means and "rewards/rejected" in means:
            metrics["rewards/margins"].append(means["rewards/chosen"] - means["rewards/rejected"])
        metrics["kl"].append(result.kl.item())
        for key, value in logged.items():
            metrics[key].append(gather(value.detach().reshape(1)).mean().item())
