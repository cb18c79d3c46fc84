"""The embedded controlled-sentiment task (DESIGN.md section 5): a small, honest version of the IMDB setup of
the DPO, f-DPO and TDPO papers, built locally with no downloads.

1. corpus: ``corpus_size`` reviews from :mod:`review_grammar` (seeded, balanced in VADER sentiment);
2. tokenizer: byte-level BPE trained on the corpus;
3. base model: tiny Llama pretrained on the corpus with TRL's SFTTrainer; the SFT/reference model, saved as an
   ordinary HF directory (``from_pretrained(dir)`` loads model and tokenizer);
4. pairs: prompts are the first ``prompt_words`` words of held-out reviews (never in the corpus); the base model
   samples ``samples_per_prompt`` continuations per prompt; VADER compound of prompt + continuation is the
   reward; best vs worst is one pair;
5. candidates (ADPO): the same, with ``candidates_per_prompt`` continuations per prompt kept, ranked best first;
6. negatives (D2O): each pair's rejected completion as the negative, plus ``self_samples`` fresh base-model
   samples of its prompt.

Steps 1-3 and steps 4, 5, 6 are cached separately (:func:`alignctl.data.cache.cached`), each keyed by its recipe.

Pair layout, chosen so that TRL's DPOTrainer (which tokenizes prompt and prompt + completion and splits at the
common prefix) sees the sampled text where it was sampled: prompts end on a word with no trailing space;
completions are the decoded continuation, starting with a space (or punctuation: "." after a prompt that ends a
sentence); a sample is kept only if the tokenized prompt is a prefix of the tokenized prompt + completion.
Ties (every valid sample with the same reward) give no pair: such prompts are resampled (up to ``_ROUNDS``
rounds) and then skipped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import string
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignctl.config import NOT_IN_RECIPE
from alignctl.data.cache import cached, recipe_hash
from alignctl.data.tasks import review_grammar, tiny_lm
from alignctl.rewards.sentiment import sentiment

if TYPE_CHECKING:
    import datasets

    from alignctl.config import TinyModelConfig, ToySentimentConfig

BASE_MODEL_KIND = "toy_sentiment_base"
PAIRS_KIND = "toy_sentiment_pairs"
PAIRS_VERSION = 1  # bump when pair construction changes
CANDIDATES_KIND = "toy_sentiment_candidates"
CANDIDATES_VERSION = 1  # bump when candidate construction changes
NEGATIVES_KIND = "toy_sentiment_negatives"
NEGATIVES_VERSION = 1  # bump when negative/self-sample construction changes
INFO_FILE = "build_info.json"  # written beside the artifact's files: versions, sizes, timings, statistics
_ROUNDS = 3  # sampling rounds for a prompt (all its samples tie, or too few are valid) before it is skipped
_GEN_BATCH = 512  # sequences per generate() call


# --- recipes --------------------------------------------------------------------------------------------------
def base_model_recipe(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> dict[str, Any]:
    """Everything that determines the base model (and nothing that does not, e.g. the number of pairs)."""
    return {
        "task": "toy_sentiment",
        "corpus": {
            "seed": data_cfg.seed,
            "size": data_cfg.corpus_size,
            "grammar_version": review_grammar.GRAMMAR_VERSION,
        },
        "tokenizer": {"type": "byte_level_bpe", "vocab_size": model_cfg.vocab_size},
        "model": {k: v for k, v in asdict(model_cfg).items() if k not in NOT_IN_RECIPE},
    }


def _data_fields(data_cfg: ToySentimentConfig, *unused: str) -> dict[str, Any]:
    return {k: v for k, v in asdict(data_cfg).items() if k != "name" and k not in unused}


def pairs_recipe(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> dict[str, Any]:
    return {
        "task": "toy_sentiment_pairs",
        "pairs_version": PAIRS_VERSION,
        "data": _data_fields(data_cfg, "candidates_per_prompt", "self_samples"),
        "base_model": recipe_hash(base_model_recipe(data_cfg, model_cfg)),
        "reward": "vader_compound(prompt + completion)",
    }


def candidates_recipe(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> dict[str, Any]:
    return {
        "task": "toy_sentiment_candidates",
        "candidates_version": CANDIDATES_VERSION,
        "data": _data_fields(data_cfg, "samples_per_prompt", "self_samples"),
        "base_model": recipe_hash(base_model_recipe(data_cfg, model_cfg)),
        "reward": "vader_compound(prompt + completion)",
    }


def negatives_recipe(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> dict[str, Any]:
    """The pairs (whose rejected completions are the negatives) plus the number of self-samples."""
    return {
        "task": "toy_sentiment_negatives",
        "negatives_version": NEGATIVES_VERSION,
        "pairs": recipe_hash(pairs_recipe(data_cfg, model_cfg)),
        "self_samples": data_cfg.self_samples,
    }


# --- corpus and prompts ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _corpus(seed: int, size: int) -> tuple[str, ...]:
    return tuple(review_grammar.generate_reviews(seed, size, stream="corpus"))


def corpus(data_cfg: ToySentimentConfig) -> list[str]:
    """The pretraining corpus (also the tokenizer's training text)."""
    return list(_corpus(data_cfg.seed, data_cfg.corpus_size))


def _prompt(review: str, prompt_words: int) -> str:
    return " ".join(review.split()[:prompt_words])


def _heldout_prompts(data_cfg: ToySentimentConfig, split: str):
    """Endless prompts from held-out reviews of ``split``: reviews in the corpus are skipped."""
    seen = set(_corpus(data_cfg.seed, data_cfg.corpus_size))
    for review in review_grammar.iter_reviews(data_cfg.seed, stream=f"heldout-{split}"):
        if review not in seen:
            yield _prompt(review, data_cfg.prompt_words)


def _take(it, n: int) -> list[str]:
    return [next(it) for _ in range(n)]


def eval_prompts(data_cfg: ToySentimentConfig) -> list[str]:
    """The ``num_test_prompts`` held-out eval prompts: the prompts of the "test" split of :func:`build_pairs`
    (the split holds one pair per prompt, in this order, except prompts whose samples all tied, which are rare
    and dropped). Needs no model."""
    return _take(_heldout_prompts(data_cfg, "test"), data_cfg.num_test_prompts)


def train_prompts(data_cfg: ToySentimentConfig) -> list[str]:
    """The first ``num_train_prompts`` held-out train prompts: what online objectives sample groups for (the same
    stream the training pairs are drawn from). Needs no model."""
    return _take(_heldout_prompts(data_cfg, "train"), data_cfg.num_train_prompts)


# --- base model -----------------------------------------------------------------------------------------------
def build_base_model(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> Path:
    """The cached HF directory of the pretrained base (SFT/reference) model and its tokenizer; built on first use.

    Load with ``AutoModelForCausalLM.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)``.
    Building leaves the caller's RNG states as they were.
    """
    return tiny_lm.cached_base_model(
        BASE_MODEL_KIND,
        base_model_recipe(data_cfg, model_cfg),
        lambda out: _build_base_model(out, data_cfg, model_cfg),
        lambda info, path: (
            f"toy_sentiment: base model built in {info['total_seconds']:.0f}s "
            f"({info['params'] / 1e6:.2f}M params, vocab {info['vocab_size']}, "
            f"train loss {info['final_train_loss']:.3f}) -> {path}"
        ),
    )


def _build_base_model(out: Path, data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> None:
    start = time.perf_counter()
    with tiny_lm.console.status("toy_sentiment: writing corpus and training tokenizer"):
        texts = corpus(data_cfg)
        tokenizer = tiny_lm.train_bpe_tokenizer(
            texts, model_cfg.vocab_size, model_max_length=model_cfg.max_position_embeddings
        )
    prep_s = time.perf_counter() - start
    model = tiny_lm.build_llama(model_cfg, tokenizer)
    stats = tiny_lm.pretrain(model, tokenizer, texts, model_cfg, desc="toy_sentiment: pretraining base model")
    tiny_lm.save_hf_dir(model, tokenizer, out)
    info = {
        "params": tiny_lm.param_count(model),
        "vocab_size": len(tokenizer),
        "corpus_reviews": len(texts),
        "final_train_loss": stats["loss"],
        "seconds": {"corpus_and_tokenizer": prep_s, "pretrain": stats["seconds"]},
        "total_seconds": time.perf_counter() - start,
        "versions": _versions(),
    }
    _write_json(out / INFO_FILE, info)


def load_base_model(path: Path):
    """(model, tokenizer) from a base-model directory, model in eval mode on CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tiny_lm.quiet():
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


# --- sampled datasets: pairs, candidates, negatives ----------------------------------------------------------
Sample = tuple[str, float]  # (completion, reward)


@dataclass(frozen=True)
class _Layout:
    """How one prompt's valid samples become one dataset row (pairs, candidate sets)."""

    unit: str  # what a row is, in messages and build_info
    num_samples: int  # continuations sampled per prompt and round
    done: Callable[[list[Sample]], bool]  # the prompt needs no more sampling rounds
    row: Callable[[str, list[Sample]], dict[str, Any] | None]  # None: the prompt gives no row
    extremes: Callable[[dict[str, Any]], tuple[float, float]]  # (best, worst) reward of a row, for build_info


def _seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31 - 1)


def _valid(tokenizer, prompts: list[str], completions: list[str]) -> list[bool]:
    """A completion is usable when it has content, starts with a space or punctuation (so it cannot extend the
    prompt's last word), holds no U+FFFD (undecodable bytes, which would not re-tokenize as sampled), and the
    tokenized prompt is a prefix of the tokenized prompt + completion (so a trainer that re-tokenizes the pair
    splits it where we sampled)."""
    prompt_ids = tokenizer(prompts)["input_ids"]
    full_ids = tokenizer([p + c for p, c in zip(prompts, completions)])["input_ids"]
    return [
        bool(c.strip())
        and (c[0].isspace() or c[0] in string.punctuation)
        and "\ufffd" not in c
        and f[: len(p)] == p
        for c, p, f in zip(completions, prompt_ids, full_ids)
    ]


def _sample_rounds(
    model,
    tokenizer,
    prompts: list[str],
    data_cfg: ToySentimentConfig,
    tag: str,
    desc: str,
    num_samples: int,
    done: Callable[[list[Sample]], bool],
    exclude: list[str] | None = None,
) -> tuple[list[list[Sample]], dict[str, int], list[float]]:
    """The valid, VADER-scored samples of each prompt: ``num_samples`` per round, prompts not yet ``done``
    resampled, up to ``_ROUNDS`` rounds. A sample equal to the prompt's ``exclude`` text counts as invalid.
    Also returns the counts of samples and the rewards of every valid first-round sample (the base model's
    reward distribution on these prompts)."""
    samples: list[list[Sample]] = [[] for _ in prompts]
    todo = list(range(len(prompts)))
    counts = {"sampled": 0, "invalid": 0}
    first_round: list[float] = []
    for rnd in range(_ROUNDS):
        if not todo:
            break
        batch_prompts = [prompts[i] for i in todo]
        conts = tiny_lm.sample_continuations(
            model,
            tokenizer,
            batch_prompts,
            num_samples=num_samples,
            max_new_tokens=data_cfg.max_new_tokens,
            seed=_seed(data_cfg.seed, tag, rnd),
            batch_size=_GEN_BATCH,
            desc=desc if rnd == 0 else f"{desc} (resampling {len(todo)})",
        )
        flat_p = [p for p, cs in zip(batch_prompts, conts) for _ in cs]
        flat_c = [c for cs in conts for c in cs]
        ok = _valid(tokenizer, flat_p, flat_c)
        if exclude is not None:
            flat_x = [exclude[i] for i, cs in zip(todo, conts) for _ in cs]
            ok = [good and c != x for good, c, x in zip(ok, flat_c, flat_x)]
        rewards = sentiment(flat_p, flat_c)
        if rnd == 0:
            first_round = [r for r, good in zip(rewards, ok) if good]
        counts["sampled"] += len(flat_c)
        counts["invalid"] += ok.count(False)
        k = 0
        for i, cs in zip(todo, conts):
            for c in cs:
                if ok[k]:
                    samples[i].append((c, rewards[k]))
                k += 1
        todo = [i for i in todo if not done(samples[i])]
    return samples, counts, first_round


def _rows_for(
    model, tokenizer, prompts: list[str], data_cfg: ToySentimentConfig, layout: _Layout, tag: str, desc: str
) -> tuple[list[dict[str, Any] | None], dict[str, int], list[float]]:
    """One row (or None) per prompt, the sample counts and the valid first-round rewards."""
    samples, counts, first_round = _sample_rounds(
        model, tokenizer, prompts, data_cfg, tag, desc, layout.num_samples, layout.done
    )
    rows = [layout.row(prompt, got) for prompt, got in zip(prompts, samples)]
    counts["skipped"] = rows.count(None)
    return rows, counts, first_round


def _resolved(samples: list[Sample]) -> bool:
    return len(samples) >= 2 and max(r for _, r in samples) > min(r for _, r in samples)


def _pair_row(prompt: str, got: list[Sample]) -> dict[str, Any] | None:
    """Best vs worst of the valid samples (first best, first worst); None when they all tie."""
    if not _resolved(got):
        return None
    best = max(range(len(got)), key=lambda j: (got[j][1], -j))  # first best
    worst = min(range(len(got)), key=lambda j: (got[j][1], j))  # first worst
    return {
        "prompt": prompt,
        "chosen": got[best][0],
        "rejected": got[worst][0],
        "chosen_reward": got[best][1],
        "rejected_reward": got[worst][1],
    }


def _pairs_layout(data_cfg: ToySentimentConfig) -> _Layout:
    return _Layout(
        "pairs", data_cfg.samples_per_prompt, _resolved, _pair_row, lambda r: (r["chosen_reward"], r["rejected_reward"])
    )


def _candidates_layout(data_cfg: ToySentimentConfig) -> _Layout:
    """The first K valid samples, best first (stable: equal rewards keep sampling order); a prompt whose K
    samples all tie is skipped (uniform labels teach nothing); missing valid samples are resampled."""
    k = data_cfg.candidates_per_prompt

    def row(prompt: str, got: list[Sample]) -> dict[str, Any] | None:
        ranked = sorted(got[:k], key=lambda s: -s[1])
        if len(ranked) < k or ranked[0][1] == ranked[-1][1]:
            return None
        return {"prompt": prompt, "completions": [c for c, _ in ranked], "rewards": [r for _, r in ranked]}

    return _Layout("candidate sets", k, lambda got: len(got) >= k, row, lambda r: (r["rewards"][0], r["rewards"][-1]))


def _train_rows(
    model, tokenizer, data_cfg: ToySentimentConfig, layout: _Layout
) -> tuple[list[dict[str, Any]], dict[str, int], list[float]]:
    """Exactly ``num_train_prompts`` rows, from held-out train prompts in stream order, skipping prompts that
    give none."""
    need = data_cfg.num_train_prompts
    stream = _heldout_prompts(data_cfg, "train")
    rows: list[dict[str, Any]] = []
    sample_rewards: list[float] = []
    totals = {"prompts": 0, "sampled": 0, "invalid": 0, "skipped": 0}
    block, budget = 0, 4 * need + 64  # prompts we are willing to try
    while len(rows) < need:
        missing = need - len(rows)
        n = math.ceil(missing * 1.05) + 8 if block == 0 else math.ceil(missing * 1.5) + 8
        n = min(n, budget - totals["prompts"])
        if n <= 0:
            raise RuntimeError(
                f"toy_sentiment: only {len(rows)}/{need} prompts gave {layout.unit} with a strict preference after "
                f"{totals['prompts']} prompts: the base model's samples barely differ in reward. It is too "
                "weak to write sentiment words: raise model.pretrain_steps, and keep model.vocab_size large "
                "enough for whole-word tokens (>= ~1200; a byte-level model with a tiny vocabulary writes noise)"
            )
        got, counts, rewards = _rows_for(
            model, tokenizer, _take(stream, n), data_cfg, layout, f"train-{block}",
            f"toy_sentiment: sampling train {layout.unit}",
        )  # fmt: skip
        rows.extend(r for r in got if r is not None)
        sample_rewards.extend(rewards)
        totals["prompts"] += n
        for key in ("sampled", "invalid", "skipped"):
            totals[key] += counts[key]
        block += 1
    return rows[:need], totals, sample_rewards


def _cached_splits(
    kind: str,
    recipe: dict[str, Any],
    features: dict[str, Any],
    make: Callable[[], tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]],
    summary: Callable[[dict[str, Any]], str],
) -> datasets.DatasetDict:
    """The cached DatasetDict of ``make() -> ({split: rows}, build info)``; built (and summarised) on first use."""
    import datasets

    built = False

    def build(out: Path) -> None:
        nonlocal built
        built = True
        start = time.perf_counter()
        splits, info = make()
        feats = datasets.Features(features)
        dd = datasets.DatasetDict(
            {
                split: datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in features}, features=feats)
                for split, rows in splits.items()
            }
        )
        with tiny_lm.quiet():
            dd.save_to_disk(str(out))
        _write_json(out / INFO_FILE, {**info, "seconds": time.perf_counter() - start, "versions": _versions()})

    path = cached(kind, recipe, build)
    if built:
        info = json.loads((path / INFO_FILE).read_text())
        tiny_lm.console.print(f"{summary(info)} -> {path}", soft_wrap=True, highlight=False)
    with tiny_lm.quiet():
        return datasets.load_from_disk(str(path))


