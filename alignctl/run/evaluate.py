"""`alignctl eval`: a model directory -> samples -> metrics -> eval.json (+ samples and a reliability diagram)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from alignctl.cache import cache_root
from alignctl.config.schema import RunConfig, hyperparameters
from alignctl.errors import UsageError
from alignctl.eval import benchmarks, export, judges, reward_bench
from alignctl.eval import metrics as m
from alignctl.models import loading, vllm_rollout
from alignctl.models.sampling import Samples, sample_rows, score, tokenize_rows
from alignctl.models.scoring import resolve_kernel
from alignctl.rewards import classifier
from alignctl.rewards.base import RewardContext
from alignctl.run import build, runtime, sources
from alignctl.trainers import batches

console = Console(stderr=True)


def evaluate(
    cfg: RunConfig, model_dir: Path, reference_dir: str, out_dir: Path | None = None
) -> tuple[dict[str, Any], list[dict], dict]:
    """Metrics of the policy in model_dir against the reference (spec section 12); with out_dir, eval.export's files
    are written there."""
    e = cfg.eval
    tokenizer = loading.load_tokenizer(cfg, str(model_dir))
    policy = loading.load_causal_lm(cfg, str(model_dir), trainable=False)
    reference = loading.load_causal_lm(cfg, reference_dir, trainable=False)
    _check_vocabularies(policy, reference, model_dir, reference_dir)
    _check_finite(policy, model_dir)
    _check_finite(reference, reference_dir)
    kernels = {resolve_kernel(policy, cfg.model.kernel), resolve_kernel(reference, cfg.model.kernel)}
    kernel = "naive" if "naive" in kernels else "fused"  # one path for both models' statistics
    reward = build.reward(cfg)
    binary = build.is_binary_reward(cfg)
    prompts = build.eval_prompts(cfg, tokenizer)[: e.num_prompts]
    # Verifiable tasks sample with the task's own completion budget (a worked solution must fit to be scored).
    max_new_tokens = cfg.dataset.max_new_tokens if binary else e.max_new_tokens
    objective = build.objective(cfg)[0]
    # Preference metrics need held-out pairs scored by an objective's implicit reward (not online objectives or SFT),
    # and a dataset that has pairs (binary feedback has none).
    has_pairs = build.dataset_entry(cfg).rows != "binary"
    pair_metrics = objective.data not in ("groups", "sft") and has_pairs

    with console.status(f"sampling {e.samples_per_prompt} completions for {len(prompts)} held-out prompts"):
        args = dict(n=e.samples_per_prompt, max_new_tokens=max_new_tokens, temperature=e.temperature,
                    seed=e.seed, batch_size=e.batch_size)
        if e.rollout == "vllm":  # vLLM loads each model from its directory and batches the requests itself
            drawn = {k: v for k, v in args.items() if k != "batch_size"}
            ours = vllm_rollout.sample_rows_vllm(model_dir, tokenizer, prompts, dtype=cfg.model.dtype, **drawn)
            theirs = vllm_rollout.sample_rows_vllm(reference_dir, tokenizer, prompts, dtype=cfg.model.dtype, **drawn)
        else:
            ours = sample_rows(policy, tokenizer, prompts, **args)
            theirs = sample_rows(reference, tokenizer, prompts, **args)
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
    results |= length_metrics(ours, theirs, rewards)
    lc = m.length_controlled_win_rate(outcomes(rewards, ref_rewards), length_diffs(ours, theirs))
    results |= {"win_rate_vs_reference_se": lc["win_rate_standard_error"], "lc_win_rate_vs_reference": lc["lc_win_rate"],
                "lc_win_rate_vs_reference_se": lc["lc_standard_error"]}  # fmt: skip
    if p is None:
        results["preference_metrics_skipped"] = (
            f"dataset={cfg.dataset.name} has no held-out pairs (binary feedback)" if not has_pairs
            else f"objective={cfg.objective.name} has no implicit reward to classify held-out pairs with"
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
                    got = sample_rows(model, tokenizer, split_prompts, **args)
                    results |= pass_at_ks(reward(got.prompts, got.completions), n, prefix)
            results[f"num_{split}_prompts"] = len(split_prompts)
    extra, verdicts = paper_metrics(cfg, policy, reference, tokenizer, kernel, ours, theirs, out_dir)
    results |= extra
    samples = [
        {"prompt": pr, "completion": c, "reward": r, "reference_completion": rc, "reference_reward": rr}
        for pr, c, r, rc, rr in zip(ours.prompts, ours.completions, rewards, theirs.completions, ref_rewards)
    ]
    for row, verdict in zip(samples, verdicts or []):  # each verdict with the judge's raw answers, both orders
        row |= {"judge_winner": verdict.winner, "judge_policy_first": verdict.raw_policy_a,
                "judge_reference_first": verdict.raw_policy_b}  # fmt: skip
    return results, samples, diagram


def paper_metrics(cfg: RunConfig, policy, reference, tokenizer, kernel: str, ours: Samples, theirs: Samples,
                  out_dir: Path | None) -> tuple[dict[str, Any], list | None]:  # fmt: skip
    """What eval.judge, eval.lm_eval, eval.preference_data and eval.export ask for (each only when set), and the
    judge's verdicts (None without a pairwise judge)."""
    e, results, verdicts = cfg.eval, {}, None
    if e.judge.kind != "reward":
        verdicts = judges.from_config(e.judge, cache_root() / "judge_verdicts", device=str(policy.device)).judge(
            ours.prompts, ours.completions, theirs.completions)  # fmt: skip
        results |= judge_metrics(e.judge, verdicts, length_diffs(ours, theirs))
    if e.lm_eval.tasks:
        results |= lm_eval_scores(e, policy, reference, tokenizer)
    if e.preference_data is not None:
        def implicit(rows):  # RewardBench's DPO mode: sum(log pi - log pi_ref) over the completion
            return reward_bench.score_pairs(policy, reference, tokenizer, rows, e.batch_size, kernel=kernel)

        results |= preference_data_accuracy(e, tokenizer, implicit, "the implicit reward")
    if e.export.formats and out_dir is not None:
        results["exported"] = export_completions(cfg, policy, tokenizer, out_dir)
    return results, verdicts


