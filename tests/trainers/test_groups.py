"""GroupObjectiveTrainer (disco) and FdpgTrainer: what reaches the objective's loss — each completion's reward, its
prompt's group id, per-token log-probs, pi_0's log-probs and log Z — checked against plain recomputations."""

import dataclasses
import math
import os

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerState
from trl import GRPOConfig

from alignctl.divergences import get
from alignctl.errors import UsageError
from alignctl.objectives import disco, fdpg
from alignctl.objectives.base import GroupLogps
from alignctl.trainers.groups import FdpgTrainer, GroupObjectiveTrainer, prompt_id
from alignctl.trainers.online import trl_reward

from ._tiny import PROMPTS, length_reward, plain_token_logps


def binary_reward(prompts, completions):  # 0/1 and mixed within groups, so DisCO keeps some groups
    return [float(r >= 1.0) for r in length_reward(prompts, completions)]


def make(cls, model_dir, tmp_path, objective, hyperparameters, divergence, **extra):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    args = GRPOConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=10, learning_rate=1e-2, warmup_steps=0, logging_steps=1, report_to=[], use_cpu=True,
        seed=0, bf16=False, disable_tqdm=True, **{"save_strategy": "no", **extra},
    )  # fmt: skip
    trainer = cls(
        model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=trl_reward(binary_reward, "binary"),
        args=args, train_dataset=datasets.Dataset.from_dict({"prompt": PROMPTS}), processing_class=tokenizer,
        objective=objective, hyperparameters=hyperparameters, divergence=divergence,
    )  # fmt: skip
    seen = []
    inner = trainer.compute_loss

    def spy(model, inputs, *args, **kwargs):  # record what the loss saw, before the optimizer moves the model
        loss = inner(model, inputs, *args, **kwargs)
        seen.append((inputs, loss.detach()))
        return loss

    trainer.compute_loss = spy
    return trainer, tokenizer, seen


