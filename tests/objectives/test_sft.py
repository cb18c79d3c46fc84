"""sft: the token-mean NLL of completion tokens, against an independent computation and TRL's SFTTrainer loss."""

from __future__ import annotations

import pytest
import torch

from alignctl.objectives import sft
from alignctl.objectives.sft import CompletionLogps


def test_value_and_gradient_are_the_token_mean_nll():
    torch.manual_seed(0)
    logps = (-torch.rand(3, 5, dtype=torch.float64) * 4).requires_grad_()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]], dtype=torch.float64)
    out = sft.loss(CompletionLogps(logps, mask), divergence=None)
    expected = -sum(logps[i, t].item() for i in range(3) for t in range(5) if mask[i, t]) / 9
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    out.loss.backward()
    assert torch.equal(logps.grad, -mask / 9)  # d/d logp of -(1/N) sum = -1/N on completion tokens, 0 elsewhere


def test_uses_no_divergence():
    from alignctl.divergences import get

    with pytest.raises(ValueError, match="no divergence"):
        sft.loss(CompletionLogps(torch.zeros(1, 1), torch.ones(1, 1)), divergence=get("reverse_kl"))


def test_equals_trl_sft_trainer_loss(tmp_path):
    """TRL's SFTTrainer on prompt-completion rows computes this objective: the loss of one batch, recomputed from
    full logits with only the completion tokens counted."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from alignctl.data.tasks import tiny_lm
    from alignctl.models.schema import TinyModelConfig

    texts = ["a good film", "a bad film", "the plot was fine"] * 4
    tokenizer = tiny_lm.train_bpe_tokenizer(texts, vocab_size=300, model_max_length=32)
    cfg = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=32)
    model = tiny_lm.build_llama(cfg, tokenizer)
    data = Dataset.from_dict({"prompt": ["a", "the plot"], "completion": [" good film", " was fine"]})
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, max_length=32, report_to=[],
                     completion_only_loss=True, use_cpu=True)  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        logps = torch.log_softmax(logits.double(), -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = (batch["labels"][:, 1:] != -100).double()  # completion tokens (prompt and padding are -100)
    ours = sft.loss(CompletionLogps(logps, mask), divergence=None).loss
    assert mask.sum() > 0 and mask.sum() < batch["attention_mask"][:, 1:].sum()  # prompt tokens are left out
    assert trl_loss.item() == pytest.approx(ours.item(), rel=1e-5)


def test_registry_entry():
    from ._helpers import check_entry

    check_entry("sft", defaults={}, data="sft", needs_reference=False, divergences=set(), default_divergence="none")
