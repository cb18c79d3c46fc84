"""The embedded arithmetic task (DESIGN.md section 5): generated questions with exact answers, a tiny base model
pretrained on worked solutions to partial accuracy, and the ``exact_match`` reward; the testbed for online RL
and pass@k. Built locally with no downloads.

1. questions (:mod:`arith_problems`): prompts ``"Q: 23+58=? A:"``; completions are worked solutions, column by
   column, ending on the parseable final answer::

       Q: 23+58=? A: 3+8=11, carry 1; 2+5+1=8. The answer is 81.
       Q: 82-57=? A: 12-7=5, borrow 1; 8-5-1=2. The answer is 25.

   A fixed hash of (seed, question) puts about 10% of all questions on the held-out side, so the splits are
   disjoint by question whatever their sizes:
   - "train": the first ``num_train_prompts`` train-side questions with ``digits``-digit operands and the
     ``operations`` (default: 2-digit addition); the training prompts (online RL);
   - "test": the first ``num_test_prompts`` held-out questions of that kind (eval; never in the corpus);
   - "ood": the first ``num_ood_prompts`` held-out questions with ``ood_digits``-digit operands and the
     ``ood_operations`` (default: 2-digit subtraction, never negative), same format: outside the training
     prompts' distribution, what alignment training may make the model forget;
2. corpus: the worked solutions of ``corpus_size`` train-side questions (the first ones of the "train" stream,
   so a superset of the "train" split), ``ood_corpus_share`` of them ood-kind (train side, never the "ood"
   split's questions) so that the base model starts with some of that skill, and ``slip_rate`` of them careless
   (one column's result off by one, the rest consistent with it); optionally (``hard_fact_share``) a writer who
   misremembers some column facts, so that some questions are ones the base model rarely gets right;
3. tokenizer: byte-level BPE with every digit its own token (merges never span digits);
4. base model: tiny Llama pretrained on the corpus with TRL's SFTTrainer for ``pretrain_steps`` steps (this
   task's budget, replacing ``model.pretrain_steps``; batches drawn at random, not grouped by length), saved
   as an ordinary HF directory.

Why the base model is right only part of the time: it learns the column arithmetic well within the budget and
then slips about as often as its corpus does, so at temperature 1 its pass@1 sits near ``1 - slip_rate`` (about
50% at the defaults; ood-kind lower, being a quarter of the corpus) while the right answer stays its most
likely one: what online RL can sharpen and pass@k measures. Tying the accuracy to the corpus rather than to an
undertrained model keeps it steady across seeds and machines (an undertrained model sits on the steep edge of
learning to copy digits). ``build_info.json`` records the measured pass@1 on "test" and "ood".

Only steps 2-4 are cached (:func:`alignctl.cache.cached`, keyed by their recipe); questions are cheap and
regenerated on demand. A completion's final answer is scored by :func:`alignctl.rewards.exact_match.exact_match`,
which recomputes the expected answer from the prompt.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from alignctl.cache import write_info
from alignctl.constraints import BelowHalf, NonNegative, Positive, Probability, UnitBelowOne, check_ranges
from alignctl.data.base import DatasetEntry, label_noise_field
from alignctl.data.tasks import tiny_lm
from alignctl.errors import ConfigError
from alignctl.models import files
from alignctl.models.schema import NOT_IN_RECIPE
from alignctl.rewards import arith_problems
from alignctl.rewards.arith_problems import MAX_OPERAND_DIGITS, OPERATIONS, Problem
from alignctl.rewards.exact_match import exact_match

if TYPE_CHECKING:
    from alignctl.models.schema import TinyModelConfig

@dataclass
class ToyArithConfig:
    """The embedded arithmetic task (DESIGN.md section 5): exact answers, for online RL and pass@k."""

    name: str = "toy_arith"
    seed: Annotated[int, NonNegative] = 0
    operations: str = "+"  # train/test operations, any of + - (a-b has a >= b: answers are never negative)
    digits: Annotated[int, Positive] = 2  # operand length of the train and test splits
    ood_operations: str = "-"  # operations of the "ood" split (same format; must differ if the digits are equal)
    ood_digits: Annotated[int, Positive] = 2  # operand length of the "ood" split
    # worked solutions of train-side questions, for tokenizer + pretraining
    corpus_size: Annotated[int, Positive] = 8000
    # Share of the corpus that is ood-kind (train-side questions, never the ood split's): the base model learns
    # some of that skill, but less than the in-distribution one, for alignment training to keep or forget.
    ood_corpus_share: Annotated[float, UnitBelowOne] = 0.25
    # Share of the corpus's worked solutions with one careless slip (a column's result off by one, the rest
    # consistent with it): the base model learns to slip about as often, so its temperature-1 pass@1 sits near
    # 1 - slip_rate while the right answer stays its most likely one (what RL can sharpen and pass@k sees).
    slip_rate: Annotated[float, UnitBelowOne] = 0.5
    # Share of the column facts (a column's terms: two digits and the carry or borrow) that the corpus's writer
    # misremembers: each is written off by one, the same way, in ``hard_fact_slip_rate`` of the columns that use
    # it. Questions that need such a fact are ones the base model rarely gets right (per-sample success of a few
    # percent): the headroom pass@k at large k measures, and what an RL objective can keep or lose (DPH-RL).
    hard_fact_share: Annotated[float, UnitBelowOne] = 0.0
    hard_fact_slip_rate: Annotated[float, Probability] = 0.97
    # This task's pretraining budget, replacing model.pretrain_steps (tuned for toy_sentiment's corpus): the
    # default tiny model learns the column arithmetic within it (~60 s on one CPU thread).
    pretrain_steps: Annotated[int, Positive] = 500
    # training prompts (online RL); their worked solutions are in the corpus
    num_train_prompts: Annotated[int, Positive] = 1024
    # held-out in-distribution questions for eval (never in the corpus)
    num_test_prompts: Annotated[int, Positive] = 256
    # held-out ood-kind questions: what alignment training may make the model forget
    num_ood_prompts: Annotated[int, Positive] = 256
    # completion budget: a worked solution is <= 26 tokens at 2 digits, <= 40 at 3
    max_new_tokens: Annotated[int, Positive] = 64
    # Sampling pairs / candidates / self-samples from the base model for offline objectives (scored by exact_match:
    # a prompt whose samples are all right or all wrong gives no pair)
    samples_per_prompt: Annotated[int, Positive] = 4
    candidates_per_prompt: Annotated[int, Positive] = 4
    self_samples: Annotated[int, Positive] = 4
    # share of flipped training labels (pairwise objectives; alignctl.data.base.label_noise_field)
    label_noise: Annotated[float, BelowHalf] = label_noise_field()

    def __post_init__(self) -> None:
        check_ranges("dataset", self)
        for key in ("operations", "ood_operations"):
            ops = getattr(self, key)
            if not isinstance(ops, str) or not ops or set(ops) - set(OPERATIONS) or len(set(ops)) != len(ops):
                raise ConfigError(f"dataset.{key}={ops!r} is not valid; use distinct characters of {OPERATIONS!r}")
        for key in ("digits", "ood_digits"):
            if getattr(self, key) > MAX_OPERAND_DIGITS:
                raise ConfigError(
                    f"dataset.{key}={getattr(self, key)} is out of range; it must be <= {MAX_OPERAND_DIGITS}"
                )
        if self.ood_digits == self.digits and set(self.ood_operations) & set(self.operations):
            raise ConfigError(
                f"dataset.ood_operations={self.ood_operations!r} shares an operation with dataset.operations="
                f"{self.operations!r} at the same dataset.ood_digits={self.ood_digits}: the ood split would not be "
                "out of distribution; change the operations or the digits"
            )


BASE_MODEL_KIND = "toy_arith_base"
SPLITS = ("train", "test", "ood")
# Batches drawn at random: grouped by length (toy_sentiment's choice), a batch holds only questions with the same
# carries, and the model learned to copy operand digits far more slowly (not within 600 steps when measured).
PRETRAIN_SAMPLING = "random"
_MEASURE_SAMPLES = 4  # samples per prompt for the pass@1 recorded in build_info
_GEN_BATCH = 512  # sequences per generate() call


# --- recipe ---------------------------------------------------------------------------------------------------
def pretrain_config(data_cfg: ToyArithConfig, model_cfg: TinyModelConfig) -> TinyModelConfig:
    """The model config the base model is built with: ``model_cfg`` with this task's pretraining budget."""
    return dataclasses.replace(model_cfg, pretrain_steps=data_cfg.pretrain_steps)


