"""RunConfig -> the things a run needs (data of the objective's kind, held-out prompts, reward, objective): plain
lookups in the dataset, reward and objective registries. No branch here names a dataset, reward or model.

Data flow: the dataset's loader gives rows in TRL's formats (alignctl.data.base); conversational rows are rendered
to text with the policy's chat template (alignctl.data.chat); then the objective's data kind is read off the rows
(preference datasets) or sampled from the SFT model and scored by the reward (prompt datasets:
alignctl.data.sampled), cached by recipe.
"""

from __future__ import annotations

import random
from typing import Any

from alignctl import objectives
from alignctl.config.schema import RunConfig
from alignctl.data import binary, chat, registry, sampled
from alignctl.data.base import DatasetEntry
from alignctl.divergences import Divergence
from alignctl.errors import DataError
from alignctl.models import files, loading
from alignctl.objectives.base import Objective
from alignctl.rewards import calibration
from alignctl.rewards import registry as rewards
from alignctl.rewards.base import Reward, RewardContext
from alignctl.run import runtime, sources

_ROWS: dict[tuple[str, int], Any] = {}  # rendered rows per (dataset config, tokenizer), loaded once per process
_REWARDS: dict[tuple[str, str, str], Reward] = {}  # built rewards (a classifier loads a model) per config and device


def dataset_entry(cfg: RunConfig) -> DatasetEntry:
    return registry.get(cfg.dataset.name)


def rows(cfg: RunConfig, tokenizer):
    """The dataset's splits with conversational rows rendered to text by the tokenizer's chat template."""
    key = (repr(cfg.dataset), id(tokenizer))
    if key not in _ROWS:
        loaded = dataset_entry(cfg).load(cfg.dataset)
        for split in ("train", "test"):
            if split not in loaded:
                raise DataError(f"dataset={cfg.dataset.name} has no {split!r} split (it has: {', '.join(loaded)})")
        _ROWS[key] = chat.render(loaded, tokenizer, cfg.dataset.name)
    return _ROWS[key]


def reward(cfg: RunConfig, device: str | None = None) -> Reward:
    """The run's reward, built once per process (training, pair building and eval share it), on the policy's
    device (the GPU when there is one) unless `device` says otherwise."""
    device = device or runtime.device()
    key = (repr(cfg.reward), repr(cfg.dataset), device)
    if key not in _REWARDS:
        entry = dataset_entry(cfg)
        answers = entry.answers(cfg.dataset) if entry.answers is not None else None
        _REWARDS[key] = rewards.build(cfg.reward, RewardContext(device=device, answers=answers))
    return _REWARDS[key]


def training_reward(cfg: RunConfig) -> Reward:
    """What training and pair building optimise: the raw reward, or with reward.calibrate=true its InfAlign/CTRL
    calibration (and transform) against the reference model's samples of each prompt. Eval and reward-KL curves
    report the raw reward (`reward`), so runs with and without calibration stay comparable."""
    raw = reward(cfg)
    if not cfg.reward.calibrate:
        return raw
    settings = calibration_settings(cfg)
    key = ("calibrated", repr(cfg.reward), repr(cfg.dataset), repr(cfg.model), repr(sorted(settings.items())))
    if key not in _REWARDS:

        model = loading.load_causal_lm(cfg, settings["reference"], trainable=False).to(runtime.device())
        tokenizer = loading.load_tokenizer(cfg, settings["reference"])
        draw = calibration.reference_sampler(model, tokenizer, m=settings["samples"],
                                             max_new_tokens=settings["max_new_tokens"])  # fmt: skip
        _REWARDS[key] = calibration.CalibratedReward(raw, draw, seed=settings["seed"], transform=settings["transform"],
                                                     t=settings["t"])  # fmt: skip
    return _REWARDS[key]


def calibration_settings(cfg: RunConfig) -> dict[str, Any]:
    """reward.calibrate's settings with t resolved (reward.t, else the tabulated t for reward.n; never from eval.*,
    which a resumed run may change): also the cache-key part of a calibrated reward."""
    r, t = cfg.reward, cfg.reward.t
    if r.transform != "identity" and t is None:  # RewardConfig saw to it that n is set then
        t = calibration.default_t(r.transform, r.n)
    return {
        "transform": r.transform, "t": t, "samples": r.calibration_samples, "seed": cfg.train.seed,
        "max_new_tokens": cfg.dataset.max_new_tokens, "reference": sources.reference_source(cfg),
    }  # fmt: skip


def reward_recipe(cfg: RunConfig) -> dict[str, Any]:
    """The reward's identity in cache keys: its option's recipe, plus the calibration settings when on."""
    recipe = rewards.get(cfg.reward.name).recipe(cfg.reward)
    if not cfg.reward.calibrate:
        return recipe
    settings = calibration_settings(cfg)  # the reference model by its content, not its (machine's) path
    return {**recipe, "calibration": {**settings, "reference": files.model_fingerprint(settings["reference"])}}


