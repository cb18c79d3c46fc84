"""Online RL: TRL's GRPOTrainer with the divergence to the starting policy pi_0 chosen by `divergence=`.

TRL keeps generation, group-normalised advantages, clipped ratios, `loss_type` (default "dapo"), optimisation,
logging and checkpointing. What alignctl adds (the math: alignctl.objectives.grpo):

- divergence=reverse_kl: TRL's own k3 estimator, `beta = divergence_coef`; TRL loads pi_0 as its reference
  model (the only case with one in memory). With `objective.kl_estimator=low_var_kl` (DPH-RL's reverse-KL baseline)
  TRL still loads pi_0 and scores the samples under it, but the term added is verl's clamped estimator, not TRL's k3.
- divergence=forward_kl / js / alpha (DPH-RL, arXiv 2509.07430): before training, `reference_samples_per_prompt`
  completions per training prompt are sampled from pi_0 (temperature 1) and stored with pi_0's per-token
  log-probs (`ReferenceStore`, in memory; sampling uses the run's seed, so a resumed run rebuilds the same store).
  With a correct/incorrect reward, only correct samples are kept, and (alignctl.run.train, split_solved_prompts) only
  those of the prompts pi_0 solves every time, which then get no RL: DPH-RL's D_pef / D_exp split.
  Every loss computation adds `divergence_coef * token-mean f(pi_theta/pi_0)` over `divergence_batch_size` stored
  samples (cycled in a seeded random order); TRL's beta is 0, so no reference model is loaded.
- divergence=none: plain GRPO/DAPO.

The divergence estimate is logged as `divergence/penalty` (k3 for reverse_kl: TRL's own `kl` metric).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from trl import GRPOTrainer

from alignctl.divergences import Divergence
from alignctl.errors import UsageError
from alignctl.models.sampling import Batch, sample
from alignctl.models.scoring import completion_token_logps
from alignctl.objectives import grpo
from alignctl.objectives.base import Objective
from alignctl.objectives.grpo import TokenLogps
from alignctl.trainers.checkpoint_state import CheckpointState
from alignctl.trainers.sampling import RowSeededGeneration


def trl_reward(reward: Callable[[list[str], list[str]], list[float]], name: str) -> Callable[..., list[float]]:
    """alignctl's (prompts, completions) -> scores as a TRL reward function (keyword arguments, extras ignored)."""

    def reward_func(prompts, completions, **_: Any) -> list[float]:
        return [float(r) for r in reward(list(prompts), list(completions))]

    reward_func.__name__ = name
    return reward_func


@dataclass
class ReferenceStore:
    """Stored pi_0 samples: left-padded ids (`batch`) and pi_0's per-token log-probs `ref_logps` [N, T-1], aligned with
    `batch.completion_mask[:, 1:]` (0 elsewhere)."""

    batch: Batch
    ref_logps: torch.Tensor
    num_sampled: int  # before filtering
    # Prompts pi_0 solved in every sample (reward >= keep_min_reward each time): DPH-RL's D_pef. Empty without
    # keep_min_reward.
    solved_prompts: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return self.ref_logps.shape[0]

    def rows(self, index: torch.Tensor) -> tuple[Batch, torch.Tensor]:
        """A minibatch, trimmed to its widest row, and its stored log-probs flat in completion-token order."""
        b = self.batch
        ids, attn, comp = b.input_ids[index], b.attention_mask[index], b.completion_mask[index]
        start = int((attn.sum(0) > 0).nonzero()[0])  # left padding: the first column any row uses
        ref = self.ref_logps[index][:, start:]
        ids, attn, comp = ids[:, start:], attn[:, start:], comp[:, start:]
        return Batch(ids, attn, comp), ref[comp[:, 1:].bool()]


