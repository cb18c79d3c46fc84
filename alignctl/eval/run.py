"""`alignctl eval`: a model directory -> samples -> metrics -> eval.json (+ samples and a reliability diagram)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from alignctl import build
from alignctl.cli import UsageError
from alignctl.config import RunConfig, hyperparameters
from alignctl.eval import metrics as m
from alignctl.eval.sampling import Batch, pad_left, sample, score
from alignctl.objectives.base import CandidateLogps, NegativeLogps, PreferenceLogps

console = Console(stderr=True)


def evaluate(cfg: RunConfig, model_dir: Path, reference_dir: Path) -> tuple[dict[str, Any], list[dict], dict]:
    """Metrics of the policy in model_dir against the reference in reference_dir (spec section 12)."""
    e = cfg.eval
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    policy = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    reference = AutoModelForCausalLM.from_pretrained(reference_dir).eval()
    reward = build.reward(cfg)
    prompts = build.eval_prompts(cfg)[: e.num_prompts]
    # Verifiable tasks sample with the task's own completion budget (a worked solution must fit to be scored).
    max_new_tokens = cfg.dataset.max_new_tokens if cfg.reward.name in BINARY_REWARDS else e.max_new_tokens
    # Preference metrics need held-out pairs and an objective with implicit rewards (not online objectives).
    pair_metrics = build.has_pairs(cfg) and build.objective(cfg)[0].data != "groups"

    with console.status(f"sampling {e.samples_per_prompt} completions for {len(prompts)} held-out prompts"):
        args = dict(n=e.samples_per_prompt, max_new_tokens=max_new_tokens, temperature=e.temperature,
                    seed=e.seed, batch_size=e.batch_size)
        ours = sample(policy, tokenizer, prompts, **args)
        theirs = sample(reference, tokenizer, prompts, **args)
    with console.status("scoring samples and held-out pairs"):
        rewards = reward(ours.prompts, ours.completions)
        ref_rewards = reward(theirs.prompts, theirs.completions)
        scores = score(policy, reference, ours.batch, e.batch_size, kernel=cfg.model.kernel)
        p = _pair_probabilities(cfg, policy, reference, tokenizer, e.batch_size) if pair_metrics else None

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
        "model_dir": str(model_dir),
        "reference_dir": str(reference_dir),
    }
    if p is None:
        results["preference_metrics_skipped"] = (
            f"dataset={cfg.dataset.name} has no preference pairs" if not build.has_pairs(cfg)
            else f"objective={cfg.objective.name} is online: no implicit reward to classify pairs with"
        )
    if cfg.reward.name in BINARY_REWARDS:
        n = e.samples_per_prompt
        results |= pass_at_ks(rewards, n, "")
        results |= pass_at_ks(ref_rewards, n, "reference_")
        if build.has_ood_split(cfg):
            ood_prompts = build.eval_prompts(cfg, "ood")[: e.num_prompts]
            with console.status(f"sampling {n} completions for {len(ood_prompts)} out-of-distribution prompts"):
                for prefix, model in (("ood_", policy), ("reference_ood_", reference)):
                    got = sample(model, tokenizer, ood_prompts, **args)
                    results |= pass_at_ks(reward(got.prompts, got.completions), n, prefix)
            results["num_ood_prompts"] = len(ood_prompts)
    samples = [
        {"prompt": pr, "completion": c, "reward": r, "reference_completion": rc, "reference_reward": rr}
        for pr, c, r, rc, rr in zip(ours.prompts, ours.completions, rewards, theirs.completions, ref_rewards)
    ]
    return results, samples, diagram


BINARY_REWARDS = ("exact_match",)  # rewards that say correct (1) or not (0): pass@k is defined for them


def pass_at_ks(rewards: list[float], n: int, prefix: str) -> dict[str, float]:
    """Unbiased pass@k for k = 1..n from n samples per prompt (rewards grouped by prompt): {prefix}pass@k keys."""
    counts = [(n, sum(r >= 1.0 for r in rewards[i : i + n])) for i in range(0, len(rewards), n)]
    return {f"{prefix}pass@{k}": m.mean_pass_at_k(counts, k) for k in range(1, n + 1)}


def _pair_probabilities(cfg, policy, reference, tokenizer, batch_size: int) -> list[float]:
    """P(chosen > rejected) on held-out pairs from the objective's own implicit rewards."""
    pairs = build.preference_pairs(cfg)["test"]
    objective, divergence = build.objective(cfg)
    # TDPO's implicit reward includes the sequential divergence it was trained with
    kwargs = {"kernel": cfg.model.kernel}
    if objective.needs_token_divergence:
        kwargs["divergence"] = divergence
    chosen = score(policy, reference, _tokenize(tokenizer, pairs["prompt"], pairs["chosen"]), batch_size, **kwargs)
    rejected = score(policy, reference, _tokenize(tokenizer, pairs["prompt"], pairs["rejected"]), batch_size, **kwargs)
    if objective.data == "candidates":  # a pair is a set of two candidates, chosen first, scored by its rewards
        stats = CandidateLogps(
            policy_logps=torch.stack([chosen.logps, rejected.logps], dim=-1),
            anchor_logps=torch.stack([chosen.ref_logps, rejected.ref_logps], dim=-1),
            scores=torch.tensor(list(zip(pairs["chosen_reward"], pairs["rejected_reward"])), dtype=chosen.logps.dtype),
        )
    elif objective.data == "negatives":  # the rejected completion is the negative, the chosen one the only sample
        stats = NegativeLogps(rejected.logps, rejected.ref_logps, chosen.logps[:, None], chosen.ref_logps[:, None])
    else:
        stats = PreferenceLogps(
            policy_chosen_logps=chosen.logps,
            policy_rejected_logps=rejected.logps,
            chosen_lengths=chosen.lengths.float(),
            rejected_lengths=rejected.lengths.float(),
            ref_chosen_logps=chosen.ref_logps if objective.needs_reference else None,
            ref_rejected_logps=rejected.ref_logps if objective.needs_reference else None,
            chosen_seq_kl=chosen.divergence if objective.needs_token_divergence else None,
            rejected_seq_kl=rejected.divergence if objective.needs_token_divergence else None,
        )
    out = objective.loss(stats, divergence=divergence, **hyperparameters(cfg.objective))
    return m.preference_probabilities(out.chosen_rewards, out.rejected_rewards)


