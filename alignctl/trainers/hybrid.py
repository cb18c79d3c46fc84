"""Offline pairs plus fresh samples of the current policy at every step (objective=hypo): PreferenceTrainer with k
completions per prompt of the batch drawn, scored and handed to the loss beside the pairs.

Each step, for the prompts of the batch's pairs: k = train.num_generations completions per prompt are sampled from
the current weights (alignctl.models.sampling.sample: temperature 1, no top-k/top-p, dataset.max_new_tokens, as the
online objectives sample), without gradient; they are scored under the policy (with gradient) and the reference (no
gradient) through alignctl.models.scoring, and the objective's loss gets `HybridLogps` (pairs + [B, k] sample log-probs).
Each completion is drawn by alignctl.trainers.sampling's row-seeded Gumbel-max, keyed by (train.seed, global step,
micro-batch within the step, the completion's row in the step's global batch, its position): a run resumed from a
checkpoint draws the samples the uninterrupted run drew, and 1 or N processes draw the same ones (each process's
pairs are a contiguous slice of the global batch). The global RNG is left as it was.

k lives in train.num_generations (the online objectives' "completions sampled per prompt"), not in the loss
signature: the loss reads k off its [B, k] input, and integers that shape a run are train.* fields (alignctl/config/schema.py).

The reference model stays loaded (keeps_reference_model): the pairs' reference log-probs are still precomputed and
shared (alignctl.trainers.reference_cache), but the fresh samples need the reference at every step.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from alignctl.models.row_seeded import RowSeededSampler, row_seeded
from alignctl.models.sampling import sample
from alignctl.models.scoring import sequence_stats
from alignctl.objectives import dpo
from alignctl.objectives.hypo import HybridLogps, reverse_kl_term
from alignctl.trainers.preference import PreferenceTrainer


class HybridTrainer(PreferenceTrainer):
    keeps_reference_model = True

    def __init__(self, *args: Any, samples_per_prompt: int, max_new_tokens: int, seed: int, **kwargs: Any) -> None:
        self.samples_per_prompt = samples_per_prompt
        self.max_new_tokens = max_new_tokens
        self.sampling_seed = seed
        self._draw = (-1, 0)  # (global step, micro-batches drawn in it): the seed of the next draw
        super().__init__(*args, **kwargs)
        # The batch carries prompt token ids only; the prompt text (what sample() takes) comes from the dataset,
        # whose TRL-tokenized rows keep their `prompt` column beside `prompt_ids`.
        self.prompt_texts = {tuple(ids): text for ids, text in zip(self.train_dataset["prompt_ids"],
                                                                    self.train_dataset["prompt"])}  # fmt: skip

    def batch_prompts(self, inputs: dict[str, torch.Tensor]) -> list[str]:
        """The prompt text of each pair of a collated batch (chosen rows: tokens attended and not completion)."""
        half = inputs["input_ids"].shape[0] // 2
        prompt_mask = inputs["attention_mask"][:half].bool() & ~inputs["completion_mask"][:half].bool()
        prompts = []
        for ids, keep in zip(inputs["input_ids"][:half], prompt_mask):
            key = tuple(ids[keep].tolist())
            if key not in self.prompt_texts:
                raise ValueError("a batch's prompt is not among the training prompts (only train_dataset is sampled)")
            prompts.append(self.prompt_texts[key])
        return prompts

    def next_seed(self) -> int:
        """Seed of this micro-batch's draw: (train.seed, global step, micro-batch index); rows are keyed apart by
        their place in the global batch (fresh_samples)."""
        step = self.state.global_step
        micro = self._draw[1] if self._draw[0] == step else 0
        self._draw = (step, micro + 1)
        return seed_of(self.sampling_seed, step, micro)

    def fresh_samples(self, model: torch.nn.Module, prompts: list[str]):
        """k completions per prompt from the current weights, the global RNG and the tokenizer left as they were."""
        policy = self.accelerator.unwrap_model(model)
        was_training, padding_side = policy.training, self._tokenizer.padding_side
        devices = [policy.device] if policy.device.type == "cuda" else []
        policy.eval()
        try:
            rows = len(prompts) * self.samples_per_prompt
            seed = self.next_seed()
            sampler = RowSeededSampler(seed, self.state.global_step, self.accelerator.process_index * rows)
            with torch.random.fork_rng(devices=devices), row_seeded(policy, sampler):
                return sample(policy, self._tokenizer, prompts, n=self.samples_per_prompt,
                              max_new_tokens=self.max_new_tokens, temperature=1.0, seed=seed, batch_size=rows)
        finally:
            self._tokenizer.padding_side = padding_side
            policy.train(was_training)

    def objective_batch(
        self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]
    ) -> tuple[HybridLogps, dict[str, torch.Tensor]]:
        """The pairs' statistics (PreferenceTrainer) plus this step's fresh samples of the batch's prompts; with
        lam = 0 the pairs alone (the loss is DPO's then, and sampling would only cost time)."""
        pairs, logged = super().objective_batch(model, inputs)
        if self.hyperparameters["lam"] == 0:
            return pairs, logged
        prompts = self.batch_prompts(inputs)
        batch = self.fresh_samples(model, prompts).batch
        device = inputs["input_ids"].device
        reference, reference_context = self._reference()
        stats = sequence_stats(
            model, batch.input_ids.to(device), batch.attention_mask.to(device), batch.completion_mask.to(device),
            reference=reference, kernel=self.kernel, reference_context=reference_context,
        )  # fmt: skip
        shape = (len(prompts), self.samples_per_prompt)
        real = (stats.lengths > 0).view(shape)
        hybrid = HybridLogps(pairs, stats.logps.view(shape), stats.ref_logps.view(shape), real)
        kl = reverse_kl_term(hybrid.policy_sample_logps.detach(), hybrid.ref_sample_logps, hybrid.sample_mask)
        beta = self.hyperparameters["beta"]
        logged["hypo/kl"] = kl  # the online KL(pi_theta || pi_ref) estimate, per prompt
        logged["hypo/dpo_loss"] = dpo.loss(pairs, divergence=None, beta=beta).losses.detach()
        logged["hypo/sample_length"] = stats.lengths.float()
        return hybrid, logged


def seed_of(*parts: int) -> int:
    """A 63-bit seed from integers, the same in every process and run (unlike hash() of a tuple)."""
    digest = hashlib.blake2b(b"".join(int(p).to_bytes(8, "little", signed=True) for p in parts), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def options(cfg: Any) -> dict[str, Any]:
    """HybridTrainer's sampling settings from a RunConfig: k, the completion budget, the seed."""
    return {"samples_per_prompt": cfg.train.num_generations, "max_new_tokens": cfg.dataset.max_new_tokens,
            "seed": cfg.train.seed}  # fmt: skip


TRAINERS = {"hypo": HybridTrainer}  # objectives whose pairs come with fresh policy samples (alignctl.run.train)
