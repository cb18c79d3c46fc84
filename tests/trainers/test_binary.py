"""BinaryTrainer (KTO): the collator's mismatched pairs, and one training step against an independent computation."""

import datasets
import pytest
import torch
from trl import DPOConfig

from alignctl import objectives
from alignctl.data.tasks import tiny_lm
from alignctl.models import files
from alignctl.models.schema import TinyModelConfig
from alignctl.objectives.base import BinaryLogps
from alignctl.trainers.binary import BinaryCollator, BinaryTrainer

TEXTS = [
    "The movie was great and the cast was wonderful.",
    "The plot was dull but the music was lovely.",
    "I hated the ending. The acting was awful.",
    "The film felt long, the story was boring.",
] * 4
PROMPTS = ["The movie was", "The plot felt", "I loved the", "The film was"]
COMPLETIONS = [" great and wonderful.", " dull.", " music. It was", " boring and awful."]
LABELS = [True, False, True, False]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-model")
    tokenizer = tiny_lm.train_bpe_tokenizer(TEXTS, vocab_size=300, model_max_length=64)
    cfg = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64)
    files.save_hf_dir(tiny_lm.build_llama(cfg, tokenizer), tokenizer, path)
    return path


def test_collator_pairs_each_prompt_with_the_previous_rows_completion():
    collate = BinaryCollator(pad_token_id=0, max_length=5)
    batch = collate([
        {"prompt_ids": [1, 2], "completion_ids": [3], "label": True},
        {"prompt_ids": [4], "completion_ids": [5, 6], "label": False},
        {"prompt_ids": [7, 8, 9], "completion_ids": [10, 11, 12], "label": True},
    ])  # fmt: skip
    assert batch["input_ids"].tolist() == [[1, 2, 3, 0, 0], [4, 5, 6, 0, 0], [7, 8, 9, 10, 11]]
    assert batch["completion_mask"].tolist() == [[0, 0, 1, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 1]]
    # (x_1, y_3), (x_2, y_1), (x_3, y_2): TRL's rotation, within the batch the collator is given
    assert batch["KL_input_ids"].tolist() == [[1, 2, 10, 11, 12], [4, 3, 0, 0, 0], [7, 8, 9, 5, 6]]
    assert batch["KL_completion_mask"].tolist() == [[0, 0, 1, 1, 1], [0, 1, 0, 0, 0], [0, 0, 0, 1, 1]]
    assert batch["KL_attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["label"].tolist() == [True, False, True]


def _independent_logps(model, prompt_ids: list[int], completion_ids: list[int]) -> torch.Tensor:
    """Sum of log pi(y_t | prompt, y_<t) over the completion's tokens, from a plain forward and full logits."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
    return logp.gather(-1, ids[0, 1:, None]).squeeze(-1)[len(prompt_ids) - 1 :].sum()


def _perturbed(model_dir):
    """The reference: the model moved off the policy, so that log-ratios are mostly > 0 and z0 > 0 is in play."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _rows(order, tokenizer) -> list[int]:
    index = {tuple(tokenizer(p)["input_ids"]): i for i, p in enumerate(PROMPTS)}
    rows = [index[tuple(r["prompt_ids"])] for r in order]
    assert sorted(rows) == list(range(len(PROMPTS)))
    return rows


def _args(tmp_path, batch_size=4, **kw):  # the whole data set in one batch
    return DPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=batch_size, max_steps=1, learning_rate=1e-3,
        logging_steps=1, max_length=64, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True,
        dataloader_num_workers=0, activation_checkpointing=False, **kw,
    )  # fmt: skip


def _data():
    return datasets.Dataset.from_dict({"prompt": PROMPTS, "completion": COMPLETIONS, "label": LABELS})


