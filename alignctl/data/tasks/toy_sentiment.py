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

Steps 1-3 are cached here (keyed by :func:`base_model_recipe`). Steps 4, 5, 6 are the general sampled-data
builder (:mod:`alignctl.data.sampled`) called with this task's source (:func:`sampled_source`): the base model
directory, the held-out prompt streams (fingerprinted by :func:`prompts_recipe`), VADER and the config's sampling
settings; each is cached by its recipe (the base model's weight fingerprint, the prompts, the reward, the settings).

Pair layout, chosen so that TRL's DPOTrainer (which tokenizes prompt and prompt + completion and splits at the
common prefix) sees the sampled text where it was sampled: prompts end on a word with no trailing space;
completions are the decoded continuation, starting with a space (or punctuation: "." after a prompt that ends a
sentence); a sample is kept only if the tokenized prompt is a prefix of the tokenized prompt + completion.
Ties (every valid sample with the same reward) give no pair: such prompts are resampled (up to
:data:`alignctl.data.sampled.ROUNDS` rounds) and then skipped.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from alignctl.cache import recipe_hash, write_info
from alignctl.constraints import BelowHalf, NonNegative, Positive, check_ranges
from alignctl.data import sampled
from alignctl.data.base import DatasetEntry, label_noise_field
from alignctl.data.tasks import review_grammar, tiny_lm
from alignctl.models import files
from alignctl.models.schema import NOT_IN_RECIPE
from alignctl.rewards.sentiment import sentiment

if TYPE_CHECKING:
    import datasets

    from alignctl.models.schema import TinyModelConfig

@dataclass
class ToySentimentConfig:
    """The embedded controlled-sentiment task (DESIGN.md section 5)."""

    name: str = "toy_sentiment"
    seed: Annotated[int, NonNegative] = 0
    # generated reviews for tokenizer + pretraining (~1 epoch at 300 x 32)
    corpus_size: Annotated[int, Positive] = 10000
    prompt_words: Annotated[int, Positive] = 4  # a prompt is the first few words of a held-out review
    num_train_prompts: Annotated[int, Positive] = 1024  # preference pairs for training
    num_test_prompts: Annotated[int, Positive] = 128  # held-out prompts/pairs for eval
    samples_per_prompt: Annotated[int, Positive] = 4  # continuations sampled per prompt to build a pair (best vs worst)
    max_new_tokens: Annotated[int, Positive] = 24
    # ranked continuations per prompt for listwise objectives (ADPO)
    candidates_per_prompt: Annotated[int, Positive] = 4
    # Self-samples per human negative (D2O). The spec's default (third-party reimplementation) is 11; 4 scores
    # 1 + 4 sequences per prompt instead of DPO's 2: 200 default steps train in 64 s vs DPO's 43 s on 2 CPU cores.
    self_samples: Annotated[int, Positive] = 4
    # share of flipped training labels (pairwise objectives; alignctl.data.base.label_noise_field)
    label_noise: Annotated[float, BelowHalf] = label_noise_field()

    def __post_init__(self) -> None:
        check_ranges("dataset", self)


BASE_MODEL_KIND = "toy_sentiment_base"
PAIRS_KIND = "toy_sentiment_pairs"  # the cache kinds of alignctl.data.sampled for the source named "toy_sentiment"
CANDIDATES_KIND = "toy_sentiment_candidates"
NEGATIVES_KIND = "toy_sentiment_negatives"


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
    files.save_hf_dir(model, tokenizer, out)
    info = {
        "params": tiny_lm.param_count(model),
        "vocab_size": len(tokenizer),
        "corpus_reviews": len(texts),
        "final_train_loss": stats["loss"],
        "seconds": {"corpus_and_tokenizer": prep_s, "pretrain": stats["seconds"]},
        "total_seconds": time.perf_counter() - start,
    }
    write_info(out, info)