def _tokenize(tokenizer: PreTrainedTokenizerBase, prompts: list[str], completions: list[str]) -> Batch:
    """Prompt and prompt+completion+EOS, split at their common prefix, as TRL's DPOTrainer does."""
    rows = []
    for prompt, completion in zip(prompts, completions):
        prompt_ids = tokenizer(prompt)["input_ids"]
        full = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]
        cut = next((i for i, (a, b) in enumerate(zip(prompt_ids, full)) if a != b), min(len(prompt_ids), len(full)))
        rows.append((full[:cut], full[cut:]))
    return pad_left(rows, tokenizer.pad_token_id)


def evaluate_and_report(
    cfg: RunConfig, model_dir: Path, out_dir: Path, reference_dir: Path | None = None
) -> dict[str, Any]:
    if reference_dir is None:
        reference_dir = Path(cfg.eval.reference) if cfg.eval.reference else build.base_model_dir(cfg)
    if not (Path(reference_dir) / "config.json").is_file():
        raise UsageError(f"eval.reference={reference_dir} is not an HF model directory (no config.json)")
    results, samples, diagram = evaluate(cfg, model_dir, Path(reference_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    with (out_dir / "eval_samples.jsonl").open("w") as f:
        for row in samples:
            f.write(json.dumps(row) + "\n")
    if diagram is not None:
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
