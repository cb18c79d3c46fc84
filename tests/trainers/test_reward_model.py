"""RewardModelTrainer (objective=reward_model): a few steps on a tiny random classifier, saved as a run saves its
model, then loaded by reward=classifier reward.mode=logit as it is: the scores it gives are the trained model's own
on the very token sequences it was trained on (full weights and LoRA, merged)."""

from __future__ import annotations

import types

import pytest
import torch

from alignctl.models import loading
from alignctl.objectives import reward_model
from alignctl.rewards.base import RewardContext
from alignctl.rewards.classifier import ClassifierConfig, build
from alignctl.trainers.reward_model import reward_model_trainer
from tests.objectives.test_reward_model import PAIRS, tiny_classifier  # noqa: F401 (a fixture)

MAX_LENGTH = 7  # shorter than most pairs: the left truncation of training and of the classifier must agree


def _cfg(lora_r: int):
    lora = types.SimpleNamespace(r=lora_r, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    return types.SimpleNamespace(train=types.SimpleNamespace(max_length=MAX_LENGTH),
                                 model=types.SimpleNamespace(lora=lora))  # fmt: skip


def _train(model, tokenizer, tmp_path, lora_r: int):
    from datasets import Dataset

    # bf16=False as alignctl.run.train._shared_args says on a CPU (TRL's configs default to bf16 autocast)
    shared = dict(output_dir=str(tmp_path / "checkpoints"), max_steps=3, per_device_train_batch_size=4,
                  learning_rate=1e-2, report_to=[], use_cpu=True, bf16=False, save_strategy="no",
                  logging_steps=1)  # fmt: skip
    trainer = reward_model_trainer(
        _cfg(lora_r), shared, Dataset.from_dict(PAIRS), tokenizer, model=model, callbacks=[],
        objective=reward_model.OBJECTIVE, hyperparameters={"center_rewards_coefficient": 0.0},
    )  # fmt: skip
    trainer.train()
    return trainer


@pytest.mark.parametrize("lora_r", [0, 4], ids=["full", "lora"])
def test_saved_model_scores_as_trained_through_the_classifier_reward(tiny_classifier, tmp_path, lora_r):  # noqa: F811
    import copy

    model, tokenizer = tiny_classifier
    model, tokenizer = copy.deepcopy(model), copy.deepcopy(tokenizer)
    head_before = model.score.weight.detach().clone()
    trainer = _train(model, tokenizer, tmp_path, lora_r)
    data = trainer.train_dataset
    assert set(data.column_names) == {"chosen_ids", "rejected_ids", "margin"}  # TRL's margin column is kept
    assert max(len(ids) for ids in [*data["chosen_ids"], *data["rejected_ids"]]) == MAX_LENGTH  # cut, none dropped
    batch = trainer.data_collator([data[i] for i in range(len(data))])
    trained = trainer.model.eval()
    with torch.no_grad():
        expected = trained(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]

    out = tmp_path / "model"
    loading.save_policy(trained, tokenizer, out)  # as alignctl.run.train saves a run's model (LoRA: merged)
    reward = build(ClassifierConfig(path=str(out), mode="logit", max_length=MAX_LENGTH), RewardContext(device="cpu"))
    prompts = PAIRS["prompt"] * 2
    got = torch.tensor(reward(prompts, PAIRS["chosen"] + PAIRS["rejected"]))
    torch.testing.assert_close(got, expected.float(), rtol=1e-4, atol=1e-5)
    # the score head trained (with LoRA too: peft's SEQ_CLS adapter trains it in full, and the merge keeps it)
    saved = type(model).from_pretrained(out)
    assert not torch.allclose(saved.score.weight, head_before)
    assert (out / "adapter").is_dir() == bool(lora_r)