@torch.no_grad()
def build_reference_store(
    model,
    tokenizer,
    prompts: list[str],
    reward: Callable[[list[str], list[str]], list[float]],
    *,
    samples_per_prompt: int,
    max_new_tokens: int,
    seed: int,
    keep_min_reward: float | None = None,
    solved_prompts_only: bool = False,
    batch_size: int = 256,
    kernel: str = "fused",
) -> ReferenceStore:
    """Sample from pi_0 (`model`, temperature 1) and store pi_0's per-token log-probs of the samples kept: all of
    them; with `keep_min_reward`, the rewarded ones (all of them if none is: the divergence still needs samples);
    with `solved_prompts_only` too, only those of the prompts solved in every sample (DPH-RL's D_pef)."""
    was_training = model.training
    model.eval()
    got = sample(model, tokenizer, prompts, n=samples_per_prompt, max_new_tokens=max_new_tokens, temperature=1.0,
                 seed=seed, batch_size=batch_size)  # fmt: skip
    keep = torch.ones(len(got.completions), dtype=torch.bool)
    solved: frozenset[str] = frozenset()
    if keep_min_reward is not None:
        rewards = torch.tensor(reward(got.prompts, got.completions), dtype=torch.float32)
        keep = rewards >= keep_min_reward
        failed = {p for p, ok in zip(got.prompts, keep.tolist()) if not ok}
        solved = frozenset(got.prompts) - failed
        if solved_prompts_only:
            keep &= torch.tensor([p in solved for p in got.prompts])
        elif not keep.any():  # pi_0 solves nothing (e.g. a tiny test model): the divergence still needs samples
            keep = torch.ones_like(keep)
    keep &= got.batch.completion_mask.sum(1) > 1  # at least one scored token after the shift
    b = got.batch
    batch = Batch(b.input_ids[keep], b.attention_mask[keep], b.completion_mask[keep])
    ref = torch.zeros(batch.input_ids.shape[0], batch.input_ids.shape[1] - 1)
    for start in range(0, len(ref), batch_size):
        sl = slice(start, start + batch_size)
        mask = batch.completion_mask[sl, 1:].bool()
        flat = completion_token_logps(model, batch.input_ids[sl], batch.attention_mask[sl], batch.completion_mask[sl],
                                      kernel=kernel)  # fmt: skip
        ref[sl][mask] = flat.float()
    model.train(was_training)
    return ReferenceStore(batch, ref, num_sampled=len(got.completions), solved_prompts=solved)


def dph_reference_store(
    model, tokenizer, train_data, reward, divergence: Divergence, *, samples_per_prompt: int, max_new_tokens: int,
    seed: int, verifiable: bool, split_solved: bool, kernel: str,
) -> tuple[ReferenceStore, Any]:  # fmt: skip
    """pi_0's stored samples for a generator divergence, and the training prompts left for RL. With a verifiable
    reward only pi_0's correct samples are kept; with `split_solved`, DPH-RL's split: prompts pi_0 solves in every
    sample get the divergence term only and leave the RL prompts."""
    from rich.console import Console

    console = Console(stderr=True)
    k = samples_per_prompt
    with console.status("sampling and scoring pi_0's stored samples for the divergence term"):
        store = build_reference_store(
            model, tokenizer, list(train_data["prompt"]), reward, samples_per_prompt=k, max_new_tokens=max_new_tokens,
            seed=seed, keep_min_reward=1.0 if verifiable else None,  # keep pi_0's correct solves
            solved_prompts_only=split_solved, kernel=kernel,
        )  # fmt: skip
    if split_solved:
        train_data = train_data.filter(lambda row: row["prompt"] not in store.solved_prompts)
        if not len(store) or not len(train_data):
            raise UsageError(
                f"train.split_solved_prompts=true: pi_0 solved {len(store.solved_prompts)} of "
                f"{len(store.solved_prompts) + len(train_data)} training prompts in all {k} samples, leaving "
                f"{'no divergence samples' if not len(store) else 'no prompt for RL'}; change "
                "train.reference_samples_per_prompt or set train.split_solved_prompts=false"
            )
        console.print(
            f"DPH-RL split: {len(store.solved_prompts)} prompts pi_0 solves in all {k} samples get the divergence "
            f"term, {len(train_data)} get RL"
        )
    console.print(f"stored {len(store)} of {store.num_sampled} pi_0 samples for divergence={divergence.name}")
    return store, train_data