def judge_metrics(judge_cfg: Any, verdicts: list, diffs: list[float]) -> dict[str, Any]:
    """The judge's win rate of the policy (ties 1/2; unparseable answers counted apart, never as wins) with its
    standard error, and its length-controlled twin fitted on the comparisons it could judge."""
    rate = judges.win_rate(verdicts)
    judged = [(o, d) for o, d in zip(judges.outcomes(verdicts), diffs) if o is not None]
    lc = (m.length_controlled_win_rate([o for o, _ in judged], [d for _, d in judged]) if judged
          else {"lc_win_rate": None, "lc_standard_error": None})  # nothing parseable: no rate to control
    return {
        "judge": judge_cfg.kind, "judge_win_rate": rate["win_rate"], "judge_win_rate_se": rate["stderr"],
        "judge_lc_win_rate": lc["lc_win_rate"], "judge_lc_win_rate_se": lc["lc_standard_error"],
        "judge_comparisons": rate["judged"], "judge_ties": rate["ties"], "judge_unparseable": rate["unparseable"],
    }  # fmt: skip


def lm_eval_scores(e: Any, policy, reference, tokenizer) -> dict[str, float]:
    """eval.lm_eval.tasks on the policy and on the reference, side by side (the alignment tax):
    lm_eval/<task>/<metric> and reference_lm_eval/<task>/<metric>."""
    out: dict[str, float] = {}
    for prefix, model in (("", policy), ("reference_", reference)):
        with console.status(f"lm-eval: {', '.join(e.lm_eval.tasks)} on the {prefix.rstrip('_') or 'policy'}"):
            scores = benchmarks.run_lm_eval(model, tokenizer, list(e.lm_eval.tasks), e.lm_eval.include_path,
                                            limit=e.lm_eval.limit, num_fewshot=e.lm_eval.num_fewshot,
                                            batch_size=e.lm_eval.batch_size, seed=e.seed)  # fmt: skip
        out |= {f"{prefix}lm_eval/{task}/{metric}": value for task, got in scores.items() for metric, value in got.items()}
    return out


def preference_data_accuracy(e: Any, tokenizer, score_pairs, scorer: str) -> dict[str, float]:
    """RewardBench's evaluation on eval.preference_data: the share of pairs whose chosen response gets the higher
    reward, overall and per subset (and RewardBench's section scores when the file is RewardBench itself).
    score_pairs: rows -> (chosen rewards, rejected rewards), a policy's implicit reward sum(log pi - log pi_ref)
    (RewardBench's DPO mode) or a reward model's score; scorer names it in the progress line."""
    rows = reward_bench.read_preference_data(e.preference_data)
    if tokenizer.chat_template is not None:  # as RewardBench feeds chat models
        rows = reward_bench.render_chat(rows, tokenizer)
    with console.status(f"scoring {len(rows)} pairs of {e.preference_data} with {scorer}"):
        chosen, rejected = score_pairs(rows)
    acc = reward_bench.accuracy(chosen, rejected, [row["subset"] for row in rows])
    out = {"preference_data_accuracy": acc["overall"], "preference_data_pairs": acc["num_pairs"]}
    out |= {f"preference_data_accuracy/{subset}": value for subset, value in acc["per_subset"].items()}
    sections = reward_bench.rewardbench_sections(acc["per_subset"], acc["num_pairs_per_subset"])
    out |= {f"rewardbench/{name}": value for name, value in (sections or {}).items()}
    return out