def recompute(model_dir, tokenizer, inputs):
    """Rewards, group ids and per-token log-probs [B, C] of a generated batch, from the decoded texts and a fresh
    copy of the starting model (full logits)."""
    prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
    prompts = tokenizer.batch_decode(prompt_ids, skip_special_tokens=True)
    completions = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    ids = torch.cat([prompt_ids, completion_ids], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    completion_mask = torch.cat([torch.zeros_like(prompt_ids), inputs["completion_mask"]], 1)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        logps = plain_token_logps(model, ids, attention, completion_mask)[:, prompt_ids.shape[1] - 1 :]
    rewards = torch.tensor(binary_reward(prompts, completions))
    groups = torch.tensor([prompt_id(p) for p in prompts])
    return rewards, groups, logps.float()


def test_disco_loss_sees_rewards_groups_and_logps(model_dir, tmp_path):
    hyper = {"score": "logL", "dro": True, "tau": None, "delta": 1e-4, "constraint_weight": 1e3,
             "positive_threshold": 0.5}  # fmt: skip
    trainer, tokenizer, seen = make(GroupObjectiveTrainer, model_dir, tmp_path, disco.OBJECTIVE, hyper, None)
    assert trainer.ref_model is None and trainer.beta == 0.0
    trainer.train()
    (inputs, loss), = seen
    rewards, groups, logps = recompute(model_dir, tokenizer, inputs)
    torch.testing.assert_close(inputs["rewards"].float(), rewards)
    assert torch.equal(inputs["group_ids"], groups) and len(set(groups.tolist())) == 2  # 8 completions, 2 prompts
    mask = inputs["completion_mask"]
    expected = disco.loss(GroupLogps(logps, logps, mask, rewards, groups), divergence=None, **hyper).loss
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    log = trainer.state.log_history[0]
    assert {"disco/objective", "disco/kept_groups", "disco/kl_old", "disco/penalty", "entropy"} <= set(log)
    assert log["disco/kl_old"] == pytest.approx(0.0, abs=1e-6)  # one update per batch: pi_theta = pi_old
    # rollouts from vLLM: TRL's importance ratio reaches the objective as its sampling weights
    reached = []
    trainer.objective = dataclasses.replace(disco.OBJECTIVE, loss=lambda stats, **kw: reached.append(stats) or
                                            disco.loss(stats, **kw))  # fmt: skip
    ratio = torch.rand(len(mask), 1) + 0.5
    trainer.compute_loss(trainer.model, {**inputs, "importance_sampling_ratio": ratio})
    trainer.compute_loss(trainer.model, inputs)
    assert reached[0].sampling_weights is ratio and reached[1].sampling_weights is None


def test_disco_constraint_binds_on_reused_batches(model_dir, tmp_path):
    hyper = {"score": "Lratio", "dro": False, "tau": None, "delta": 1e-4, "constraint_weight": 1e3,
             "positive_threshold": 0.5}  # fmt: skip
    trainer, _, seen = make(GroupObjectiveTrainer, model_dir, tmp_path, disco.OBJECTIVE, hyper, None,
                            num_iterations=2)  # fmt: skip
    trainer.args.max_steps = 2
    trainer.train()
    (first, _), (second, _) = seen
    assert first is second and "old_per_token_logps" in second  # TRL reuses the batch with pi_old's log-probs
    assert trainer.state.log_history[1]["disco/kl_old"] != 0.0  # pi_theta moved away from pi_old


def test_fdpg_gets_pi0_logps_and_log_partition(model_dir, tmp_path):
    trainer, tokenizer, seen = make(FdpgTrainer, model_dir, tmp_path, fdpg.OBJECTIVE, {"beta": 0.5}, get("js"))
    assert trainer.ref_model is not None and trainer.beta == 0.5  # TRL scores pi_0; the loss is the objective's
    trainer.train()
    (inputs, loss), = seen
    rewards, groups, logps = recompute(model_dir, tokenizer, inputs)
    mask = inputs["completion_mask"].bool()
    torch.testing.assert_close(inputs["ref_per_token_logps"][mask], logps[mask], rtol=1e-4, atol=1e-4)
    # at the first step a = q = pi_theta, so P/q = e^{r/beta} and log Z(x) = log mean over x's group of e^{r/beta}
    for g in groups.unique():
        members = groups == g
        expected = math.log(torch.exp(rewards[members].double() / 0.5).mean().item())
        assert inputs["log_z"][members].tolist() == pytest.approx([expected] * int(members.sum()), rel=1e-5)
    assert trainer.partition.count == {k: 4 for k in groups.unique().tolist()}
    assert {"fdpg/pseudo_reward", "fdpg/is_weight", "fdpg/log_z", "fdpg/divergence_to_target"} <= set(
        trainer.state.log_history[0]
    )


def test_fdpg_partition_survives_a_checkpoint(model_dir, tmp_path, monkeypatch):
    trainer, _, _ = make(FdpgTrainer, model_dir, tmp_path, fdpg.OBJECTIVE, {"beta": 0.5}, get("reverse_kl"),
                         save_strategy="steps", save_steps=1)  # fmt: skip
    # the partition file is in the folder before trainer_state.json (what makes a checkpoint count as complete)
    present_before_trainer_state = []
    save_to_json = TrainerState.save_to_json

    def spy(state, path):
        present_before_trainer_state.append(os.path.exists(os.path.join(os.path.dirname(path), trainer.STATE_FILE)))
        save_to_json(state, path)

    monkeypatch.setattr(TrainerState, "save_to_json", spy)
    trainer.train()
    assert present_before_trainer_state == [True]
    resumed, _, _ = make(FdpgTrainer, model_dir, tmp_path, fdpg.OBJECTIVE, {"beta": 0.5}, get("reverse_kl"))
    resumed.create_optimizer_and_scheduler(num_training_steps=1)
    resumed._load_optimizer_and_scheduler(str(tmp_path / "checkpoint-1"))
    assert resumed.partition.state_dict() == trainer.partition.state_dict() and trainer.partition.count


def test_resuming_from_a_checkpoint_without_the_partition_is_an_error(model_dir, tmp_path):
    """A checkpoint missing fdpg_partition.json would resume with an empty log Z estimate: refused, named."""
    trainer, _, _ = make(FdpgTrainer, model_dir, tmp_path, fdpg.OBJECTIVE, {"beta": 0.5}, get("reverse_kl"),
                         save_strategy="steps", save_steps=1)  # fmt: skip
    trainer.train()
    (tmp_path / "checkpoint-1" / FdpgTrainer.STATE_FILE).unlink()
    resumed, _, _ = make(FdpgTrainer, model_dir, tmp_path, fdpg.OBJECTIVE, {"beta": 0.5}, get("reverse_kl"))
    resumed.create_optimizer_and_scheduler(num_training_steps=1)
    with pytest.raises(UsageError, match="checkpoint-1 lacks fdpg_partition.json"):
        resumed._load_optimizer_and_scheduler(str(tmp_path / "checkpoint-1"))