def base_model_recipe(data_cfg: ToyArithConfig, model_cfg: TinyModelConfig) -> dict[str, Any]:
    """Everything that determines the base model (and nothing that does not, e.g. the number of prompts)."""
    model = pretrain_config(data_cfg, model_cfg)
    return {
        "task": "toy_arith",
        "corpus": {
            "seed": data_cfg.seed,
            "size": data_cfg.corpus_size,
            "digits": data_cfg.digits,
            "operations": data_cfg.operations,
            "ood_digits": data_cfg.ood_digits,
            "ood_operations": data_cfg.ood_operations,
            "ood_share": data_cfg.ood_corpus_share,
            "slip_rate": data_cfg.slip_rate,
            "hard_fact_share": data_cfg.hard_fact_share,
            "hard_fact_slip_rate": data_cfg.hard_fact_slip_rate,
            "problems_version": arith_problems.PROBLEMS_VERSION,
            "test_share": arith_problems.TEST_SHARE,
        },
        "tokenizer": {"type": "byte_level_bpe_individual_digits", "vocab_size": model.vocab_size},
        "model": {k: v for k, v in dataclasses.asdict(model).items() if k not in NOT_IN_RECIPE},
        "pretrain_sampling": PRETRAIN_SAMPLING,
    }


# --- questions ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _problems(seed: int, digits: int, operations: str, n: int, side: str) -> tuple[Problem, ...]:
    return tuple(arith_problems.problems(seed, digits, operations, n, side))