def export_completions(cfg: RunConfig, policy, tokenizer, out_dir: Path) -> list[str]:
    """eval.export: the policy's completions (one per prompt, eval.seed, eval.temperature,
    eval.export.max_new_tokens) on eval.export.prompts (else the eval prompts) in AlpacaEval's and/or Arena-Hard's
    answer format, for their own tools to judge. Returns the files written."""
    e = cfg.eval
    if e.export.prompts is not None:
        rows = export.read_prompt_file(e.export.prompts)
    else:
        rows = [{"id": f"{i}", "prompt": p} for i, p in enumerate(build.eval_prompts(cfg, tokenizer)[: e.num_prompts])]
    prompts = [row["prompt"] for row in rows]
    with console.status(f"export: sampling {len(prompts)} completions"):
        got = sample_rows(policy, tokenizer, prompts, n=1, max_new_tokens=e.export.max_new_tokens,
                          temperature=e.temperature, seed=e.seed, batch_size=e.batch_size)  # fmt: skip
    name = out_dir.resolve().name  # the run's name: the generator / model id the judges' leaderboards show
    written = []
    if "alpaca_eval" in e.export.formats:
        datasets = [row.get("dataset") for row in rows]
        written.append(export.write_alpaca_eval(out_dir / "alpaca_eval", prompts, got.completions, name,
                                                datasets=datasets if all(datasets) else None))  # fmt: skip
    if "arena_hard" in e.export.formats:
        written.append(export.write_arena_hard(out_dir / "arena_hard", [row["id"] for row in rows], prompts,
                                               got.completions, name))  # fmt: skip
    return [str(path) for path in written]


def length_metrics(ours: Samples, theirs: Samples, rewards: list[float]) -> dict[str, Any]:
    """"Did it just get longer?": mean and median completion length (tokens, EOS included, and characters) of the
    policy and the reference, their ratio, and the correlation of the policy's reward with its length."""
    out: dict[str, Any] = {}
    for prefix, got in (("", ours), ("reference_", theirs)):
        tokens = m.length_stats(got.batch.completion_mask.sum(-1).tolist())
        chars = m.length_stats([len(c) for c in got.completions])
        out |= {f"{prefix}length_tokens_mean": tokens["mean"], f"{prefix}length_tokens_median": tokens["median"],
                f"{prefix}length_chars_mean": chars["mean"], f"{prefix}length_chars_median": chars["median"]}  # fmt: skip
    reference_mean = out["reference_length_tokens_mean"]
    out["length_ratio"] = out["length_tokens_mean"] / reference_mean if reference_mean else None
    out["reward_length_correlation"] = m.pearson(rewards, ours.batch.completion_mask.sum(-1).tolist())
    return out


def outcomes(policy_scores: list[float], reference_scores: list[float]) -> list[float]:
    """Per comparison: 1 the policy's sample scores higher, 0.5 a tie, 0 lower (win_rate_vs_reference's terms)."""
    return [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(policy_scores, reference_scores)]


def length_diffs(ours: Samples, theirs: Samples) -> list[float]:
    """Policy minus reference completion length in characters, per comparison (AlpacaEval's length measure)."""
    return [float(len(a) - len(b)) for a, b in zip(ours.completions, theirs.completions)]


def _check_vocabularies(policy, reference, model_dir, reference_dir) -> None:
    """Both models must share one tokenizer: KL and win rates compare their token distributions on one text."""
    sizes = loading.vocabulary_mismatch(policy, model_dir, reference, reference_dir)
    if sizes is not None:
        raise UsageError(
            f"the model at {model_dir} and the reference at {reference_dir} have different tokenizers "
            f"({sizes[0]} and {sizes[1]} output tokens); evaluate against a reference with the same tokenizer "
            "(eval.reference=<dir>)"
        )


def _check_finite(model, where) -> None:
    """NaN or inf weights (a run that diverged before alignctl stopped on them) sample garbage or crash torch's
    sampler: refuse them in one line."""
    for name, param in model.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise UsageError(f"the model at {where} has non-finite weights (first in {name}); it cannot be "
                             "evaluated: evaluate an earlier checkpoint, or retrain (train.on_nonfinite=stop, the "
                             "default, stops a run at its first non-finite gradient)")  # fmt: skip


