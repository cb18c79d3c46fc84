"""NonFiniteGuard (train.on_nonfinite) on a small module, with Trainer's state and control as Trainer passes them;
the end-to-end runs are in tests/e2e/test_failures.py."""

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import TrainerControl

from alignctl import jsonl
from alignctl.run.progress import plain_line
from alignctl.trainers.nonfinite import Diverged, NonFiniteGuard


def model_with_grads(bad: float | None = None) -> torch.nn.Module:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model(torch.ones(2, 3)).sum().backward()
    if bad is not None:
        model[1].weight.grad[0, 1] = bad
    return model


def state(step: int = 4, max_steps: int = 10) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, max_steps=max_steps)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_stop_raises_before_the_update_naming_the_step_and_parameter(bad):
    model = model_with_grads(bad)
    with pytest.raises(Diverged, match=r"^non-finite gradients at step 5 \(first in 1\.weight\)$") as e:
        NonFiniteGuard().on_pre_optimizer_step(None, state(4), TrainerControl(), model=model)
    assert (e.value.step, e.value.what) == (5, "gradients")


def test_skip_step_drops_every_gradient_and_counts_it():
    model = model_with_grads(math.nan)
    guard = NonFiniteGuard(skip_steps=True)
    guard.on_pre_optimizer_step(None, state(), TrainerControl(), model=model)
    assert all(p.grad is None for p in model.parameters()) and guard.skipped == 1
    before = [p.detach().clone() for p in model.parameters()]
    torch.optim.AdamW(model.parameters(), lr=1.0).step()  # the optimizer skips parameters without a gradient
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    logs = {"loss": 0.5}
    guard.on_log(None, state(), TrainerControl(), logs=logs)
    assert logs["skipped_steps"] == 1


def test_finite_gradients_pass_untouched():
    model = model_with_grads()
    grads = [p.grad.clone() for p in model.parameters()]
    for guard in (NonFiniteGuard(), NonFiniteGuard(skip_steps=True)):
        guard.on_pre_optimizer_step(None, state(), TrainerControl(), model=model)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))


def test_weights_are_checked_before_they_are_written():
    model = model_with_grads()
    with torch.no_grad():
        model[0].bias[2] = math.inf
    guard = NonFiniteGuard(skip_steps=True)  # non-finite weights stop either way
    guard.on_step_end(None, state(4), TrainerControl(), model=model)  # no save at this step: not checked
    with pytest.raises(Diverged, match=r"^non-finite weights at step 4 \(first in 0\.bias\)$"):
        guard.on_step_end(None, state(4), TrainerControl(should_save=True), model=model)
    with pytest.raises(Diverged, match="at step 10"):
        guard.on_step_end(None, state(10, 10), TrainerControl(), model=model)  # the last step: the final model


def test_jsonl_rows_are_strict_json_with_nonfinite_values_flagged(tmp_path):
    path = tmp_path / "m.jsonl"
    jsonl.append(path, {"step": 1, "loss": math.nan, "grad_norm": math.inf, "hist": [1.0, -math.inf], "ok": 0.5})
    jsonl.append(path, {"step": 2, "loss": 0.25})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert jsonl.read(path) == [
        {"step": 1, "loss": None, "grad_norm": None, "hist": [1.0, None], "ok": 0.5,
         "nonfinite": ["loss", "grad_norm", "hist"]},
        {"step": 2, "loss": 0.25},
    ]  # fmt: skip


def test_plain_progress_lines():
    assert plain_line(3, 200, {"entropy": 1.5, "loss": 0.69314, "grad_norm": math.nan, "epoch": 0.5}) == (
        "step 3/200  loss=0.6931  grad_norm=nan  entropy=1.5  epoch=0.5"
    )
    assert plain_line(200, 200, {"train_runtime": 12.5, "train_loss": 0.5}).startswith("done  train_runtime=12.5")