def problems(data_cfg: ToyArithConfig, split: str) -> list[Problem]:
    """The questions of ``split`` ("train", "test" or "ood"), in order."""
    c = data_cfg
    if split == "train":
        return list(_problems(c.seed, c.digits, c.operations, c.num_train_prompts, "train"))
    if split == "test":
        return list(_problems(c.seed, c.digits, c.operations, c.num_test_prompts, "test"))
    if split == "ood":
        return list(_problems(c.seed, c.ood_digits, c.ood_operations, c.num_ood_prompts, "test"))
    raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")


def prompts(data_cfg: ToyArithConfig, split: str) -> list[str]:
    """The prompts of ``split``, e.g. ``"Q: 23+58=? A:"`` (completions start with a space). Needs no model."""
    return [p.prompt for p in problems(data_cfg, split)]


def answers(data_cfg: ToyArithConfig, split: str) -> list[str]:
    """The exact answers of ``split`` as decimal strings, aligned with :func:`prompts`."""
    return [str(p.answer) for p in problems(data_cfg, split)]


def solutions(data_cfg: ToyArithConfig, split: str) -> list[str]:
    """Reference completions (worked solutions, leading space included), aligned with :func:`prompts`."""
    return [p.solution() for p in problems(data_cfg, split)]


def eval_prompts(data_cfg: ToyArithConfig) -> list[str]:
    """The held-out in-distribution eval prompts: the "test" split."""
    return prompts(data_cfg, "test")


def expected_answer(prompt: str) -> str | None:
    """The exact answer to the question a prompt asks, computed from the prompt; None if it asks none."""
    question = arith_problems.parse_question(prompt)
    return None if question is None else str(question.answer)


def corpus(data_cfg: ToyArithConfig) -> list[str]:
    """The pretraining corpus (also the tokenizer's training text): worked solutions of ``corpus_size`` train-side
    questions, ``ood_corpus_share`` of them ood-kind (after the in-distribution ones), ``slip_rate`` of them
    careless (one column's result off by one, the rest consistent with it: see :meth:`Problem.solution`)."""
    c = data_cfg
    n_ood = round(c.corpus_size * c.ood_corpus_share)
    docs = _problems(c.seed, c.digits, c.operations, c.corpus_size - n_ood, "train")
    if n_ood:
        docs += _problems(c.seed, c.ood_digits, c.ood_operations, n_ood, "train")
    rng = random.Random(f"alignctl-arith-slips:{arith_problems.PROBLEMS_VERSION}:{c.seed}")
    misfact = _misremembered_facts(c) if c.hard_fact_share > 0 else None
    texts = []
    for p in docs:
        careless, column, delta = rng.random() < c.slip_rate, rng.randrange(p.width), rng.choice((-1, 1))
        texts.append(p.text((column, delta) if careless else None, misfact))
    return texts


def hard_fact(data_cfg: ToyArithConfig, op: str, terms: tuple[int, ...]) -> int:
    """The offset (+1 or -1) with which the corpus's writer misremembers the column fact ``terms`` of ``op``
    (two digits, then the carry or borrow as written), or 0 for a fact it knows: a fixed property of (seed,
    fact), about ``hard_fact_share`` of all facts."""
    key = f"alignctl-arith-hard-fact:{data_cfg.seed}:{op}:{','.join(map(str, terms))}".encode()
    h = int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
    if h >= data_cfg.hard_fact_share * 2**64:
        return 0
    return 1 if h % 2 else -1


def _misremembered_facts(data_cfg: ToyArithConfig):
    """The corpus writer's ``misfact`` (see :meth:`Problem.solution`): a hard fact's offset in
    ``hard_fact_slip_rate`` of the columns that use it, drawn from its own stream (the careless slips' draws,
    and so the corpus without hard facts, stay as they were)."""
    rng = random.Random(f"alignctl-arith-hard-facts:{arith_problems.PROBLEMS_VERSION}:{data_cfg.seed}")

    def misfact(op: str, terms: tuple[int, ...]) -> int:
        delta = hard_fact(data_cfg, op, terms)
        return delta if delta and rng.random() < data_cfg.hard_fact_slip_rate else 0

    return misfact