def best_of_n_win_rate(policy, reference, tokenizer, prompts, reward, n: int, args: dict) -> dict[str, float]:
    """InfAlign's metric: n samples per prompt from each model (eval.seed, the main samples' settings), the best of
    each side by the RAW reward (eval never calibrates, so runs with and without reward.calibrate compare)."""
    with console.status(f"best-of-{n}: sampling {n} completions per prompt from the policy and the reference"):
        ours, theirs = sample_rows(policy, tokenizer, prompts, **args), sample_rows(reference, tokenizer, prompts, **args)
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
        stats = score(policy, reference, tokenize_rows(tokenizer, chosen + rejected), batch_size, **kwargs)
        inputs = batches.pairs(stats, objective)
    elif objective.data == "binary":  # chosen rows (desirable), then rejected rows; each row's own implicit reward
        stats = score(policy, reference, tokenize_rows(tokenizer, chosen + rejected), batch_size, **kwargs)
        inputs = batches.binary(stats, torch.arange(2 * len(pairs)) < len(pairs))
        rewards = objective.loss(inputs, divergence=divergence, **hyperparameters(cfg.objective)).rewards
        return m.preference_probabilities(*rewards.chunk(2))  # z0 is common to both rows: it cancels
    else:  # a pair as a set of two: candidates (chosen first, scored by the rewards) or negative + one sample
        order = [r for pair in zip(rejected, chosen) for r in pair] if objective.data == "negatives" else [
            r for pair in zip(chosen, rejected) for r in pair
        ]
        stats = score(policy, reference, tokenize_rows(tokenizer, order), batch_size, **kwargs)
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


def evaluate_reward_model(cfg: RunConfig, model_dir: Path) -> tuple[dict[str, Any], list[dict], dict]:
    """objective=reward_model: the reward model in model_dir scores the held-out pairs as reward=classifier
    reward.mode=logit scores texts (texts cut to train.max_length tokens, as in training): pair accuracy
    P(r_w > r_l), the calibration (ECE, reliability bins) of sigmoid(r_w - r_l), the mean margin r_w - r_l; and
    eval.preference_data's accuracy. Nothing is sampled, no reference loads. Returns eval()'s triple (the samples
    are the scored pairs)."""
    e = cfg.eval
    classifier.check_sequence_classifier("model_dir", str(model_dir))  # a policy's model/: its head would be random
    tokenizer = loading.load_tokenizer(cfg, str(model_dir))
    scorer = classifier.ClassifierConfig(path=str(model_dir), mode="logit", max_length=cfg.train.max_length,
                                         batch_size=e.batch_size, dtype=cfg.model.dtype)  # fmt: skip
    reward_of = classifier.build(scorer, RewardContext(device=runtime.device()))
    pairs = build.preference_pairs(cfg, tokenizer, sources.policy_source(cfg))["test"]
    with console.status(f"scoring {len(pairs)} held-out pairs with the reward model"):
        chosen = reward_of(list(pairs["prompt"]), list(pairs["chosen"]))
        rejected = reward_of(list(pairs["prompt"]), list(pairs["rejected"]))
    p = m.preference_probabilities(chosen, rejected)
    diagram = m.reliability_diagram(p)
    results: dict[str, Any] = {
        "preference_accuracy": m.preference_accuracy(p),
        "ece": diagram["ece"],
        "reward_margin_mean": m.reward_stats([c - r for c, r in zip(chosen, rejected)])["mean"],
        "chosen_reward_mean": m.reward_stats(chosen)["mean"],
        "rejected_reward_mean": m.reward_stats(rejected)["mean"],
        "num_pairs": len(p),
        "max_length": cfg.train.max_length,
        "model_dir": str(model_dir),
    }
    if e.preference_data is not None:
        def by_reward_model(rows):
            prompts = [row["prompt"] for row in rows]
            return tuple(reward_of(prompts, [row[side] for row in rows]) for side in ("chosen", "rejected"))

        results |= preference_data_accuracy(e, tokenizer, by_reward_model, "the reward model")
    texts = zip(pairs["prompt"], pairs["chosen"], pairs["rejected"])
    samples = [{"prompt": pr, "chosen": c, "rejected": r, "chosen_reward": cr, "rejected_reward": rr}
               for (pr, c, r), cr, rr in zip(texts, chosen, rejected)]  # fmt: skip
    return results, samples, diagram


def evaluate_and_report(cfg: RunConfig, model_dir: Path, out_dir: Path, reference_dir: str | None = None) -> dict[str, Any]:
    """Evaluate against `reference_dir`, else eval.reference, else the run's reference (model.reference or the
    policy's starting weights), or a reward model on held-out pairs (evaluate_reward_model); write eval.json,
    eval_samples.jsonl and reliability.{json,png} into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if build.objective(cfg)[0].trains_reward_model:  # no reference, nothing sampled: scored on held-out pairs
        results, samples, diagram = evaluate_reward_model(cfg, model_dir)
    else:
        if reference_dir is None:
            if cfg.eval.reference:
                reference_dir = loading.check_source("eval.reference", cfg.eval.reference)
            else:
                reference_dir = sources.reference_source(cfg)
        results, samples, diagram = evaluate(cfg, model_dir, reference_dir, out_dir)
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