def is_binary_reward(cfg: RunConfig) -> bool:
    """Rewards that say correct (1) or not (0): pass@k is defined for them."""
    return rewards.get(cfg.reward.name).binary


def objective(cfg: RunConfig) -> tuple[Objective, Divergence | None]:
    return objectives.get(cfg.objective.name), cfg.divergence.build()


# --- data of each kind ------------------------------------------------------------------------------------------
def preference_pairs(cfg: RunConfig, tokenizer, model_dir: str):
    """train/test splits of prompt, chosen, rejected (+ chosen_reward, rejected_reward where known)."""
    if dataset_entry(cfg).rows == "preferences":
        return rows(cfg, tokenizer)
    return sampled.build_pairs(sampled_source(cfg, tokenizer, model_dir))


def binary_feedback(cfg: RunConfig, tokenizer, model_dir: str):
    """train/test splits of prompt, completion, label (KTO): a binary dataset's own rows, or each preference pair
    (read or sampled) as two rows, its chosen completion desirable and its rejected one not."""
    if dataset_entry(cfg).rows == "binary":
        return rows(cfg, tokenizer)
    return binary.from_pairs(preference_pairs(cfg, tokenizer, model_dir))


def candidates(cfg: RunConfig, tokenizer, model_dir: str):
    """train/test splits of prompt, completions (K, best first), rewards. Preference rows are 2-candidate sets
    (chosen first, scored by their rewards when the dataset has them, else a hard label)."""
    if dataset_entry(cfg).rows == "preferences":
        return _pairs_as_candidates(rows(cfg, tokenizer))
    return sampled.build_candidates(sampled_source(cfg, tokenizer, model_dir))


def negatives(cfg: RunConfig, tokenizer, model_dir: str):
    """train/test splits of prompt, negative, samples (D2O): the rejected completion of each pair (human-labelled, or
    the worst of sampled ones) and K self-samples of the SFT model."""
    human = rows(cfg, tokenizer) if dataset_entry(cfg).rows == "preferences" else None  # None: sampled pairs
    return sampled.build_negatives(sampled_source(cfg, tokenizer, model_dir), human)


def prompt_groups(cfg: RunConfig, tokenizer, model_dir: str):
    """A train split of distinct prompts to sample groups for (online objectives)."""
    from datasets import Dataset, DatasetDict

    return DatasetDict({"train": Dataset.from_dict({"prompt": prompts(cfg, tokenizer, "train")})})


def sft_texts(cfg: RunConfig, tokenizer, model_dir: str):
    """train/test splits of prompt, completion for objective=sft: a preference row's chosen completion, or a prompt
    row's reference completion."""
    data = rows(cfg, tokenizer)
    column = "chosen" if dataset_entry(cfg).rows == "preferences" else "completion"
    if column not in data["train"].column_names:
        raise DataError(f"dataset={cfg.dataset.name} has no {column!r} column for objective=sft to imitate")
    return data.map(
        lambda row: {"prompt": row["prompt"], "completion": row[column]},
        remove_columns=data["train"].column_names, keep_in_memory=True, desc="SFT rows",
    )  # fmt: skip


DATA_KINDS = {  # by Objective.data
    "pairs": preference_pairs, "binary": binary_feedback, "candidates": candidates, "negatives": negatives,
    "groups": prompt_groups, "sft": sft_texts,
}


def training_data(cfg: RunConfig, entry: Objective, tokenizer, model_dir: str, resample: bool = False):
    """The train split of the objective's data kind, with dataset.label_noise applied (flip_labels, seeded by
    train.seed; the config allows it only for pairs and ranked candidates: schema.NOISY_LABEL_KINDS). The held-out
    split is never flipped: eval measures against the true labels. An embedded policy, built by now, is first checked
    against the reference the config names (a named policy was when the run was validated: sources.check_models).
    resample (rounds 2.. of train.rounds > 1): pairs sampled from `model_dir` and scored by the reward, whatever the
    dataset holds (cached by the model's weights, like any sampled pairs), flipped in the same way."""
    if resample:
        train = sampled.build_pairs(sampled_source(cfg, tokenizer, model_dir))["train"]
    else:
        sources.check_embedded_policy(cfg, model_dir)
        train = DATA_KINDS[entry.data](cfg, tokenizer, model_dir)["train"]
    share = cfg.dataset.label_noise
    return flip_labels(train, share, cfg.train.seed) if share else train


