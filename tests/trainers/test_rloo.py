"""RlooTrainer: the generated batch it hands its loss (TRL's own advantages re-derived from it), one RLOO step per
divergence, and the reference model only for reverse_kl."""

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import RLOOConfig

from alignctl.divergences import get
from alignctl.objectives import rloo
from alignctl.trainers.online import build_reference_store, trl_reward
from alignctl.trainers.rloo import RlooTrainer

from ._tiny import PROMPTS, length_reward


def make_trainer(model_dir, tmp_path, divergence, store=None, **hyperparameters):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = RLOOConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, num_generations=2,
        max_completion_length=12, learning_rate=1e-2, warmup_steps=0, logging_steps=1, report_to=[], use_cpu=True,
        save_strategy="no", seed=0, bf16=False, disable_tqdm=True, epsilon_high=0.28,
    )  # fmt: skip
    return RlooTrainer(
        model=model, reward_funcs=trl_reward(length_reward, "length"), args=args,
        train_dataset=datasets.Dataset.from_dict({"prompt": PROMPTS}), processing_class=tokenizer,
        objective=rloo.OBJECTIVE, divergence=divergence, reference_store=store, divergence_batch_size=3,
        hyperparameters={"divergence_coef": 0.5, "normalize_advantages": False, **hyperparameters},
    )  # fmt: skip


def stats(trainer, inputs) -> rloo.RlooLogps:
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    policy, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attn, inputs["completion_ids"].size(1))
    return rloo.RlooLogps(policy, inputs["old_per_token_logps"], inputs["completion_mask"], inputs["rewards"],
                          inputs["group_ids"], ref_logps=inputs.get("ref_per_token_logps"),
                          clip_low=trainer.epsilon_low, clip_high=trainer.epsilon_high)  # fmt: skip


ROWS = [{"prompt": p} for p in PROMPTS[:2] for _ in range(2)]


@pytest.mark.parametrize("normalize", [False, True])
def test_the_batch_carries_what_trls_advantages_came_from(model_dir, tmp_path, normalize):
    # reverse_kl: TRL's beta, its reference model, its KL in the reward
    trainer = make_trainer(model_dir, tmp_path, get("reverse_kl"), normalize_advantages=normalize)
    assert trainer.beta == 0.5 and trainer.ref_model is not None and trainer.normalize_advantages == normalize
    with torch.no_grad():  # move the policy away from pi_0, as training would, so the KL in the reward is not 0
        g = torch.Generator().manual_seed(1)
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    inputs = trainer._generate_and_score_completions(ROWS)
    m = inputs["completion_mask"]
    assert inputs["group_ids"].tolist() == [0, 0, 1, 1]
    torch.testing.assert_close((inputs["old_per_token_logps"] * m).sum(1), inputs["old_logps"])
    kl = rloo.sequence_kl(rloo.RlooLogps(inputs["old_per_token_logps"], inputs["old_per_token_logps"], m,
                                         inputs["rewards"], inputs["group_ids"], ref_logps=inputs["ref_per_token_logps"]))
    assert kl.abs().min() > 1e-3 and kl.std() > 1e-3  # pi_0's scoring, not pi_old's: the KL moves the advantages
    s = stats(trainer, inputs)
    got = rloo.advantages(s, divergence=trainer.divergence, divergence_coef=0.5, normalize_advantages=normalize)
    assert inputs["advantages"].abs().sum() > 0
    torch.testing.assert_close(got.advantages.float(), inputs["advantages"], rtol=1e-5, atol=1e-6)
    # the loss TRL would compute from its own batch is the one the trainer computes
    loss = trainer.compute_loss(trainer.model, inputs)
    assert loss.item() == pytest.approx(rloo.loss(s, divergence=trainer.divergence, divergence_coef=0.5,
                                                  normalize_advantages=normalize).loss.item(), rel=1e-6)  # fmt: skip
    assert loss.item() == pytest.approx(trainer._compute_loss(trainer.model, inputs).item(), rel=1e-5, abs=1e-7)


def test_reverse_kl_step(model_dir, tmp_path):
    trainer = make_trainer(model_dir, tmp_path, get("reverse_kl"))
    trainer.train()
    logged = trainer.state.log_history[0]
    assert {"kl", "rloo/clip_ratio", "rloo/shaped_reward", "entropy"} <= set(logged)
    assert "divergence/penalty" not in logged


def test_none_is_plain_rloo_without_a_reference_model(model_dir, tmp_path):
    trainer = make_trainer(model_dir, tmp_path, None)
    assert trainer.beta == 0.0 and trainer.ref_model is None and trainer.reference_store is None
    inputs = trainer._generate_and_score_completions(ROWS)
    assert "ref_per_token_logps" not in inputs
    got = rloo.advantages(stats(trainer, inputs), divergence=None, divergence_coef=0.5, normalize_advantages=False)
    torch.testing.assert_close(got.advantages.float(), inputs["advantages"], rtol=1e-5, atol=1e-6)
    trainer.train()
    assert "kl" not in trainer.state.log_history[0]


def test_generator_divergence_adds_grpos_term_on_stored_samples(model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    store = build_reference_store(AutoModelForCausalLM.from_pretrained(model_dir), tokenizer, PROMPTS, length_reward,
                                  samples_per_prompt=2, max_new_tokens=10, seed=0)  # fmt: skip
    trainer = make_trainer(model_dir, tmp_path, get("js"), store, divergence_coef=0.3)
    assert trainer.beta == 0.0 and trainer.ref_model is None
    inputs = trainer._generate_and_score_completions(ROWS)
    index = torch.arange(len(store))
    term, penalty = trainer.divergence_term(trainer.model, index)
    assert penalty.item() == pytest.approx(0.0, abs=1e-5)  # pi_theta = pi_0 at the start
    trainer._next_reference_rows = lambda: index  # the loss's minibatch: all stored samples
    with torch.no_grad():
        policy_only = rloo.loss(stats(trainer, inputs), divergence=get("js"), divergence_coef=0.3).loss
        total = trainer.compute_loss(trainer.model, inputs)
    assert total.item() == pytest.approx(policy_only.item() + term.item(), rel=1e-6, abs=1e-9)
    del trainer._next_reference_rows
    trainer.train()
    assert "divergence/penalty" in trainer.state.log_history[0]
    _, after = trainer.divergence_term(trainer.model, index)
    assert after.item() > 0


def test_generator_divergence_without_samples_is_an_error(model_dir, tmp_path):
    with pytest.raises(ValueError, match="stored pi_0 samples"):
        make_trainer(model_dir, tmp_path, get("forward_kl"), None)
