"""OnlineTrainer: pi_0's stored samples, one GRPO step per divergence, and the divergence term against a plain
full-logits computation of the spec's generator."""

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig

from alignctl.divergences import get
from alignctl.objectives import grpo
from alignctl.trainers.online import OnlineTrainer, build_reference_store, trl_reward

from ._tiny import PROMPTS, length_reward, plain_token_logps



def make_trainer(model_dir, tmp_path, divergence, store=None, lr=1e-2, **hyperparameters):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = GRPOConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, num_generations=2,
        max_completion_length=12, learning_rate=lr, warmup_steps=0, logging_steps=1, report_to=[], use_cpu=True,
        save_strategy="no", seed=0, bf16=False, disable_tqdm=True,
    )  # fmt: skip
    return OnlineTrainer(
        model=model, reward_funcs=trl_reward(length_reward, "length"), args=args,
        train_dataset=datasets.Dataset.from_dict({"prompt": PROMPTS}), processing_class=tokenizer,
        objective=grpo.OBJECTIVE, hyperparameters={"divergence_coef": 0.5, "kl_estimator": "exact", **hyperparameters}, divergence=divergence,
        reference_store=store, divergence_batch_size=3,
    )  # fmt: skip


@pytest.fixture(scope="module")
def store(model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return build_reference_store(
        model, tokenizer, PROMPTS, length_reward, samples_per_prompt=2, max_new_tokens=10, seed=0
    )


def test_reward_adapter_takes_trls_keywords():
    f = trl_reward(length_reward, "length")
    assert f.__name__ == "length"
    assert f(prompts=["a", "b"], completions=["a", "b"], completion_ids=[[1], [2]], trainer_state=None) == [1.0, 2.0]


def test_store_holds_pi0_token_logps(model_dir, store):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    b = store.batch
    assert len(store) == store.num_sampled == 8
    expected = plain_token_logps(model, b.input_ids, b.attention_mask, b.completion_mask)
    mask = b.completion_mask[:, 1:].bool()
    torch.testing.assert_close(store.ref_logps[mask].double(), expected[mask].detach(), rtol=1e-4, atol=1e-4)
    assert (store.ref_logps[~mask] == 0).all()


def test_store_keeps_rewarded_samples_only(model_dir, store):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    kept = build_reference_store(model, tokenizer, PROMPTS, length_reward, samples_per_prompt=2, max_new_tokens=10,
                                 seed=0, keep_min_reward=2.0)  # fmt: skip
    b = store.batch  # the same seeded samples, all kept
    texts = [tokenizer.decode(ids[m.bool()], skip_special_tokens=True) for ids, m in zip(b.input_ids, b.completion_mask)]
    prompts = [p for p in PROMPTS for _ in range(2)]
    good = torch.tensor(length_reward(prompts, texts)) >= 2.0
    assert 0 < good.sum() < len(good)  # the seed gives a mix, so the filter is exercised
    assert kept.num_sampled == 8 and len(kept) == int(good.sum())
    torch.testing.assert_close(kept.ref_logps, store.ref_logps[good][:, -kept.ref_logps.shape[1] :])


@pytest.mark.parametrize("name", ["js", "forward_kl"])
def test_generator_step_without_reference_model(model_dir, store, tmp_path, name):
    trainer = make_trainer(model_dir, tmp_path, get(name), store)
    assert trainer.ref_model is None and trainer.beta == 0.0
    index = torch.arange(len(store))
    _, before = trainer.divergence_term(trainer.model, index)
    assert before.item() == pytest.approx(0.0, abs=1e-5)  # pi_theta = pi_0 at the start
    trainer.train()
    assert "divergence/penalty" in trainer.state.log_history[0]
    # after a step the term is the spec's token-mean generator over the stored samples, computed from full logits
    term, penalty = trainer.divergence_term(trainer.model, index)
    b = store.batch
    mask = b.completion_mask[:, 1:].bool()
    policy = plain_token_logps(trainer.model, b.input_ids, b.attention_mask, b.completion_mask)[mask].detach().numpy()
    u = np.exp(policy - store.ref_logps[mask].double().numpy())
    f = u - 1 - np.log(u) if name == "forward_kl" else u * np.log(u) - (u + 1) * np.log((u + 1) / 2)
    assert penalty.item() > 0 and penalty.item() == pytest.approx(f.mean(), rel=1e-3, abs=1e-7)
    assert term.item() == pytest.approx(0.5 * penalty.item(), rel=1e-6)


def test_reverse_kl_is_trls_beta_with_a_reference_model(model_dir, tmp_path):
    trainer = make_trainer(model_dir, tmp_path, get("reverse_kl"))
    assert trainer.beta == 0.5 and trainer.ref_model is not None and trainer.reference_store is None
    trainer.train()
    assert "kl" in trainer.state.log_history[0]


def test_none_is_plain_grpo(model_dir, tmp_path):
    trainer = make_trainer(model_dir, tmp_path, None)
    assert trainer.beta == 0.0 and trainer.ref_model is None and trainer.reference_store is None
    trainer.train()
    assert "divergence/penalty" not in trainer.state.log_history[0]


def test_generator_divergence_without_samples_is_an_error(model_dir, tmp_path):
    with pytest.raises(ValueError, match="stored pi_0 samples"):
        make_trainer(model_dir, tmp_path, get("js"), None)


def test_stored_sample_order_survives_a_checkpoint(model_dir, store, tmp_path):
    trainer = make_trainer(model_dir, tmp_path, get("js"), store)
    trainer.args.save_strategy, trainer.args.save_steps = "steps", 1
    trainer.train()
    resumed = make_trainer(model_dir, tmp_path, get("js"), store)
    resumed.create_optimizer_and_scheduler(num_training_steps=1)
    resumed._load_optimizer_and_scheduler(str(tmp_path / "checkpoint-1"))
    # the next minibatches drawn after resuming are those the uninterrupted run draws
    assert [resumed._next_reference_rows().tolist() for _ in range(4)] == [
        trainer._next_reference_rows().tolist() for _ in range(4)
    ]


def test_reverse_kl_low_var_kl_replaces_trls_k3_with_verls_estimator(model_dir, tmp_path):
    # DPH-RL's reverse-KL baseline: TRL still loads pi_0 and scores the samples, but the term is verl's clamped k3
    trainer = make_trainer(model_dir, tmp_path, get("reverse_kl"), kl_estimator="low_var_kl")
    assert trainer.replaces_trl_kl and trainer.ref_model is not None
    rows = [{"prompt": p} for p in PROMPTS[:2] for _ in range(2)]
    inputs = trainer._generate_and_score_completions(rows)
    # push some log-ratios far outside the clamps, where verl's estimator and TRL's k3 differ
    ref = inputs["ref_per_token_logps"].clone()
    ref[:, ::2] += 30.0
    inputs["ref_per_token_logps"] = ref
    loss = trainer.compute_loss(trainer.model, inputs)
    trainer.hyperparameters = {"divergence_coef": 0.0, "kl_estimator": "low_var_kl"}
    policy_only = trainer.compute_loss(trainer.model, inputs)
    # the term, from full logits (float64) and verl's formula in numpy
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    comp = torch.cat([torch.zeros_like(inputs["prompt_mask"]), inputs["completion_mask"]], 1)
    width = inputs["completion_ids"].shape[1]
    policy = plain_token_logps(trainer.model, ids, attn, comp)[:, -width:].detach().numpy()
    mask = inputs["completion_mask"].bool().numpy()
    kl = np.clip(ref.double().numpy() - policy, -20.0, 20.0)
    want = np.clip(np.exp(kl) - kl - 1.0, -10.0, 10.0)[mask].mean()
    assert want > 1.0  # the clamps bind: TRL's k3 would be e^30-sized here
    assert (loss - policy_only).item() == pytest.approx(0.5 * want, rel=1e-4)
    assert trainer._metrics["eval"]["kl"][0] == pytest.approx(want, rel=1e-4)
    loss.backward()  # the term is differentiable through the policy's log-probs TRL computed
    assert trainer.beta == 0.5 and any(p.grad is not None for p in trainer.model.parameters())

