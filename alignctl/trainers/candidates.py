"""Offline training on several completions per prompt: ADPO's ranked candidates and D2O's negative + self-samples.

PreferenceTrainer's flow (TRL keeps optimisation, the reference model, logging and checkpointing; the loss is the
objective's pure function) with its own data handling: each (prompt, completion_i) is tokenized as DPOTrainer
tokenizes a pair, and the collator flattens the [B, K] completions of a batch into B*K rows, so that one
`sequence_stats` call scores them all under the policy and the reference.

Tokenized rows hold prompt_ids, completion_ids (K token lists) and, for candidates with rewards, scores. D2O rows
put the negative first: completion_ids = [negative, *samples].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.data.data_collator import DataCollatorMixin
from trl.data_utils import common_prefix_length
from trl.trainer.utils import pad

from alignctl.trainers import batches
from alignctl.trainers.preference import PreferenceTrainer, token_entropy


@dataclass
class CandidateCollator(DataCollatorMixin):
    """[B] rows of K completions -> B*K right-padded sequences (row-major: sequence b*K + k is completion k of row
    b), truncated to `max_length` from the end (TRL's "keep_start").

    Returns input_ids, attention_mask, completion_mask [B*K, T]; candidate_mask [B, K] (False pads rows with fewer
    completions than the widest row; such slots hold the prompt alone); scores [B, K] when rows have them.
    """

    pad_token_id: int
    max_length: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(e["completion_ids"]) for e in examples)
        ids, completion = [], []
        for e in examples:
            prompt = e["prompt_ids"]
            for c in e["completion_ids"] + [[]] * (width - len(e["completion_ids"])):
                ids.append(torch.tensor(prompt + c)[: self.max_length])
                completion.append(torch.tensor([0] * len(prompt) + [1] * len(c))[: self.max_length])
        out = {
            "input_ids": pad(ids, padding_value=self.pad_token_id),
            "attention_mask": pad([torch.ones_like(x) for x in ids]),
            "completion_mask": pad(completion),
            "candidate_mask": torch.tensor([[k < len(e["completion_ids"]) for k in range(width)] for e in examples]),
        }
        if "scores" in examples[0]:
            out["scores"] = torch.tensor([e["scores"] + [0.0] * (width - len(e["scores"])) for e in examples])
        return out


class CandidateTrainer(PreferenceTrainer):
    """PreferenceTrainer for the "candidates" (ADPO) and "negatives" (D2O) data kinds.

    Candidates: columns prompt, completions (K strings), optional rewards (the scores ADPO turns into soft labels);
    the reference model is the anchor. Negatives: columns prompt, negative, samples (K strings); the reference
    model is both pi_r^+ and pi_r^- (D2O's simplest setting).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        objective, training_args = kwargs["objective"], kwargs["args"]
        if objective.data not in ("candidates", "negatives"):
            raise ValueError(f"CandidateTrainer takes candidates or negatives objectives, not {objective.name}")
        if objective.needs_reference and training_args.precompute_ref_log_probs:
            raise ValueError("CandidateTrainer scores every completion with the reference on the fly; "
                             "set precompute_ref_log_probs=False")  # fmt: skip
        if training_args.truncation_mode != "keep_start":
            raise ValueError("CandidateTrainer truncates sequences with truncation_mode='keep_start' only")
        tokenizer = kwargs["processing_class"]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        kwargs.setdefault("data_collator", CandidateCollator(pad_id, training_args.max_length))
        super().__init__(*args, **kwargs)

    # Overrides DPOTrainer's private hook: its version tokenizes the "chosen"/"rejected" columns of pairs.
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        tokenizer, eos = self._tokenizer, self._tokenizer.eos_token
        negatives = self.objective.data == "negatives"

        def tokenize(row: dict[str, Any]) -> dict[str, Any]:
            texts = [row["negative"], *row["samples"]] if negatives else row["completions"]
            prompt_ids = tokenizer(row["prompt"])["input_ids"]
            full = [tokenizer(row["prompt"] + t + ("" if t.endswith(eos) else eos))["input_ids"] for t in texts]
            cut = min(common_prefix_length(prompt_ids, f) for f in full)  # where the completions start
            out = {"prompt_ids": prompt_ids[:cut], "completion_ids": [f[cut:] for f in full]}
            if "rewards" in row:
                out["scores"] = row["rewards"]
            return out

        dataset = dataset.map(tokenize, remove_columns=dataset.column_names, desc=f"Tokenizing {dataset_name} dataset")
        if args.max_length is not None:  # a prompt that fills max_length leaves no completion token to learn from
            dataset = dataset.filter(lambda row: len(row["prompt_ids"]) < args.max_length)
        return dataset

    # Overrides DPOTrainer's private hook: Trainer drops dataset columns not named here, and DPOTrainer names pairs'.
    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["prompt_ids", "completion_ids", "scores"]

    def objective_batch(self, model, inputs):
        stats = self.sequence_stats(model, inputs)
        mask = inputs["candidate_mask"].bool()
        logps = stats.logps.view(mask.shape)
        if self.objective.data == "negatives":
            batch = batches.negatives(stats, mask)
            samples = mask[:, 1:]
            # logged "chosen": the mean self-sample; "rejected": the negative
            chosen = (logps[:, 1:] * samples).sum(-1) / samples.sum(-1).clamp(min=1)
            rejected = logps[:, 0]
        else:
            scores = inputs.get("scores")
            batch = batches.candidates(stats, mask, scores)
            # logged "chosen"/"rejected": the candidates with the highest/lowest score (no scores: first/last)
            key = scores if scores is not None else -torch.arange(mask.shape[1], device=mask.device).expand(mask.shape)
            best = key.float().masked_fill(~mask, float("-inf")).argmax(-1, keepdim=True)
            worst = key.float().masked_fill(~mask, float("inf")).argmin(-1, keepdim=True)
            chosen, rejected = logps.gather(-1, best).squeeze(-1), logps.gather(-1, worst).squeeze(-1)
        logged = {"logps/chosen": chosen, "logps/rejected": rejected, "entropy": token_entropy(stats)}
        return batch, logged