def sampled_source(cfg: RunConfig, tokenizer, model_dir: str):
    """What the general builder samples from: the SFT model, the prompts (rendered), the reward and the dataset's
    sampling settings."""
    entry, d = dataset_entry(cfg), cfg.dataset
    train_prompts, test_prompts = prompts(cfg, tokenizer, "train"), prompts(cfg, tokenizer, "test")
    stream = (lambda: entry.prompt_stream(d)) if entry.prompt_stream is not None else train_prompts
    return sampled.SampledSource(
        name=cfg.dataset.name,
        model_dir=model_dir,
        train_prompts=stream,
        test_prompts=test_prompts,
        # at most one row per train prompt; an endless stream (toy_sentiment) takes prompts until it has as many
        # rows as its train split has prompts
        num_train_rows=len(train_prompts),
        reward=training_reward(cfg),  # calibrated with reward.calibrate=true: pairs ranked by what training optimises
        reward_recipe=reward_recipe(cfg),
        # the prompts' text, not only the config: a user's edited file must not hit a stale cache entry
        data_fingerprint=sampled.fingerprint_texts([repr(d), *train_prompts, "\0", *test_prompts]),
        device=runtime.device(),
        dtype=cfg.model.dtype,
        samples_per_prompt=d.samples_per_prompt,
        candidates_per_prompt=d.candidates_per_prompt,
        self_samples=d.self_samples,
        max_new_tokens=d.max_new_tokens,
        seed=d.seed,
        hint=_sampling_hint(cfg),
    )


def _sampling_hint(cfg: RunConfig) -> str:
    """What to change when the sampled prompts give too few rows (alignctl.data.sampled.NoRowsError's last words)."""
    d = cfg.dataset
    return (f"Try a reward that tells these completions apart (now reward={cfg.reward.name}), more samples per prompt "
            f"(dataset.samples_per_prompt={d.samples_per_prompt}, dataset.candidates_per_prompt="
            f"{d.candidates_per_prompt} now), longer completions (dataset.max_new_tokens={d.max_new_tokens} now), "
            "more prompts, or a policy whose samples differ more (an SFT model of this task)")  # fmt: skip


def _pairs_as_candidates(pairs):
    def as_set(row: dict) -> dict:
        out = {"prompt": row["prompt"], "completions": [row["chosen"], row["rejected"]]}
        if row.get("chosen_reward") is not None and row.get("rejected_reward") is not None:
            out["rewards"] = [row["chosen_reward"], row["rejected_reward"]]
        return out

    columns = pairs["train"].column_names
    return pairs.map(as_set, remove_columns=columns, keep_in_memory=True, desc="Pairs as candidate sets")


def prompts(cfg: RunConfig, tokenizer, split: str) -> list[str]:
    """The prompts of a split: a prompt dataset's list as it is (repeats are the dataset's choice), a preference
    dataset's prompts once each (several pairs may compare completions of one prompt, as in TL;DR; a binary dataset
    labels several completions of one prompt)."""
    data = rows(cfg, tokenizer)
    if split not in data:
        raise ValueError(f"dataset={cfg.dataset.name} has no {split!r} split")
    values = data[split]["prompt"]
    return list(values) if dataset_entry(cfg).rows == "prompts" else list(dict.fromkeys(values))


def flip_labels(dataset, share: float, seed: int):
    """Label noise: exactly round(share * N) of the N rows (Python's round: a half goes to the even count) get their
    preference reversed, drawn without replacement by random.Random(seed).sample(range(N), k). Which rows depends only
    on seed, share and N, never on the objective or the rows' content: with one train.seed, a DPO arm (pairs) and an
    ADPO arm (a preference dataset's pairs as 2-candidate sets, row for row) flip the same rows. Pairs swap chosen
    and rejected (and their rewards); ranked candidates keep their completions and reverse their rewards, i.e. the
    ranking, or without rewards (a hard label on the first) reverse their order, so the worst comes first."""
    flipped = set(random.Random(seed).sample(range(len(dataset)), round(share * len(dataset))))
    columns = set(dataset.column_names)
    if not ({"rewards", "completions"} & columns or {"chosen", "rejected"} <= columns):
        raise ValueError(f"label noise needs pairs or ranked candidates, not columns {sorted(columns)}")

    def flip(row: dict, index: int) -> dict:
        if index not in flipped:
            return row
        if "rewards" in columns:
            return {**row, "rewards": row["rewards"][::-1]}
        if "completions" in columns:
            return {**row, "completions": row["completions"][::-1]}
        swapped = {"chosen": row["rejected"], "rejected": row["chosen"]}
        if {"chosen_reward", "rejected_reward"} <= columns:
            swapped |= {"chosen_reward": row["rejected_reward"], "rejected_reward": row["chosen_reward"]}
        return {**row, **swapped}

    return dataset.map(flip, with_indices=True, keep_in_memory=True, desc="Flipping labels")


# --- held-out prompts -------------------------------------------------------------------------------------------
def eval_prompts(cfg: RunConfig, tokenizer, split: str = "test") -> list[str]:
    """Held-out prompts of `split`: "test", or one of the dataset's extra splits (toy_arith: "ood")."""
    return prompts(cfg, tokenizer, split)


def extra_eval_splits(cfg: RunConfig) -> tuple[str, ...]:
    return dataset_entry(cfg).extra_splits