def test_training_step_loss_matches_kto_on_independent_logps(model_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry, hyper = objectives.get("kto"), {"beta": 0.5, "desirable_weight": 1.3, "undesirable_weight": 0.7}
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    policy = AutoModelForCausalLM.from_pretrained(model_dir)
    reference = _perturbed(model_dir)
    trainer = BinaryTrainer(
        model=policy, ref_model=reference, args=_args(tmp_path), train_dataset=_data(), processing_class=tokenizer,
        objective=entry, hyperparameters=hyper, divergence=None,
    )  # fmt: skip
    order = []  # the rows of the one batch, in the sampler's order (the mismatched pairs follow it)
    collate = trainer.data_collator
    monkeypatch.setattr(trainer, "data_collator", lambda rows: order.extend(rows) or collate(rows))
    policy.eval()  # the tiny Llama has no dropout: eval and train forwards agree
    snapshot = {k: v.clone() for k, v in policy.state_dict().items()}

    trainer.train()
    # fresh copies of the step's policy and of the reference: nothing the trainer did to its models counts
    policy = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    policy.load_state_dict(snapshot)
    # the rows as the trainer tokenized them (prompt, then prompt + completion + EOS split at their common prefix)
    for r, (prompt, completion) in zip(order, ((PROMPTS[i], COMPLETIONS[i]) for i in _rows(order, tokenizer))):
        ids = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]
        assert r["prompt_ids"] + r["completion_ids"] == ids and r["prompt_ids"] == tokenizer(prompt)["input_ids"]
    rows = _rows(order, tokenizer)
    mismatched = [order[-1], *order[:-1]]  # prompt of row i, completion of row i-1
    reference = _perturbed(model_dir)
    pol, ref = ([_independent_logps(m, r["prompt_ids"], r["completion_ids"]) for r in order]
                for m in (policy, reference))  # fmt: skip
    pol_kl, ref_kl = ([_independent_logps(m, r["prompt_ids"], k["completion_ids"]) for r, k in zip(order, mismatched)]
                      for m in (policy, reference))  # fmt: skip
    labels = torch.tensor([LABELS[i] for i in rows])
    batch = BinaryLogps(torch.stack(pol), torch.stack(ref), labels, policy_kl_logps=torch.stack(pol_kl),
                        ref_kl_logps=torch.stack(ref_kl))  # fmt: skip
    expected = entry.loss(batch, divergence=None, **hyper)
    assert expected.kl.item() > 0.01  # the reference point is in play
    at_reference = torch.where(labels, 1.3 / 2, 0.7 / 2)  # every row's loss where h = z0
    assert (expected.losses - at_reference).abs().max() > 0.05  # checks that can fail
    no_z0 = entry.loss(BinaryLogps(batch.policy_logps, batch.ref_logps, labels, kl=torch.tensor(0.0)), divergence=None,
                       **hyper)  # fmt: skip
    assert (no_z0.losses - expected.losses).abs().min() > 0.01

    logged = trainer.state.log_history[0]
    assert logged["loss"] == pytest.approx(expected.losses.mean().item(), rel=1e-4, abs=1e-5)
    assert logged["kl"] == pytest.approx(expected.kl.item(), rel=1e-4, abs=1e-5)
    assert logged["rewards/chosen"] == pytest.approx(expected.rewards[labels].mean().item(), rel=1e-4, abs=1e-5)
    assert logged["rewards/rejected"] == pytest.approx(expected.rewards[~labels].mean().item(), rel=1e-4, abs=1e-5)
    assert logged["rewards/margins"] == pytest.approx(logged["rewards/chosen"] - logged["rewards/rejected"])
    assert logged["logps/chosen"] == pytest.approx(batch.policy_logps[labels].mean().item(), rel=1e-4, abs=1e-5)
    assert {"logps/rejected", "entropy"} <= logged.keys()


def test_refuses_what_it_cannot_do(model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    common = {"model": AutoModelForCausalLM.from_pretrained(model_dir), "train_dataset": _data(),
              "processing_class": tokenizer, "hyperparameters": {}, "divergence": None}  # fmt: skip
    with pytest.raises(ValueError, match="per_device_train_batch_size must be 2 or more"):
        BinaryTrainer(args=_args(tmp_path, batch_size=1), objective=objectives.get("kto"), **common)
    with pytest.raises(ValueError, match="precompute_ref_log_probs=False"):
        BinaryTrainer(args=_args(tmp_path, precompute_ref_log_probs=True), objective=objectives.get("kto"), **common)
    with pytest.raises(ValueError, match="binary-feedback objectives, not dpo"):
        BinaryTrainer(args=_args(tmp_path), objective=objectives.get("dpo"), **common)
