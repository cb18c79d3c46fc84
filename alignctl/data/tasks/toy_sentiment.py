"""The embedded controlled-sentiment task (DESIGN.md section 5): a small, honest version of the IMDB setup of
the DPO, f-DPO and TDPO papers, built locally with no downloads.

1. corpus: ``corpus_size`` reviews from :mod:`review_grammar` (seeded, balanced in VADER sentiment);
2. tokenizer: byte-level BPE trained on the corpus;
3. base model: tiny Llama pretrained on the corpus with TRL's SFTTrainer; the SFT/reference model, saved as an
   ordinary HF directory (``from_pretrained(dir)`` loads model and tokenizer);
4. pairs: prompts are the first ``prompt_words`` words of held-out reviews (never in the corpus); the base model
   samples ``samples_per_prompt`` continuations per prompt; VADER compound of prompt + continuation is the
   reward; best vs worst is one pair.

Steps 1-3 and step 4 are cached separately (:func:`alignctl.data.cache.cached`), each keyed by its recipe.

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
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignctl.data.cache import cached, recipe_hash
from alignctl.data.tasks import review_grammar, tiny_lm
from alignctl.rewards.sentiment import sentiment

if TYPE_CHECKING:
    import datasets

    from alignctl.config import TinyModelConfig, ToySentimentConfig

BASE_MODEL_KIND = "toy_sentiment_base"
PAIRS_KIND = "toy_sentiment_pairs"
PAIRS_VERSION = 1  # bump when pair construction changes
INFO_FILE = "build_info.json"  # written beside the artifact's files: versions, sizes, timings, statistics
_ROUNDS = 3  # sampling rounds for a prompt whose samples all tie before it is skipped
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
        "model": {k: v for k, v in asdict(model_cfg).items() if k not in ("name", "kernel")},
    }


def pairs_recipe(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> dict[str, Any]:
    return {
        "task": "toy_sentiment_pairs",
        "pairs_version": PAIRS_VERSION,
        "data": {k: v for k, v in asdict(data_cfg).items() if k != "name"},
        "base_model": recipe_hash(base_model_recipe(data_cfg, model_cfg)),
        "reward": "vader_compound(prompt + completion)",
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


# --- base model -----------------------------------------------------------------------------------------------
def build_base_model(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> Path:
    """The cached HF directory of the pretrained base (SFT/reference) model and its tokenizer; built on first use.

    Load with ``AutoModelForCausalLM.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)``.
    Building leaves the caller's RNG states as they were.
    """
    built = False

    def build(out: Path) -> None:
        nonlocal built
        built = True
        with tiny_lm.preserved_rng():
            _build_base_model(out, data_cfg, model_cfg)

    path = cached(BASE_MODEL_KIND, base_model_recipe(data_cfg, model_cfg), build)
    if built:
        info = json.loads((path / INFO_FILE).read_text())
        tiny_lm.console.print(
            f"toy_sentiment: base model built in {info['total_seconds']:.0f}s "
            f"({info['params'] / 1e6:.2f}M params, vocab {info['vocab_size']}, "
            f"train loss {info['final_train_loss']:.3f}) -> {path}",
            soft_wrap=True,
            highlight=False,
        )
    return path


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


# --- preference pairs -----------------------------------------------------------------------------------------
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


def _pairs_for(
    model, tokenizer, prompts: list[str], data_cfg: ToySentimentConfig, tag: str, desc: str
) -> tuple[list[dict[str, Any] | None], dict[str, int], list[float]]:
    """One pair (or None) per prompt; prompts whose samples all tie are resampled up to ``_ROUNDS`` rounds.
    Also returns the counts of samples and the rewards of every valid first-round sample (the base model's
    reward distribution on these prompts)."""
    samples: list[list[tuple[str, float]]] = [[] for _ in prompts]
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
            num_samples=data_cfg.samples_per_prompt,
            max_new_tokens=data_cfg.max_new_tokens,
            seed=_seed(data_cfg.seed, tag, rnd),
            batch_size=_GEN_BATCH,
            desc=desc if rnd == 0 else f"{desc} (resampling {len(todo)} tied)",
        )
        flat_p = [p for p, cs in zip(batch_prompts, conts) for _ in cs]
        flat_c = [c for cs in conts for c in cs]
        ok = _valid(tokenizer, flat_p, flat_c)
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
        todo = [i for i in todo if not _resolved(samples[i])]
    rows: list[dict[str, Any] | None] = []
    for prompt, got in zip(prompts, samples):
        if not _resolved(got):
            rows.append(None)
            continue
        best = max(range(len(got)), key=lambda j: (got[j][1], -j))  # first best
        worst = min(range(len(got)), key=lambda j: (got[j][1], j))  # first worst
        rows.append(
            {
                "prompt": prompt,
                "chosen": got[best][0],
                "rejected": got[worst][0],
                "chosen_reward": got[best][1],
                "rejected_reward": got[worst][1],
            }
        )
    counts["skipped"] = rows.count(None)
    return rows, counts, first_round


def _resolved(samples: list[tuple[str, float]]) -> bool:
    return len(samples) >= 2 and max(r for _, r in samples) > min(r for _, r in samples)


def _train_rows(
    model, tokenizer, data_cfg: ToySentimentConfig
) -> tuple[list[dict[str, Any]], dict[str, int], list[float]]:
    """Exactly ``num_train_prompts`` pairs, from held-out train prompts in stream order, skipping tied ones."""
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
                f"toy_sentiment: only {len(rows)}/{need} prompts gave a strict preference after "
                f"{totals['prompts']} prompts: the base model's samples barely differ in reward. It is too "
                "weak to write sentiment words: raise model.pretrain_steps, and keep model.vocab_size large "
                "enough for whole-word tokens (>= ~1200; a byte-level model with a tiny vocabulary writes noise)"
            )
        got, counts, rewards = _pairs_for(
            model, tokenizer, _take(stream, n), data_cfg, f"train-{block}", "toy_sentiment: sampling train pairs"
        )
        rows.extend(r for r in got if r is not None)
        sample_rewards.extend(rewards)
        totals["prompts"] += n
        for key in ("sampled", "invalid", "skipped"):
            totals[key] += counts[key]
        block += 1
    return rows[:need], totals, sample_rewards


def build_pairs(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> datasets.DatasetDict:
    """The cached preference pairs: a DatasetDict with "train" (``num_train_prompts`` rows) and "test" (one row
    per :func:`eval_prompts` prompt, in order; a prompt whose samples all tie is dropped, which is rare).

    Columns: prompt, chosen, rejected (plain text; completions start with a space or punctuation) and chosen_reward,
    rejected_reward (VADER compound of prompt + completion, chosen_reward > rejected_reward).
    """
    import datasets

    if data_cfg.samples_per_prompt < 2 or data_cfg.prompt_words < 1 or data_cfg.max_new_tokens < 1:
        raise ValueError(
            "toy_sentiment needs samples_per_prompt >= 2 (best vs worst), prompt_words >= 1, max_new_tokens >= 1; "
            f"got {data_cfg.samples_per_prompt}, {data_cfg.prompt_words}, {data_cfg.max_new_tokens}"
        )
    base_dir = build_base_model(data_cfg, model_cfg)
    built = False

    def build(out: Path) -> None:
        nonlocal built
        built = True
        start = time.perf_counter()
        model, tokenizer = load_base_model(base_dir)
        train, train_counts, train_rewards = _train_rows(model, tokenizer, data_cfg)
        test_all, test_counts, test_rewards = _pairs_for(
            model, tokenizer, eval_prompts(data_cfg), data_cfg, "test", "toy_sentiment: sampling test pairs"
        )
        test = [r for r in test_all if r is not None]
        columns = ["prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"]
        features = datasets.Features(
            {
                "prompt": datasets.Value("string"),
                "chosen": datasets.Value("string"),
                "rejected": datasets.Value("string"),
                "chosen_reward": datasets.Value("float64"),
                "rejected_reward": datasets.Value("float64"),
            }
        )
        dd = datasets.DatasetDict(
            {
                split: datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in columns}, features=features)
                for split, rows in (("train", train), ("test", test))
            }
        )
        with tiny_lm.quiet():
            dd.save_to_disk(str(out))
        info = {
            "base_model": str(base_dir),
            "counts": {"train": train_counts, "test": test_counts},
            "stats": {
                "train": _reward_stats(train, train_rewards),
                "test": _reward_stats(test, test_rewards),
            },
            "seconds": time.perf_counter() - start,
            "versions": _versions(),
        }
        _write_json(out / INFO_FILE, info)

    path = cached(PAIRS_KIND, pairs_recipe(data_cfg, model_cfg), build)
    if built:
        info = json.loads((path / INFO_FILE).read_text())
        s = info["stats"]["train"]
        tiny_lm.console.print(
            f"toy_sentiment: {s['pairs']} train / {info['stats']['test']['pairs']} test pairs built in "
            f"{info['seconds']:.0f}s (base model reward {s['sample_mean']:+.2f} ± {s['sample_std']:.2f}, "
            f"chosen-rejected gap {s['gap_mean']:.2f}) -> {path}",
            soft_wrap=True,
            highlight=False,
        )
    with tiny_lm.quiet():
        return datasets.load_from_disk(str(path))


def _reward_stats(rows: list[dict[str, Any]], sample_rewards: list[float]) -> dict[str, float]:
    """Base model's reward over all valid first-round samples, and the chosen/rejected rewards of the pairs."""
    if not rows or not sample_rewards:
        return {"pairs": len(rows)}
    chosen = [r["chosen_reward"] for r in rows]
    rejected = [r["rejected_reward"] for r in rows]
    mean = sum(sample_rewards) / len(sample_rewards)
    return {
        "pairs": len(rows),
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