class StoredSampleDivergence(CheckpointState):
    """Mixin for TRL's online trainers (listed before the trainer): DPH-RL's generator term on pi_0's stored samples,
    `divergence_coef * token-mean f(pi_theta/pi_0)` (alignctl.objectives.grpo's term) over minibatches of
    `divergence_batch_size` stored samples, cycled in an order seeded by train.seed that checkpoints carry. The trainer
    calls `setup_divergence(...)` before TRL's __init__ and `start_reference_order()` after it."""

    reference_store: ReferenceStore | None

    def setup_divergence(
        self, trl_args: Any, objective: Objective, hyperparameters: dict[str, Any], divergence: Divergence | None,
        reference_store: ReferenceStore | None, divergence_batch_size: int, kernel: str, kl_estimator: str,
    ) -> bool:  # fmt: skip
        """What both online trainers keep, and TRL's beta: reverse_kl has TRL's reference model score the samples
        (beta = divergence_coef); the generator divergences read pi_0's stored samples (no reference model, beta 0).
        Returns whether TRL's KL is the term (reverse_kl)."""
        self.objective, self.hyperparameters, self.divergence = objective, hyperparameters, divergence
        self.kernel, self.divergence_batch_size, self.kl_estimator = kernel, divergence_batch_size, kl_estimator
        uses_trl_kl = divergence is not None and divergence.name == "reverse_kl"
        trl_args.beta = hyperparameters["divergence_coef"] if uses_trl_kl else 0.0
        self.reference_store = None if uses_trl_kl or divergence is None else reference_store
        if not uses_trl_kl and divergence is not None and (reference_store is None or len(reference_store) == 0):
            raise ValueError(f"divergence={divergence.name} needs stored pi_0 samples; the reference store is empty")
        return uses_trl_kl

    def start_reference_order(self) -> None:
        self._order = torch.empty(0, dtype=torch.long)
        self._cursor = 0
        self._rng = torch.Generator().manual_seed(self.args.seed)

    def _next_reference_rows(self) -> torch.Tensor:
        n, k = len(self.reference_store), min(self.divergence_batch_size, len(self.reference_store))
        if self._cursor + k > len(self._order):
            self._order, self._cursor = torch.randperm(n, generator=self._rng), 0
        index = self._order[self._cursor : self._cursor + k]
        self._cursor += k
        return index

    def divergence_term(self, model, index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """divergence_coef * D_f on a minibatch of stored pi_0 samples (alignctl.objectives.grpo), and D_f; the
        minibatch is the next `divergence_batch_size` rows of a seeded shuffle unless `index` names the rows."""
        batch, ref = self.reference_store.rows(self._next_reference_rows() if index is None else index)
        device = self.accelerator.device
        policy = completion_token_logps(
            model, batch.input_ids.to(device), batch.attention_mask.to(device), batch.completion_mask.to(device),
            kernel=self.kernel,
        )  # fmt: skip
        out = grpo.loss(TokenLogps(policy, ref.to(device)), divergence=self.divergence,
                        divergence_coef=self.hyperparameters["divergence_coef"],
                        kl_estimator=self.kl_estimator)  # fmt: skip
        return out.loss, out.penalty

    # The stored-sample order is part of the run's state: a resumed run reads the same minibatches next.
    STATE_FILE = "reference_store_order.json"

    def checkpoint_state(self) -> dict[str, Any] | None:
        if self.reference_store is None:
            return None
        return {"order": self._order.tolist(), "cursor": self._cursor, "rng": self._rng.get_state().tolist()}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self._order, self._cursor = torch.tensor(state["order"], dtype=torch.long), state["cursor"]
        self._rng.set_state(torch.tensor(state["rng"], dtype=torch.uint8))


class OnlineTrainer(StoredSampleDivergence, RowSeededGeneration, GRPOTrainer):
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
        # reverse_kl: TRL's k3 is the term, unless low_var_kl replaces it
        uses_trl_kl = self.setup_divergence(kwargs["args"], objective, hyperparameters, divergence, reference_store,
                                            divergence_batch_size, kernel, hyperparameters["kl_estimator"])  # fmt: skip
        self.replaces_trl_kl = uses_trl_kl and hyperparameters["kl_estimator"] == "low_var_kl"
        self._captured_logps: list[torch.Tensor] | None = None
        super().__init__(*args, **kwargs)
        self.start_reference_order()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0  # as TRL's loss
        if self.replaces_trl_kl:
            return self._loss_with_low_var_kl(model, inputs, return_outputs, num_items_in_batch, mode, normalizer)
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.reference_store is not None:
            term, penalty = self.divergence_term(model)
            loss = loss + term / normalizer
            self._metrics[mode]["divergence/penalty"].append(penalty.item())
        return loss

    def _loss_with_low_var_kl(self, model, inputs, return_outputs, num_items_in_batch, mode, normalizer):
        """TRL's policy loss without its k3 (its _compute_loss adds beta * k3 only when beta != 0, so beta is 0 for
        this call) plus divergence_coef * token-mean low_var_kl on the same samples, from the policy's per-token
        log-probs TRL computes in that call and pi_0's that TRL stored when it generated them."""
        beta, self.beta, self._captured_logps = self.beta, 0.0, []
        try:
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            (policy_logps,) = self._captured_logps
        finally:
            self.beta, self._captured_logps = beta, None
        logps = TokenLogps(policy_logps, inputs["ref_per_token_logps"], inputs["completion_mask"])
        out = self.objective.loss(logps, divergence=self.divergence, **self.hyperparameters)
        self._metrics[mode]["kl"].append(out.penalty.item())  # TRL's name for its own estimate
        return loss + out.loss / normalizer

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any):
        # Private TRL method, overridden only to keep the policy's per-token log-probs (with grad) that TRL's
        # _compute_loss computes and does not return: the low_var_kl term needs exactly those (a second forward
        # would cost a step's compute). tests/trainers/test_online.py checks that one such call happens per loss.
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._captured_logps is not None:
            self._captured_logps.append(out[0])
        return out
