"""eval.every_steps: the reward-KL curve is written at the requested steps, its points are what the eval functions
compute on the model at that step, and training with a curve takes exactly the steps it takes without one."""

import json
import shutil

import pytest

from alignctl.config import compose
from alignctl.eval.curve import curve_point, read_curve
from alignctl.models import loading
from alignctl.run import build, sources
from alignctl.run.train import train_and_evaluate

pytestmark = pytest.mark.slow

TINY = [
    "dataset.corpus_size=300", "dataset.num_train_prompts=8", "dataset.num_test_prompts=8",
    "dataset.max_new_tokens=8", "model.vocab_size=512", "model.hidden_size=32", "model.num_layers=1",
    "model.num_heads=2", "model.intermediate_size=64", "model.max_position_embeddings=64",
    "model.pretrain_steps=20", "model.pretrain_batch_size=16", "model.pretrain_lr=0.01", "train.batch_size=4",
    "train.max_steps=5", "train.num_threads=1", "eval.enabled=false", "tracking=none", "train.save_steps=2",
    "eval.curve_prompts=4", "eval.max_new_tokens=8",
]  # fmt: skip


def losses(run_dir):
    return [(r["step"], r["loss"]) for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve")
    with_curve = compose.compose_one([*TINY, "eval.every_steps=2"])
    train_and_evaluate(with_curve, root / "curve")
    train_and_evaluate(compose.compose_one(TINY), root / "plain")
    return with_curve, root


def test_curve_rows_at_step_0_every_n_steps_and_the_last(runs):
    _, root = runs
    rows = read_curve(root / "curve" / "curve.jsonl")
    assert [r["step"] for r in rows] == [0, 2, 4, 5]
    assert rows[0]["kl_to_reference"] == 0.0  # the policy starts as the reference
    keys = {"step", "reward_mean", "kl_to_reference", "entropy_per_token", "distinct_2", "seq_kl_chosen",
            "seq_kl_rejected"}  # dpo: pairwise, so the held-out pairs' sequential KLs too
    assert all(set(r) == keys for r in rows)
    assert rows[0]["seq_kl_chosen"] == rows[0]["seq_kl_rejected"] == 0.0


def test_sequential_kl_and_distinct_2_against_a_re_derivation(runs):
    """TDPO's sequential KL from the models' own logits (sum over completion positions of
    sum_v pi_ref(v) (log pi_ref(v) - log pi(v))), pair by pair, and distinct-2 by counting bigrams of words."""
    import torch

    from alignctl.models.sampling import sample_rows, split_at_prompt, tokenize_rows

    cfg, root = runs
    tokenizer = loading.load_tokenizer(cfg, str(root / "curve" / "model"))
    policy = loading.load_causal_lm(cfg, str(root / "curve" / "model"), trainable=False)
    reference = loading.load_causal_lm(cfg, sources.reference_source(cfg), trainable=False)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # five steps barely move the policy: a KL of ~1e-5 is float32 noise; make it sizeable
        for weight in policy.parameters():
            weight.add_(torch.randn(weight.shape, generator=generator) * 0.1)
    pairs = build.preference_pairs(cfg, tokenizer, sources.policy_source(cfg))["test"][:3]
    sides = [*zip(pairs["prompt"], pairs["chosen"]), *zip(pairs["prompt"], pairs["rejected"])]
    e = cfg.eval
    prompts = build.eval_prompts(cfg, tokenizer)[:2]
    point = curve_point(policy, reference, tokenizer, prompts, build.reward(cfg), samples_per_prompt=3,
                        max_new_tokens=8, temperature=1.0, seed=e.seed, batch_size=4, kernel="fused",
                        pairs=tokenize_rows(tokenizer, sides))  # fmt: skip

    def seq_kl(prompt, completion) -> float:
        prompt_ids, completion_ids = split_at_prompt(tokenizer, prompt, completion)
        ids = torch.tensor([prompt_ids + completion_ids])
        with torch.no_grad():
            logp = policy(ids).logits.double().log_softmax(-1)[0]
            logq = reference(ids).logits.double().log_softmax(-1)[0]
        at = range(len(prompt_ids) - 1, ids.shape[1] - 1)  # the positions that predict completion tokens
        return sum((logq[t].exp() * (logq[t] - logp[t])).sum().item() for t in at)

    n = len(pairs["prompt"])  # (this tiny task holds few held-out pairs)
    chosen, rejected = [seq_kl(*row) for row in sides[:n]], [seq_kl(*row) for row in sides[n:]]
    assert point["seq_kl_chosen"] == pytest.approx(sum(chosen) / n, rel=1e-4)
    assert point["seq_kl_rejected"] == pytest.approx(sum(rejected) / n, rel=1e-4)
    assert min(chosen + rejected) > 0.01

    texts = sample_rows(policy, tokenizer, prompts, n=3, max_new_tokens=8, temperature=1.0, seed=e.seed,
                        batch_size=4).completions  # fmt: skip
    bigrams = [tuple(w[i : i + 2]) for w in (t.split() for t in texts) for i in range(len(w) - 1)]
    assert point["distinct_2"] == pytest.approx(len(set(bigrams)) / len(bigrams))


def test_the_last_point_is_the_final_model_measured_afresh(runs):
    cfg, root = runs
    tokenizer = loading.load_tokenizer(cfg, str(root / "curve" / "model"))
    policy = loading.load_causal_lm(cfg, str(root / "curve" / "model"), trainable=False)
    reference = loading.load_causal_lm(cfg, sources.reference_source(cfg), trainable=False)
    e = cfg.eval
    again = curve_point(policy, reference, tokenizer, build.eval_prompts(cfg, tokenizer)[: e.curve_prompts],
                        build.reward(cfg), samples_per_prompt=e.curve_samples_per_prompt,
                        max_new_tokens=e.max_new_tokens, temperature=e.temperature, seed=e.seed,
                        batch_size=e.batch_size, kernel="fused")  # fmt: skip
    last = read_curve(root / "curve" / "curve.jsonl")[-1]
    assert last["reward_mean"] == pytest.approx(again["reward_mean"], abs=1e-6)
    assert last["kl_to_reference"] == pytest.approx(again["kl_to_reference"], rel=1e-4, abs=1e-5)


def test_a_curve_does_not_change_training(runs):
    _, root = runs
    assert losses(root / "curve") == losses(root / "plain")


def test_a_resumed_run_keeps_each_point_once(runs, tmp_path):
    cfg, root = runs
    longer = compose.compose_one([*TINY, "eval.every_steps=2", "train.max_steps=7", "train.resume=true"])
    shutil.copytree(root / "curve", tmp_path / "run")
    train_and_evaluate(longer, tmp_path / "run")
    # step 5 ended the first run (its last point, kept); the resumed run goes on from checkpoint-5
    assert [r["step"] for r in read_curve(tmp_path / "run" / "curve.jsonl")] == [0, 2, 4, 5, 6, 7]