# --- base model -----------------------------------------------------------------------------------------------
def build_base_model(data_cfg: ToyArithConfig, model_cfg: TinyModelConfig) -> Path:
    """The cached HF directory of the pretrained base model and its tokenizer; built on first use.

    Load with ``AutoModelForCausalLM.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)``.
    Building leaves the caller's RNG states as they were.
    """
    return tiny_lm.cached_base_model(
        BASE_MODEL_KIND,
        base_model_recipe(data_cfg, model_cfg),
        lambda out: _build_base_model(out, data_cfg, model_cfg),
        lambda info, path: (
            f"toy_arith: base model built in {info['total_seconds']:.0f}s "
            f"({info['params'] / 1e6:.2f}M params, vocab {info['vocab_size']}, "
            f"train loss {info['final_train_loss']:.3f}, "
            f"pass@1 test {info['pass_at_1']['test']:.2f} / ood {info['pass_at_1']['ood']:.2f}) -> {path}"
        ),
    )


def _build_base_model(out: Path, data_cfg: ToyArithConfig, model_cfg: TinyModelConfig) -> None:
    start = time.perf_counter()
    cfg = pretrain_config(data_cfg, model_cfg)
    with tiny_lm.console.status("toy_arith: writing corpus and training tokenizer"):
        texts = corpus(data_cfg)
        tokenizer = tiny_lm.train_bpe_tokenizer(
            texts, cfg.vocab_size, model_max_length=cfg.max_position_embeddings, individual_digits=True
        )
    prep_s = time.perf_counter() - start
    model = tiny_lm.build_llama(cfg, tokenizer)
    stats = tiny_lm.pretrain(
        model, tokenizer, texts, cfg, desc="toy_arith: pretraining base model", sampling=PRETRAIN_SAMPLING
    )
    build_s = time.perf_counter() - start
    files.save_hf_dir(model, tokenizer, out)
    measure_start = time.perf_counter()
    pass_at_1 = {
        split: pass_rate(model, tokenizer, data_cfg, split, _MEASURE_SAMPLES, seed=data_cfg.seed)
        for split in ("test", "ood")
    }
    info = {
        "params": tiny_lm.param_count(model),
        "vocab_size": len(tokenizer),
        "corpus_documents": len(texts),
        "pretrain_steps": cfg.pretrain_steps,
        "final_train_loss": stats["loss"],
        "pass_at_1": pass_at_1,  # measured when built (the split sizes of that config; not part of the recipe)
        "pass_at_1_samples_per_prompt": _MEASURE_SAMPLES,
        "pass_at_1_prompts": {"test": data_cfg.num_test_prompts, "ood": data_cfg.num_ood_prompts},
        "pass_at_1_max_new_tokens": data_cfg.max_new_tokens,
        "seconds": {
            "corpus_and_tokenizer": prep_s,
            "pretrain": stats["seconds"],
            "pass_at_1": time.perf_counter() - measure_start,
        },
        "build_seconds": build_s,  # corpus + tokenizer + pretraining
        "total_seconds": time.perf_counter() - start,
    }
    write_info(out, info)


def pass_rate(model, tokenizer, data_cfg: ToyArithConfig, split: str, num_samples: int, seed: int = 0) -> float:
    """Mean exact-match reward of ``num_samples`` temperature-1 samples per prompt of ``split`` (pass@1)."""
    qs = prompts(data_cfg, split)
    conts = tiny_lm.sample_continuations(
        model, tokenizer, qs, num_samples=num_samples, max_new_tokens=data_cfg.max_new_tokens, seed=seed,
        batch_size=_GEN_BATCH, desc=f"toy_arith: measuring {split} pass@1",
    )  # fmt: skip
    rewards = exact_match([q for q, cs in zip(qs, conts) for _ in cs], [c for cs in conts for c in cs])
    return sum(rewards) / max(len(rewards), 1)



# --- registry entry -------------------------------------------------------------------------------------------
def load(data_cfg: ToyArithConfig):
    """The prompts of every split as a DatasetDict (train, test, ood); a prompt carries its own answer."""
    from datasets import Dataset, DatasetDict

    return DatasetDict({split: Dataset.from_dict({"prompt": prompts(data_cfg, split)}) for split in SPLITS})


ENTRY = DatasetEntry(
    name="toy_arith",
    schema=ToyArithConfig,
    description="embedded arithmetic task: worked solutions, exact answers, an out-of-distribution split",
    rows="prompts",
    load=load,
    rewards=("exact_match", "function"),
    embedded_model=lambda cfg: build_base_model(cfg.dataset, cfg.model),
    extra_splits=("ood",),
)