def load_base_model(path: Path):
    """(model, tokenizer) from a base-model directory, model in eval mode on CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with files.quiet():
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


# --- sampled datasets: pairs, candidates, negatives (alignctl.data.sampled) ---------------------------------
_HINT = (
    "It is too weak to write sentiment words: raise model.pretrain_steps, and keep model.vocab_size large enough "
    "for whole-word tokens (>= ~1200; a byte-level model with a tiny vocabulary writes noise)"
)
REWARD_RECIPE = {"name": "sentiment"}  # the reward registry's recipe of VADER compound(prompt + completion)


def prompts_recipe(data_cfg: ToySentimentConfig) -> dict[str, Any]:
    """Everything that determines the train prompt stream and the eval prompts (the sampled data's fingerprint)."""
    return {
        "task": "toy_sentiment_prompts",
        "seed": data_cfg.seed,
        "corpus_size": data_cfg.corpus_size,  # reviews in the corpus are skipped
        "grammar_version": review_grammar.GRAMMAR_VERSION,
        "prompt_words": data_cfg.prompt_words,
        "num_test_prompts": data_cfg.num_test_prompts,
    }


def sampled_source(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> sampled.SampledSource:
    """The general builder's source for this task: the base model (built on first use), the held-out prompt
    streams, VADER and the config's sampling settings; the model samples on CPU."""
    return sampled.SampledSource(
        name="toy_sentiment",
        model_dir=build_base_model(data_cfg, model_cfg),
        train_prompts=lambda: _heldout_prompts(data_cfg, "train"),
        test_prompts=eval_prompts(data_cfg),
        data_fingerprint=recipe_hash(prompts_recipe(data_cfg)),
        reward=sentiment,
        reward_recipe=REWARD_RECIPE,
        samples_per_prompt=data_cfg.samples_per_prompt,
        candidates_per_prompt=data_cfg.candidates_per_prompt,
        self_samples=data_cfg.self_samples,
        max_new_tokens=data_cfg.max_new_tokens,
        seed=data_cfg.seed,
        num_train_rows=data_cfg.num_train_prompts,
        hint=_HINT,
    )


def pairs_recipe(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> dict[str, Any]:
    """The pairs' cache recipe (:func:`alignctl.data.sampled.pairs_recipe`); builds or reuses the base model to
    fingerprint its weights."""
    return sampled.pairs_recipe(sampled_source(data_cfg, model_cfg))


def candidates_recipe(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> dict[str, Any]:
    return sampled.candidates_recipe(sampled_source(data_cfg, model_cfg))


def negatives_recipe(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> dict[str, Any]:
    """The pairs (whose rejected completions are the negatives) plus the number of self-samples."""
    return sampled.negatives_recipe(sampled_source(data_cfg, model_cfg))


def _check_sampling(data_cfg: ToySentimentConfig, name: str, least: int) -> None:
    value = getattr(data_cfg, name)
    if value < least or data_cfg.prompt_words < 1 or data_cfg.max_new_tokens < 1:
        raise ValueError(
            f"toy_sentiment needs {name} >= {least}, prompt_words >= 1, max_new_tokens >= 1; "
            f"got {value}, {data_cfg.prompt_words}, {data_cfg.max_new_tokens}"
        )


def build_pairs(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> datasets.DatasetDict:
    """The cached preference pairs (:func:`alignctl.data.sampled.build_pairs`): a DatasetDict with "train"
    (``num_train_prompts`` rows) and "test" (one row per :func:`eval_prompts` prompt, in order; a prompt whose
    samples all tie is dropped, which is rare).

    Columns: prompt, chosen, rejected (plain text; completions start with a space or punctuation) and chosen_reward,
    rejected_reward (VADER compound of prompt + completion, chosen_reward > rejected_reward).
    """
    _check_sampling(data_cfg, "samples_per_prompt", 2)  # best vs worst
    return sampled.build_pairs(sampled_source(data_cfg, model_cfg))


def build_candidates(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> datasets.DatasetDict:
    """The cached ranked candidates (ADPO, :func:`alignctl.data.sampled.build_candidates`): "train"
    (``num_train_prompts`` rows) and "test" (one row per :func:`eval_prompts` prompt whose candidates do not all
    tie, in order).

    Columns: prompt; completions, ``candidates_per_prompt`` valid base-model samples (as in :func:`build_pairs`),
    sorted best first; rewards, their VADER rewards (non-increasing, first > last). Sampling uses the same seeds
    as the pairs, so with ``candidates_per_prompt == samples_per_prompt`` a prompt's pair is usually the first
    and last of its candidates.
    """
    _check_sampling(data_cfg, "candidates_per_prompt", 2)
    return sampled.build_candidates(sampled_source(data_cfg, model_cfg))


def build_negatives(data_cfg: ToySentimentConfig, model_cfg: TinyModelConfig) -> datasets.DatasetDict:
    """The cached negatives with self-samples (D2O, :func:`alignctl.data.sampled.build_negatives`): "train" and
    "test", one row per prompt of :func:`build_pairs`'s split (a prompt that cannot get ``self_samples`` valid
    samples in :data:`alignctl.data.sampled.ROUNDS` rounds is dropped, which is rare).

    Columns: prompt; negative, the worst of the prompt's ``samples_per_prompt`` base-model samples (the pair's
    rejected completion: it plays the human-labelled negative); samples, ``self_samples`` fresh samples
    y_i ~ pi_SFT (the base model) with other seeds, valid as in :func:`build_pairs` and never equal to the negative.
    """
    _check_sampling(data_cfg, "self_samples", 1)
    _check_sampling(data_cfg, "samples_per_prompt", 2)
    return sampled.build_negatives(sampled_source(data_cfg, model_cfg))




# --- registry entry -------------------------------------------------------------------------------------------
def load(data_cfg: ToySentimentConfig):
    """The train and eval prompts as a DatasetDict (rows="prompts": pairs are sampled from the SFT model)."""
    from datasets import Dataset, DatasetDict

    return DatasetDict({
        "train": Dataset.from_dict({"prompt": train_prompts(data_cfg)}),
        "test": Dataset.from_dict({"prompt": eval_prompts(data_cfg)}),
    })  # fmt: skip


ENTRY = DatasetEntry(
    name="toy_sentiment",
    schema=ToySentimentConfig,
    description="embedded controlled-sentiment task: review openings, pairs sampled from the base model",
    rows="prompts",
    load=load,
    embedded_model=lambda cfg: build_base_model(cfg.dataset, cfg.model),
    prompt_stream=lambda data_cfg: _heldout_prompts(data_cfg, "train"),
)
