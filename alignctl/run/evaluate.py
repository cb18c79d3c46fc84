"""`alignctl eval`: a model directory -> samples -> metrics -> eval.json (+ samples and a reliability diagram)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from transformers import PreTrainedTokenizerBase

from alignctl.config.schema import RunConfig, hyperparameters
from alignctl.errors import UsageError
from alignctl.eval import metrics as m
from alignctl.models import loading
from alignctl.models.sampling import Batch, pad_left, sample, score
from alignctl.models.scoring import resolve_kernel
from alignctl.run import build, sources
from alignctl.trainers import batches

console = Console(stderr=True)


def evaluate(cfg: RunConfig, model_dir: Path, reference_dir: str) -> tuple[dict[str, Any], list[dict], dict]:
    """Metrics of the policy in model_dir against the reference (spec section 12)."""
    e = cfg.eval
    tokenizer = loading.load_tokenizer(cfg, str(model_dir))
    policy = loading.load_causal_lm(cfg, str(model_dir), trainable=False)
    reference = loading.load_causal_lm(cfg, reference_dir, trainable=False)
    _check_vocabularies(policy, reference, model_dir, reference_dir)
    kernels = {resolve_kernel(policy, cfg.model.kernel), resolve_kernel(reference, cfg.model.kernel)}
    kernel = "naive" if "naive" in kernels else "fused"  # one path for both models' statistics
    reward = build.reward(cfg)
    binary = build.is_binary_reward(cfg)
    prompts = build.eval_prompts(cfg, tokenizer)[: e.num_prompts]
    # Verifiable tasks sample with the task's own completion budget (a worked solution must fit to be scored).
    max_new_tokens = cfg.dataset.max_new_tokens if binary else e.max_new_tokens
    objective = build.objective(cfg)[0]
    # Preference metrics need held-out pairs scored by an objective's implicit reward (not online objectives or SFT).
    pair_metrics = objective.data not in ("groups", "sft")

    with console.status(f"sampling {e.samples_per_prompt} completions for {len(prompts)} held-out prompts"):
        args = dict(n=e.samples_per_prompt, max_new_tokens=max_new_tokens, temperature=e.temperature,
                    seed=e.seed, batch_size=e.batch_size)
        ours = sample(policy, tokenizer, prompts, **args)
        theirs = sample(reference, tokenizer, prompts, **args)
    with console.status("scoring samples and held-out pairs"):
        rewards = reward(ours.prompts, ours.completions)
        ref_rewards = reward(theirs.prompts, theirs.completions)
        scores = score(policy, reference, ours.batch, e.batch_size, kernel=kernel)
        p = _pair_probabilities(cfg, policy, reference, tokenizer, e.batch_size, kernel) if pair_metrics else None

    groups = [ours.completions[i : i + e.samples_per_prompt] for i in range(0, len(ours.completions), e.samples_per_prompt)]
    diagram = m.reliability_diagram(p) if p is not None else None
    results: dict[str, Any] = {
        "reward_mean": m.reward_stats(rewards)["mean"],
        "reward_std": m.reward_stats(rewards)["std"],
        "reference_reward_mean": m.reward_stats(ref_rewards)["mean"],
        "win_rate_vs_reference": m.win_rate(rewards, ref_rewards),
        "kl_to_reference": m.sequence_kl(scores.logps, scores.ref_logps),
        "kl_to_reference_tokenwise": scores.divergence.mean().item(),
        "entropy_per_token": (scores.entropy.sum() / scores.lengths.sum()).item(),
        "distinct_1": m.distinct_n(ours.completions, 1),
        "distinct_2": m.distinct_n(ours.completions, 2),
        "self_bleu": m.self_bleu(groups) if e.samples_per_prompt > 1 else None,
        "preference_accuracy": m.preference_accuracy(p) if p is not None else None,
        "ece": diagram["ece"] if diagram is not None else None,
        "num_prompts": len(prompts),
        "samples_per_prompt": e.samples_per_prompt,
        "max_new_tokens": max_new_tokens,
        "num_pairs": len(p) if p is not None else 0,
        "seed": e.seed,
        "kernel": kernel,
        "model_dir": str(model_dir),
        "reference_dir": str(reference_dir),
    }
    if p is None:
        results["preference_metrics_skipped"] = (
            f"objective={cfg.objective.name} has no implicit reward to classify held-out pairs with"
        )
    if e.best_of_n == e.samples_per_prompt:  # the main samples are the ones it would draw (same seed and settings)
        results[f"best_of_{e.best_of_n}_win_rate_vs_reference"] = m.best_of_n_win_rate(rewards, ref_rewards, e.best_of_n)
    elif e.best_of_n:
        results |= best_of_n_win_rate(policy, reference, tokenizer, prompts, reward, e.best_of_n,
                                      dict(args, n=e.best_of_n))  # fmt: skip
    if binary:
        n = e.samples_per_prompt
        results |= pass_at_ks(rewards, n, "")
        results |= pass_at_ks(ref_rewards, n, "reference_")
        for split in build.extra_eval_splits(cfg):
            split_prompts = build.eval_prompts(cfg, tokenizer, split)[: e.num_prompts]
            with console.status(f"sampling {n} completions for {len(split_prompts)} {split} prompts"):
                for prefix, model in ((f"{split}_", policy), (f"reference_{split}_", reference)):
                    got = sample(model, tokenizer, split_prompts, **args)
                    results |= pass_at_ks(reward(got.prompts, got.completions), n, prefix)
            results[f"num_{split}_prompts"] = len(split_prompts)
    samples = [
        {"prompt": pr, "completion": c, "reward": r, "reference_completion": rc, "reference_reward": rr}
        for pr, c, r, rc, rr in zip(ours.prompts, ours.completions, rewards, theirs.completions, ref_rewards)
    ]
    return results, samples, diagram


def _check_vocabularies(policy, reference, model_dir, reference_dir) -> None:
    """Both models must share one tokenizer: KL and win rates compare their token distributions on one text."""
    sizes = loading.vocabulary_mismatch(policy, model_dir, reference, reference_dir)
    if sizes is not None:
        raise UsageError(
            f"the model at {model_dir} and the reference at {reference_dir} have different tokenizers "
            f"({sizes[0]} and {sizes[1]} output tokens); evaluate against a reference with the same tokenizer "
            "(eval.reference=<dir>)"
        )


def best_of_n_win_rate(policy, reference, tokenizer, prompts, reward, n: int, args: dict) -> dict[str, float]:
    """InfAlign's metric: n samples per prompt from each model (eval.seed, the main samples' settings), the best of
    each side by the RAW reward (eval never calibrates, so runs with and without reward.calibrate compare)."""
    with console.status(f"best-of-{n}: sampling {n} completions per prompt from the policy and the reference"):
        ours, theirs = sample(policy, tokenizer, prompts, **args), sample(reference, tokenizer, prompts, **args)
        rate = m.best_of_n_win_rate(reward(ours.prompts, ours.completions), reward(theirs.prompts, theirs.completions), n)
    return {f"best_of_{n}_win_rate_vs_reference": rate}


def pass_at_ks(rewards: list[float], n: int, prefix: str) -> dict[str, float]:
    """Unbiased pass@k for k = 1..n from n samples per prompt (rewards grouped by prompt): {prefix}pass@k keys."""
    counts = [(n, sum(r >= 1.0 for r in rewards[i : i + n])) for i in range(0, len(rewards), n)]
    return {f"{prefix}pass@{k}": m.mean_pass_at_k(counts, k) for k in range(1, n + 1)}


def _pair_probabilities(cfg, policy, reference, tokenizer, batch_size: int, kernel: str) -> list[float]:
    """P(chosen > rejected) on held-out pairs from the objective's own implicit rewards."""
    pairs = build.preference_pairs(cfg, tokenizer, sources.policy_source(cfg))["test"]
    objective, divergence = build.objective(cfg)
    chosen = list(zip(pairs["prompt"], pairs["chosen"]))
    rejected = list(zip(pairs["prompt"], pairs["rejected"]))
    # TDPO's implicit reward includes the sequential divergence it was trained with
    kwargs = {"kernel": kernel, "divergence": divergence} if objective.needs_token_divergence else {"kernel": kernel}
    if objective.data == "pairs":  # chosen rows, then rejected rows
        stats = score(policy, reference, _tokenize(tokenizer, chosen + rejected), batch_size, **kwargs)
        inputs = batches.pairs(stats, objective)
    else:  # a pair as a set of two: candidates (chosen first, scored by the rewards) or negative + one sample
        order = [r for pair in zip(rejected, chosen) for r in pair] if objective.data == "negatives" else [
            r for pair in zip(chosen, rejected) for r in pair
        ]
        stats = score(policy, reference, _tokenize(tokenizer, order), batch_size, **kwargs)
        mask = torch.ones(len(pairs), 2, dtype=torch.bool)
        if objective.data == "negatives":
            inputs = batches.negatives(stats, mask)
        else:
            known = "chosen_reward" in pairs.column_names
            rewards = torch.tensor(list(zip(pairs["chosen_reward"], pairs["rejected_reward"]))) if known else None
            inputs = batches.candidates(stats, mask, rewards.to(stats.logps.dtype) if known else None)
    out = objective.loss(inputs, divergence=divergence, **hyperparameters(cfg.objective))
    # D2O's implicit rewards: "chosen" is the self-sample (here the pair's chosen), "rejected" the negative
    return m.preference_probabilities(out.chosen_rewards, out.rejected_rewards)


