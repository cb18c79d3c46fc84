"""The reward-KL trajectory of a run: every eval.every_steps training steps, the policy's mean reward and its KL to
the reference on a small fixed set of held-out prompts, with the entropy and distinct-2 of its samples and (pairwise
objectives) the sequential KL of held-out chosen and rejected completions -> curve.jsonl (one row per point, step 0
first). This is what the f-DPO and TDPO papers trace their reward-KL frontiers and mechanisms with; `alignctl
report` draws it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from alignctl import jsonl
from alignctl.eval import metrics as m
from alignctl.divergences import get as get_divergence
from alignctl.models.sampling import Batch, sample_rows, score

# TDPO's sequential KL, KL(pi_ref || pi) per token: forward KL in alignctl's convention (alignctl.divergences)
SEQUENTIAL_KL = get_divergence("forward_kl")

CURVE_FILE = "curve.jsonl"


def curve_point(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    reward: Callable[[list[str], list[str]], list[float]],
    *,
    samples_per_prompt: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    batch_size: int,
    kernel: str,
    pairs: Batch | None = None,
) -> dict[str, float]:
    """Mean reward, sequence KL(policy || reference), entropy per token and distinct-2 of the policy's samples on
    `prompts`; with `pairs` (held-out preference pairs, their chosen rows then their rejected rows: pairwise
    objectives) also TDPO's sequential KL of each side (its Fig. 3): the mean over pairs of
    sum_t KL(pi_ref(. | x, y_<t) || pi(. | x, y_<t)) along the chosen and along the rejected completion.
    Leaves the global RNG, the tokenizer's padding side and the policy's train/eval mode as they were, so training
    with a curve takes the same steps as training without one."""
    was_training, padding_side = policy.training, tokenizer.padding_side
    policy.eval()
    try:
        got = sample_rows(policy, tokenizer, prompts, n=samples_per_prompt, max_new_tokens=max_new_tokens,
                          temperature=temperature, seed=seed, batch_size=batch_size)  # fmt: skip
        stats = score(policy, reference, got.batch, batch_size, kernel=kernel)
        rewards = reward(got.prompts, got.completions)
        sides = score(policy, reference, pairs, batch_size, kernel=kernel, divergence=SEQUENTIAL_KL) if pairs else None
    finally:
        tokenizer.padding_side = padding_side
        policy.train(was_training)
    point = {
        "reward_mean": m.reward_stats(rewards)["mean"],
        "kl_to_reference": m.sequence_kl(stats.logps, stats.ref_logps),
        "entropy_per_token": (stats.entropy.sum() / stats.lengths.sum()).item(),
        "distinct_2": m.distinct_n(got.completions, 2),
    }
    if sides is not None:
        chosen, rejected = sides.divergence.chunk(2)
        point |= {"seq_kl_chosen": chosen.mean().item(), "seq_kl_rejected": rejected.mean().item()}
    return point


class RewardKLCurve(TrainerCallback):
    """Writes a curve point at step 0, every `every_steps` steps and at the last step to `<run_dir>/curve.jsonl`; a resumed run first
    drops the points after its checkpoint, so each step appears once. `point(model)` computes one point.
    train.rounds > 1: round `round_number` (its Trainer counts steps from 0) writes the run's step, `step_offset` + its own,
    and the round with each point; its step 0 is the round before's last point, so only round 1 writes one."""

    def __init__(
        self, path: Path, every_steps: int, point: Callable[[PreTrainedModel], dict[str, float]],
        step_offset: int = 0, round_number: int | None = None,
    ) -> None:  # fmt: skip
        self.path, self.every_steps, self.point = path, every_steps, point
        self.step_offset, self.round_number = step_offset, round_number

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        start = self.step_offset + state.global_step  # 0: a fresh start (an earlier attempt's rows go); else resumed
        kept = [row for row in read_curve(self.path) if row["step"] <= start] if start else []
        self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))
        if start == 0:
            self._append(0, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        last = state.global_step >= state.max_steps  # the trajectory ends where the final eval is taken
        if state.is_world_process_zero and ((self.step_offset + state.global_step) % self.every_steps == 0 or last):
            self._append(state.global_step, model)

    def _append(self, step: int, model: PreTrainedModel) -> None:
        rounds = {} if self.round_number is None else {"round": self.round_number}
        jsonl.append(self.path, {"step": self.step_offset + step, **rounds, **self.point(model)})


def read_curve(path: Path) -> list[dict[str, Any]]:
    """curve.jsonl's rows; a line cut short by a killed process is skipped."""
    return [row for row in jsonl.read(path) if isinstance(row.get("step"), int)]