def _sampled_splits(
    data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig, kind: str, recipe: dict[str, Any], layout: _Layout,
    features: dict[str, Any],
) -> datasets.DatasetDict:  # fmt: skip
    """Train rows from the held-out train stream and one test row per eval prompt, as ``layout`` says; cached."""
    base_dir = build_base_model(data_cfg, model_cfg)

    def make():
        model, tokenizer = load_base_model(base_dir)
        train, train_counts, train_rewards = _train_rows(model, tokenizer, data_cfg, layout)
        test_all, test_counts, test_rewards = _rows_for(
            model, tokenizer, eval_prompts(data_cfg), data_cfg, layout, "test",
            f"toy_sentiment: sampling test {layout.unit}",
        )  # fmt: skip
        test = [r for r in test_all if r is not None]
        info = {
            "base_model": str(base_dir),
            "counts": {"train": train_counts, "test": test_counts},
            "stats": {
                "train": _reward_stats(train, train_rewards, layout),
                "test": _reward_stats(test, test_rewards, layout),
            },
        }
        return {"train": train, "test": test}, info

    def summary(info: dict[str, Any]) -> str:
        s, unit = info["stats"]["train"], layout.unit
        return (
            f"toy_sentiment: {s[unit]} train / {info['stats']['test'][unit]} test {unit} built in "
            f"{info['seconds']:.0f}s (base model reward {s['sample_mean']:+.2f} ± {s['sample_std']:.2f}, "
            f"best-worst gap {s['gap_mean']:.2f})"
        )

    return _cached_splits(kind, recipe, features, make, summary)


