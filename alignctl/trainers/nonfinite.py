"""A diverging run stops at its first non-finite gradient or weight, instead of training on NaN to a "finished" run.

Checked where transformers' Trainer hands callbacks the model: before each optimizer step (the gradients, after
clipping: a NaN or inf anywhere makes the clipped total norm non-finite), and before the weights are written (a
checkpoint's step, the last step: a finite but huge step can still overflow them). train.on_nonfinite says what a non-finite gradient does:
- stop: raise Diverged before the optimizer step, so the weights and the checkpoints already written stay good;
- skip_step: drop the step's update (every gradient set to None: torch's optimizers skip such parameters; the
  learning-rate schedule still advances) and count it; a run whose weights go non-finite stops either way.
Ranks of a multi-process run decide together (FSDP's shards could see different gradients): one diverging rank
stops or skips the step on all of them.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback

from alignctl import ranks

class Diverged(Exception):
    """Training met a non-finite value: `what` (gradients | weights) at optimizer step `step` (1-based)."""

    def __init__(self, step: int, what: str, detail: str = "") -> None:
        super().__init__(f"non-finite {what} at step {step}{detail}")
        self.step, self.what, self.detail = step, what, detail


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    if not tensors:
        return True
    # one reduction per tensor, then one sync; a norm overflowing float32 (|g| ~ 1e19+) counts too: no step is safe
    norms = torch.stack([t.detach().float().norm() for t in tensors])
    return bool(torch.isfinite(norms).all())


def _agreed(bad: bool) -> bool:
    return ranks.any_rank(bad) if ranks.in_ranks() else bad


def _first_nonfinite(model: torch.nn.Module, grads: bool) -> str:
    """The name of the first parameter whose gradient (or value) is not finite, for the message."""
    for name, p in model.named_parameters():
        t = p.grad if grads else p
        if t is not None and not bool(torch.isfinite(t.detach()).all()):
            return name
    return "?"


class NonFiniteGuard(TrainerCallback):
    """skip_steps: train.on_nonfinite=skip_step (else stop); `skipped` counts the steps dropped (logged as
    skipped_steps)."""

    def __init__(self, skip_steps: bool = False) -> None:
        self.skip_steps = skip_steps
        self.skipped = 0

    def on_pre_optimizer_step(self, args, state, control, model: Any = None, **kwargs):
        params = [p for p in model.parameters() if p.grad is not None]
        if not _agreed(not _all_finite([p.grad for p in params])):
            return
        step = state.global_step + 1  # the step this update would complete
        if not self.skip_steps:
            raise Diverged(step, "gradients", f" (first in {_first_nonfinite(model, grads=True)})")
        for p in params:
            p.grad = None
        self.skipped += 1

    def on_step_end(self, args, state, control, model: Any = None, **kwargs):
        # Weights only before they are written (a checkpoint, the last step): non-finite weights give non-finite
        # gradients at the next step anyway, and a full pass over them every step would cost a big model time.
        if not (control.should_save or state.global_step >= state.max_steps):
            return
        if _agreed(not _all_finite([p for p in model.parameters() if p.requires_grad])):
            raise Diverged(state.global_step, "weights", f" (first in {_first_nonfinite(model, grads=False)})")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and self.skip_steps and "loss" in logs:
            logs["skipped_steps"] = self.skipped  # so far in this process