def _tokenize(tokenizer: PreTrainedTokenizerBase, rows: list[tuple[str, str]]) -> Batch:
    """Prompt and prompt+completion+EOS, split at their common prefix, as TRL's DPOTrainer does."""
    out = []
    for prompt, completion in rows:
        prompt_ids = tokenizer(prompt)["input_ids"]
        eos = "" if completion.endswith(tokenizer.eos_token) else tokenizer.eos_token
        full = tokenizer(prompt + completion + eos)["input_ids"]
        cut = next((i for i, (a, b) in enumerate(zip(prompt_ids, full)) if a != b), min(len(prompt_ids), len(full)))
        out.append((full[:cut], full[cut:]))
    return pad_left(out, tokenizer.pad_token_id)


def evaluate_and_report(cfg: RunConfig, model_dir: Path, out_dir: Path, reference_dir: str | None = None) -> dict[str, Any]:
    """Evaluate against `reference_dir`, else eval.reference, else the run's reference (model.reference or the
    policy's starting weights); write eval.json, eval_samples.jsonl and reliability.{json,png} into out_dir."""
    if reference_dir is None:
        if cfg.eval.reference:
            reference_dir = loading.check_source("eval.reference", cfg.eval.reference)
        else:
            reference_dir = sources.reference_source(cfg)
    results, samples, diagram = evaluate(cfg, model_dir, reference_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    with (out_dir / "eval_samples.jsonl").open("w") as f:
        for row in samples:
            f.write(json.dumps(row) + "\n")
    if diagram is not None:  # its bins too, so `alignctl report` can draw runs' diagrams side by side
        (out_dir / "reliability.json").write_text(json.dumps(diagram) + "\n")
        m.plot_reliability(diagram, out_dir / "reliability.png", title=f"{cfg.objective.name} / {cfg.divergence.name}")
    print_table(results, out_dir)
    return results


def print_table(results: dict[str, Any], out_dir: Path) -> None:
    table = Table(title=f"eval: {out_dir}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in results.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
    Console().print(table)