def _check_sampling(data_cfg: ToySentimentConfig, name: str, least: int) -> None:
    value = getattr(data_cfg, name)
    if value < least or data_cfg.prompt_words < 1 or data_cfg.max_new_tokens < 1:
        raise ValueError(
            f"toy_sentiment needs {name} >= {least}, prompt_words >= 1, max_new_tokens >= 1; "
            f"got {value}, {data_cfg.prompt_words}, {data_cfg.max_new_tokens}"
        )


def build_pairs(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> datasets.DatasetDict:
    """The cached preference pairs: a DatasetDict with "train" (``num_train_prompts`` rows) and "test" (one row
    per :func:`eval_prompts` prompt, in order; a prompt whose samples all tie is dropped, which is rare).

    Columns: prompt, chosen, rejected (plain text; completions start with a space or punctuation) and chosen_reward,
    rejected_reward (VADER compound of prompt + completion, chosen_reward > rejected_reward).
    """
    import datasets

    _check_sampling(data_cfg, "samples_per_prompt", 2)  # best vs worst
    text, reward = datasets.Value("string"), datasets.Value("float64")
    features = {"prompt": text, "chosen": text, "rejected": text, "chosen_reward": reward, "rejected_reward": reward}
    recipe = pairs_recipe(data_cfg, model_cfg)
    return _sampled_splits(data_cfg, model_cfg, PAIRS_KIND, recipe, _pairs_layout(data_cfg), features)


def build_candidates(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> datasets.DatasetDict:
    """The cached ranked candidates (ADPO): "train" (``num_train_prompts`` rows) and "test" (one row per
    :func:`eval_prompts` prompt whose candidates do not all tie, in order).

    Columns: prompt; completions, ``candidates_per_prompt`` valid base-model samples (as in :func:`build_pairs`),
    sorted best first; rewards, their VADER rewards (non-increasing, first > last). Sampling uses the same seeds
    as the pairs, so with ``candidates_per_prompt == samples_per_prompt`` a prompt's pair is usually the first
    and last of its candidates.
    """
    import datasets

    _check_sampling(data_cfg, "candidates_per_prompt", 2)
    features = {
        "prompt": datasets.Value("string"),
        "completions": datasets.List(datasets.Value("string")),
        "rewards": datasets.List(datasets.Value("float64")),
    }
    recipe = candidates_recipe(data_cfg, model_cfg)
    return _sampled_splits(data_cfg, model_cfg, CANDIDATES_KIND, recipe, _candidates_layout(data_cfg), features)


def build_negatives(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> datasets.DatasetDict:
    """The cached negatives with self-samples (D2O): a DatasetDict with "train" and "test", one row per prompt
    of :func:`build_pairs`'s split (a prompt that cannot get ``self_samples`` valid samples in ``_ROUNDS``
    rounds is dropped, which is rare).

    Columns: prompt; negative, the worst of the prompt's ``samples_per_prompt`` base-model samples (the pair's
    rejected completion: it plays the human-labelled negative); samples, ``self_samples`` fresh samples
    y_i ~ pi_SFT (the base model) with other seeds, valid as in :func:`build_pairs` and never equal to the negative.
    """
    import datasets

    _check_sampling(data_cfg, "self_samples", 1)
    pairs = build_pairs(data_cfg, model_cfg)
    base_dir = build_base_model(data_cfg, model_cfg)
    k = data_cfg.self_samples

    def make():
        model, tokenizer = load_base_model(base_dir)
        splits, counts, stats = {}, {}, {}
        for split in ("train", "test"):
            prompts, negatives = pairs[split]["prompt"], pairs[split]["rejected"]
            rejected_rewards = pairs[split]["rejected_reward"]
            got, counts[split], rewards = _sample_rounds(
                model, tokenizer, prompts, data_cfg, f"self-{split}", f"toy_sentiment: sampling {split} self-samples",
                k, lambda s: len(s) >= k, exclude=negatives,
            )  # fmt: skip
            keep = [i for i, s in enumerate(got) if len(s) >= k]
            splits[split] = [
                {"prompt": prompts[i], "negative": negatives[i], "samples": [c for c, _ in got[i][:k]]} for i in keep
            ]
            counts[split]["skipped"] = len(prompts) - len(keep)
            negative_rewards = [rejected_rewards[i] for i in keep]
            stats[split] = {
                "rows": len(keep),
                "negative_mean": sum(negative_rewards) / max(len(keep), 1),
                "sample_mean": sum(rewards) / max(len(rewards), 1),
            }
        return splits, {"base_model": str(base_dir), "counts": counts, "stats": stats}

    def summary(info: dict[str, Any]) -> str:
        s = info["stats"]["train"]
        return (
            f"toy_sentiment: {s['rows']} train / {info['stats']['test']['rows']} test negatives with {k} self-samples "
            f"built in {info['seconds']:.0f}s (negative reward {s['negative_mean']:+.2f}, "
            f"self-sample reward {s['sample_mean']:+.2f})"
        )

    features = {
        "prompt": datasets.Value("string"),
        "negative": datasets.Value("string"),
        "samples": datasets.List(datasets.Value("string")),
    }
    return _cached_splits(NEGATIVES_KIND, negatives_recipe(data_cfg, model_cfg), features, make, summary)


def _reward_stats(rows: list[dict[str, Any]], sample_rewards: list[float], layout: _Layout) -> dict[str, float]:
    """Base model's reward over all valid first-round samples, and the best ("chosen") and worst ("rejected")
    rewards of the rows."""
    if not rows or not sample_rewards:
        return {layout.unit: len(rows)}
    chosen, rejected = zip(*(layout.extremes(r) for r in rows))
    mean = sum(sample_rewards) / len(sample_rewards)
    return {
        layout.unit: len(rows),
        "samples": len(sample_rewards),
        "sample_mean": mean,
        "sample_std": (sum((x - mean) ** 2 for x in sample_rewards) / len(sample_rewards)) ** 0.5,
        "chosen_mean": sum(chosen) / len(chosen),
        "rejected_mean": sum(rejected) / len(rejected),
        "gap_mean": sum(c - r for c, r in zip(chosen, rejected)) / len(rows),
    }


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    return {pkg: md.version(pkg) for pkg in ("torch", "transformers", "trl", "tokenizers", "vaderSentiment")}


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
