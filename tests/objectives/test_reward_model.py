"""reward_model: -log sigmoid(r_w - r_l - m) + c (r_w + r_l)^2 against a numpy re-derivation (value, gradient), and
against TRL's own RewardTrainer.compute_loss on one batch of a tiny random sequence classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignctl.objectives import reward_model
from alignctl.objectives.reward_model import PairRewards

from ._helpers import LOW_PRECISION, check_entry, div, neg_log_sigmoid, np_, sigmoid


def _rewards(seed=0, batch=7, dtype=torch.float64, margin=False):
    g = torch.Generator().manual_seed(seed)
    chosen = (torch.randn(batch, generator=g, dtype=torch.float64) * 2).to(dtype).requires_grad_()
    rejected = (torch.randn(batch, generator=g, dtype=torch.float64) * 2).to(dtype).requires_grad_()
    m = torch.rand(batch, generator=g, dtype=torch.float64) * 3 if margin else None
    return PairRewards(chosen, rejected, m)


def _reference(r_w, r_l, m, c):
    """(loss, d loss / d r_w, d loss / d r_l) per pair, by hand: d(-log sigmoid(d))/dd = -sigmoid(-d)."""
    d = r_w - r_l - m
    centre = 2 * c * (r_w + r_l)
    return neg_log_sigmoid(d) + c * (r_w + r_l) ** 2, -sigmoid(-d) + centre, sigmoid(-d) + centre


@pytest.mark.parametrize("margin", [False, True], ids=["no-margin", "margin"])
@pytest.mark.parametrize("c", [0.0, 0.01, 0.5])
def test_value_and_gradient_against_numpy(margin, c):
    rewards = _rewards(seed=11, margin=margin)
    out = reward_model.loss(rewards, divergence=None, center_rewards_coefficient=c)
    r_w, r_l = np_(rewards.chosen), np_(rewards.rejected)
    m = np_(rewards.margin) if margin else np.zeros_like(r_w)
    loss, g_w, g_l = _reference(r_w, r_l, m, c)
    np.testing.assert_allclose(np_(out.losses), loss, rtol=1e-12)
    got_w, got_l = torch.autograd.grad(out.losses.sum(), [rewards.chosen, rewards.rejected])
    np.testing.assert_allclose(np_(got_w), g_w, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np_(got_l), g_l, rtol=1e-10, atol=1e-14)
    # the rewards are the model's scores, detached: sigmoid(r_w - r_l) is its preference probability
    np.testing.assert_array_equal(np_(out.chosen_rewards), r_w)
    np.testing.assert_array_equal(np_(out.rejected_rewards), r_l)
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad


def test_sanity_values():
    """Equal rewards: log 2 (no margin); a margin m shifts it to log(1 + e^m); centering adds c (r_w + r_l)^2."""
    r = torch.tensor([1.5, -2.0], dtype=torch.float64)
    out = reward_model.loss(PairRewards(r, r.clone()), divergence=None)
    torch.testing.assert_close(out.losses, torch.full((2,), np.log(2.0), dtype=torch.float64))
    m = torch.tensor([1.0, 3.0])
    out = reward_model.loss(PairRewards(r, r.clone(), m), divergence=None, center_rewards_coefficient=0.1)
    expected = torch.log1p(torch.exp(m.double())) + 0.1 * (2 * r) ** 2
    torch.testing.assert_close(out.losses, expected)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_low_precision_is_computed_in_float32_and_finite_at_extremes(dtype):
    extremes = torch.tensor([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    rewards = PairRewards(extremes.to(dtype).requires_grad_(), extremes.flip(0).to(dtype).requires_grad_(),
                          torch.full((5,), 2.0))  # fmt: skip
    out = reward_model.loss(rewards, divergence=None, center_rewards_coefficient=0.01)
    assert out.losses.dtype == torch.float32
    gradients = torch.autograd.grad(out.losses.sum(), [rewards.chosen, rewards.rejected])
    assert torch.isfinite(out.losses).all() and all(torch.isfinite(g).all() for g in gradients)
    r_w, r_l = np_(rewards.chosen), np_(rewards.rejected)  # the rounded inputs
    with np.errstate(over="ignore"):  # sigmoid(-d) of the gradients overflows to its limit, 0 or 1
        np.testing.assert_allclose(np_(out.losses), _reference(r_w, r_l, 2.0, 0.01)[0], rtol=2e-6)


def test_no_divergence_and_registry_entry():
    with pytest.raises(ValueError, match="objective=reward_model uses no divergence"):
        reward_model.loss(_rewards(), divergence=div("reverse_kl"))
    check_entry("reward_model", defaults={"center_rewards_coefficient": 0.0}, data="pairs", needs_reference=False,
                divergences=set(), default_divergence="none")  # fmt: skip
    assert reward_model.OBJECTIVE.trains_reward_model


# --- TRL's own RewardTrainer on one batch ------------------------------------------------------------------------
TEXTS = ["the film was great and funny", "the plot was slow and boring", "a lovely score", "an awful ending"] * 4
PAIRS = {
    "prompt": ["The film was", "The plot", "I watched it and", "The music"],
    "chosen": [" great and funny.", " was clever", " loved it", " is lovely and warm"],
    "rejected": [" slow", " was long, slow and boring", " it was not good at all", " awful"],
    "margin": [0.5, 0.0, 2.0, 1.0],
}


@pytest.fixture(scope="module")
def tiny_classifier():
    """A random tiny LlamaForSequenceClassification (one output) and its BPE tokenizer (distinct PAD, EOS, BOS)."""
    from transformers import LlamaForSequenceClassification, set_seed

    from alignctl.data.tasks import tiny_lm
    from alignctl.models.schema import TinyModelConfig

    tokenizer = tiny_lm.train_bpe_tokenizer(TEXTS, vocab_size=300, model_max_length=64)
    cfg = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64)
    config = tiny_lm.llama_config(cfg, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                                  tokenizer.pad_token_id)  # fmt: skip
    config.num_labels = 1
    set_seed(3)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():  # a score head large enough that the rewards differ visibly
        model.score.weight.mul_(50)
    return model, tokenizer


def _batch_and_trainers(model, tokenizer, tmp_path, margin: bool, c: float):
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from alignctl.trainers.reward_model import RewardModelTrainer, tokenized_pairs

    rows = {k: v for k, v in PAIRS.items() if margin or k != "margin"}
    data = tokenized_pairs(Dataset.from_dict(rows), tokenizer, max_length=64)

    def args():
        return RewardConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=False,
                            per_device_train_batch_size=4, center_rewards_coefficient=c or None)  # fmt: skip

    theirs = RewardTrainer(model=model, args=args(), train_dataset=data, processing_class=tokenizer)
    ours = RewardModelTrainer(model=model, args=args(), train_dataset=data, processing_class=tokenizer,
                              objective=reward_model.OBJECTIVE, hyperparameters={"center_rewards_coefficient": c})
    batch = theirs.data_collator([data[i] for i in range(len(data))])
    assert ("margin" in batch) == margin
    return batch, theirs, ours


@pytest.mark.parametrize("margin,c", [(False, 0.0), (True, 0.0), (True, 0.05)], ids=["plain", "margin", "centred"])
def test_matches_trl_reward_trainer_compute_loss(tiny_classifier, tmp_path, margin, c):
    """TRL's compute_loss (its loss written inline) and the pure loss on the same forward's scores give the same value
    and gradient; alignctl's trainer returns that loss too."""
    model, tokenizer = tiny_classifier
    batch, theirs, ours = _batch_and_trainers(model, tokenizer, tmp_path, margin, c)
    params = [p for p in model.parameters() if p.requires_grad]
    trl_loss = theirs.compute_loss(model, dict(batch))
    trl_grads = torch.autograd.grad(trl_loss, params)

    scores = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    chosen, rejected = scores.chunk(2)
    assert (chosen - rejected).abs().max() > 0.1  # the pairs are told apart: the comparison is not at log 2
    out = reward_model.loss(PairRewards(chosen, rejected, batch.get("margin")), divergence=None,
                            center_rewards_coefficient=c)  # fmt: skip
    our_loss = out.losses.mean()
    our_grads = torch.autograd.grad(our_loss, params)
    torch.testing.assert_close(our_loss, trl_loss, rtol=1e-6, atol=0)
    for mine, trl in zip(our_grads, trl_grads):
        torch.testing.assert_close(mine, trl, rtol=1e-5, atol=1e-7)

    trainer_loss = ours.compute_loss(model, dict(batch))
    torch.testing.assert_close(trainer_loss, trl_loss, rtol=1e-6, atol=0)
    # the margin and the centering term matter here: a wrong reading of either would show
    if margin or c:
        plain = reward_model.loss(PairRewards(chosen, rejected), divergence=None).losses.mean()
        assert abs(plain.item() - trl_loss.item()) > 1e-3
