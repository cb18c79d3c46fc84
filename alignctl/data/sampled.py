"""Preference data sampled from an SFT model and scored by a reward, as the DPO, f-DPO and TDPO papers build it for
IMDB: sample K completions per prompt from the SFT model, score them, keep best vs worst (pairs), all K ranked
(candidates, ADPO), or the worst plus fresh self-samples (negatives, D2O). Cached by recipe
(:func:`alignctl.cache.cached`). Nothing here knows about a task: a :class:`SampledSource` says which model,
prompts and reward; ``toy_sentiment`` is one caller, a user's HF model directory with IMDB/GSM8K prompts another.

Sampling: ancestral (temperature 1, no top-k/top-p), in rounds seeded from ``(seed, split/block tag, round)``,
row-seeded within a round (:func:`alignctl.data.tasks.tiny_lm.sample_continuations`: sample j of the round's
prompt i keyed by the round's seed and ``(i, j)``, whatever the batching; prompts of similar length are batched
together, ``batch_size`` sequences per ``generate()`` call, which is not part of the recipe). A sample is kept only if it is valid
(:func:`_valid`). The valid samples of a round are scored with one call of the reward (a model-based reward
should batch internally; invalid samples are never scored). A prompt that is not done after a round (pairs: its valid samples all tie, or fewer than
two; candidates: fewer than K valid) is resampled, up to :data:`ROUNDS` rounds, then gives no row. A binary reward
(exact_match, 1/0) needs nothing special: a prompt whose samples are all right or all wrong ties and gives no pair.

Splits: "test" holds one row per test prompt that gives one, in order. "train" takes prompts from the train
prompts in order, in blocks, until ``num_train_rows`` rows exist (a prompt gives at most one row, so a finite
list gives at most one row per prompt). A finite list that runs out gives the rows it can (``build_info.json``
says ``"exhausted": true``); building fails only when it gives none. An endless stream is tried for at most
``4 * num_train_rows + 64`` prompts, then building fails (the model's samples barely differ in reward).

Cache keys (the recipes, :func:`pairs_recipe` and friends): the builder version, the model fingerprint
(:func:`model_fingerprint`: config, tokenizer and weight bytes), the data fingerprint (the caller's; see
:func:`fingerprint_texts`), the reward recipe and the settings that change the rows. The device is not in the key
(it is recorded in ``build_info.json``): rows built on one device are reused on another.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import string
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignctl.cache import INFO_FILE, cached, cached_path, canonical_json, recipe_hash, write_info
from alignctl.data.tasks import tiny_lm
from alignctl.errors import UsageError
from alignctl.models import files

if TYPE_CHECKING:
    import datasets

VERSION = 2  # bump when sampling, validity, layouts or row selection change (every sampled key changes)
ROUNDS = 3  # sampling rounds for a prompt (all its samples tie, or too few are valid) before it is skipped
DTYPES = ("float32", "bfloat16", "float16")
Reward = Callable[[list[str], list[str]], list[float]]  # (prompts, completions) -> one score per completion
Sample = tuple[str, float]  # (completion, reward)


class NoRowsError(UsageError, RuntimeError):
    """Too few train prompts gave a row: the reward never separated the model's samples, or too few were valid.
    Bad input (a reward, model or settings that cannot give this data): one line, exit code 2; a RuntimeError too,
    as this failure was before it was a UsageError."""


# --- the source -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampledSource:
    """Everything that determines the sampled rows, plus where to run and how to name them.

    ``train_prompts``: a finite collection (a list, a tuple, anything with ``len``; stored as a tuple), or an
    endless (or long) stream: a zero-argument function returning a fresh iterator, a re-iterable without ``len``,
    or an iterator/generator. An iterator can be read once: a second build that needs it from the start (not
    a cache hit) raises, so build each source once (``build_negatives`` builds its pairs first, which is fine) or
    pass a function.
    ``test_prompts``: a finite collection (may be empty). ``data_fingerprint`` identifies both (the caller's
    choice: :func:`fingerprint_texts` of finite lists, or a hash of the recipe that generates a stream).
    ``reward_recipe``: JSON-able; it identifies ``reward`` in cache keys.
    ``num_train_rows``: train rows wanted; None means one per train prompt where possible (finite lists only).
    """

    name: str  # in messages, and the cache kinds "<name>_pairs", "<name>_candidates", "<name>_negatives"
    model_dir: str | Path  # the SFT model: an HF directory (AutoModelForCausalLM + AutoTokenizer)
    train_prompts: Any  # see above
    test_prompts: Any
    data_fingerprint: str
    reward: Reward = field(compare=False)
    reward_recipe: Any
    samples_per_prompt: int = 4  # pairs: best vs worst of these
    candidates_per_prompt: int = 4  # candidates: K kept, ranked best first
    self_samples: int = 4  # negatives: fresh samples per negative
    max_new_tokens: int = 64
    seed: int = 0
    num_train_rows: int | None = None
    device: str = "cpu"  # where the model runs; not in the cache key
    dtype: str = "float32"  # the model's dtype while sampling (one of DTYPES)
    batch_size: int = 512  # sequences per generate() call (memory and speed; the rows do not depend on it)
    hint: str = ""  # appended to the error raised when too few train prompts give rows: what to change
    _streamed: bool = field(default=False, init=False, repr=False, compare=False)  # an iterator was read

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\") or self.name.startswith("."):
            raise ValueError(f"a sampled source's name must be a plain name, got {self.name!r}")
        train = self.train_prompts
        if isinstance(train, str) or isinstance(self.test_prompts, str):
            raise TypeError(f"{self.name}: prompts must be a collection of strings, not one string")
        if not callable(train) and not isinstance(train, Iterator) and hasattr(train, "__len__"):
            object.__setattr__(self, "train_prompts", tuple(train))
        object.__setattr__(self, "test_prompts", tuple(self.test_prompts))
        finite = self.test_prompts + (self.train_prompts if isinstance(self.train_prompts, tuple) else ())
        bad = next((p for p in finite if not isinstance(p, str)), None)
        if bad is not None:
            kind = type(bad).__name__
            raise TypeError(f"{self.name}: prompts must be strings (rendered text), got a {kind}: {bad!r:.80}")
        if self.num_train_rows is None and not self.finite:
            raise ValueError(f"{self.name}: num_train_rows is needed with an endless train prompt stream")
        canonical_json({"reward": self.reward_recipe})  # JSON-able, or raises now
        checks = {"max_new_tokens": 1, "batch_size": 1, "num_train_rows": 1}
        for key, least in checks.items():
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < least):
                raise ValueError(f"{self.name} needs {key} >= {least}, got {value!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"{self.name}: dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    @property
    def finite(self) -> bool:
        """The train prompts are a finite collection (a tuple), not a stream."""
        return isinstance(self.train_prompts, tuple)

    def train_stream(self) -> Iterator[str]:
        """The train prompts from the start (an iterator given as ``train_prompts``: once only)."""
        train = self.train_prompts
        if isinstance(train, Iterator):
            if self._streamed:
                raise RuntimeError(
                    f"{self.name}: train_prompts is an iterator and a build already read it; pass a function "
                    "returning a fresh iterator (or a list) to build more than one dataset from this source"
                )
            object.__setattr__(self, "_streamed", True)
            return train
        return iter(train() if callable(train) else train)


def fingerprint_texts(texts: Iterable[str]) -> str:
    """sha256 (hex) of a sequence of texts, order and boundaries included (``["ab", "c"]`` != ``["a", "bc"]``)."""
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


# --- recipes --------------------------------------------------------------------------------------------------
def _recipe(source: SampledSource, builder: str, **settings: Any) -> dict[str, Any]:
    return {
        "builder": builder,
        "version": VERSION,
        "model": files.model_fingerprint(source.model_dir),
        "data": source.data_fingerprint,
        "reward": source.reward_recipe,
        "settings": {
            "max_new_tokens": source.max_new_tokens,
            "seed": source.seed,
            "num_train_rows": source.num_train_rows,
            "dtype": source.dtype,
            **settings,
        },
    }


def pairs_recipe(source: SampledSource) -> dict[str, Any]:
    """What determines the pairs (reads the model's files to fingerprint them)."""
    return _recipe(source, "sampled_pairs", samples_per_prompt=source.samples_per_prompt)


def candidates_recipe(source: SampledSource) -> dict[str, Any]:
    return _recipe(source, "sampled_candidates", candidates_per_prompt=source.candidates_per_prompt)


def negatives_recipe(source: SampledSource, pairs: datasets.DatasetDict | None = None) -> dict[str, Any]:
    """The pairs whose rejected completions are the negatives (the recipe of :func:`build_pairs`, or the given
    pairs' (prompt, rejected) texts with what the self-samples depend on) plus the number of self-samples."""
    if pairs is None:
        origin: dict[str, Any] = {"pairs": recipe_hash(pairs_recipe(source))}
    else:
        origin = {
            "given_pairs": _pairs_fingerprint(pairs),
            "model": files.model_fingerprint(source.model_dir),
            "reward": source.reward_recipe,  # scores the self-samples (build_info statistics only)
            "settings": {
                "max_new_tokens": source.max_new_tokens,
                "seed": source.seed,
                "dtype": source.dtype,
            },
        }
    return {"builder": "sampled_negatives", "version": VERSION, **origin, "self_samples": source.self_samples}


def _pairs_fingerprint(pairs: datasets.DatasetDict) -> str:
    texts: list[str] = []
    for split in ("train", "test"):
        prompts, rejected = pairs[split]["prompt"], pairs[split]["rejected"]
        texts += [split, str(len(prompts)), *prompts, *rejected]
    return fingerprint_texts(texts)


def artifact_path(source: SampledSource, what: str) -> Path:
    """Where the cached "pairs", "candidates" or "negatives" of ``source`` live (built or not; reads the model's
    files to fingerprint them). Its ``build_info.json`` holds the counts (prompts tried, samples drawn, invalid,
    skipped; ``exhausted`` when a finite train list ran out), reward statistics, device and timings."""
    recipes = {"pairs": pairs_recipe, "candidates": candidates_recipe, "negatives": negatives_recipe}
    if what not in recipes:
        raise ValueError(f"what must be one of {', '.join(recipes)}, got {what!r}")
    return cached_path(f"{source.name}_{what}", recipes[what](source))


# --- model, validity, sampling rounds -------------------------------------------------------------------------
def load_model(source: SampledSource):
    """(model, tokenizer) from ``source.model_dir``: the model in eval mode, in ``source.dtype``, on
    ``source.device``. A tokenizer with no pad token pads with its EOS token (sampling pads on the left)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with files.quiet():
        model = AutoModelForCausalLM.from_pretrained(source.model_dir, dtype=getattr(torch, source.dtype))
        model = model.to(source.device).eval()
        tokenizer = AutoTokenizer.from_pretrained(source.model_dir)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UsageError(f"{source.name}: the tokenizer of {source.model_dir} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31 - 1)


def _special_tokens(tokenizer) -> tuple[str, ...]:
    specials = set(tokenizer.all_special_tokens)
    specials.update(t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values())
    return tuple(s for s in specials if s)


def _valid(tokenizer, prompts: list[str], completions: list[str]) -> list[bool]:
    """Whether each completion is usable. A completion is usable when:

    - it has content (not only whitespace) and holds no U+FFFD (undecodable bytes, which would not re-tokenize
      as sampled);
    - the tokenized prompt is a prefix of the tokenized prompt + completion (so a trainer that re-tokenizes the
      pair, as TRL's DPOTrainer does, splits it where we sampled);
    - when the prompt ends in a visible character (not whitespace, not a newline, not the end of one of the
      tokenizer's special or added tokens): it starts with whitespace or ASCII punctuation, so it cannot extend
      the prompt's last word ("The plot" + "s"). After a prompt ending in whitespace, a newline or a special
      token (a chat-rendered prompt: "...<|im_start|>assistant\\n"), a completion may start with a letter.

    The prefix rule still applies everywhere: after a prompt ending in a plain space, a byte-level BPE usually
    merges that space into the completion's first word, and such samples are dropped (end prompts on a word).
    """
    prompt_ids = tokenizer(prompts)["input_ids"]
    full_ids = tokenizer([p + c for p, c in zip(prompts, completions)])["input_ids"]
    specials = _special_tokens(tokenizer)

    def open_word(prompt: str) -> bool:  # a completion starting with a letter would extend the last word
        return bool(prompt) and not prompt[-1].isspace() and not prompt.endswith(specials)

    return [
        bool(c.strip())
        and "\ufffd" not in c
        and (not open_word(prompt) or c[0].isspace() or c[0] in string.punctuation)
        and f[: len(p)] == p
        for prompt, c, p, f in zip(prompts, completions, prompt_ids, full_ids)
    ]


def _score(source: SampledSource, prompts: list[str], completions: list[str]) -> list[float]:
    rewards = source.reward(prompts, completions)
    if len(rewards) != len(completions):
        raise ValueError(
            f"{source.name}: the reward returned {len(rewards)} scores for {len(completions)} completions "
            "(it must return one per completion)"
        )
    out = [float(r) for r in rewards]
    bad = next((r for r in out if not math.isfinite(r)), None)
    if bad is not None:
        raise ValueError(f"{source.name}: the reward returned a non-finite score ({bad}); scores must be finite")
    return out


def _sample_rounds(
    model, tokenizer, source: SampledSource, prompts: list[str], tag: str, desc: str, num_samples: int,
    done: Callable[[list[Sample]], bool], exclude: list[str] | None = None,
) -> tuple[list[list[Sample]], dict[str, int], list[float]]:  # fmt: skip
    """The valid, scored samples of each prompt: ``num_samples`` per round, prompts not yet ``done`` resampled,
    up to :data:`ROUNDS` rounds. A sample equal to the prompt's ``exclude`` text counts as invalid. Also returns
    the counts of samples and the rewards of every valid first-round sample (the model's reward distribution on
    these prompts)."""
    samples: list[list[Sample]] = [[] for _ in prompts]
    todo = list(range(len(prompts)))
    counts = {"sampled": 0, "invalid": 0}
    first_round: list[float] = []
    for rnd in range(ROUNDS):
        if not todo:
            break
        batch_prompts = [prompts[i] for i in todo]
        conts = tiny_lm.sample_continuations(
            model,
            tokenizer,
            batch_prompts,
            num_samples=num_samples,
            max_new_tokens=source.max_new_tokens,
            seed=_seed(source.seed, tag, rnd),
            batch_size=source.batch_size,
            desc=desc if rnd == 0 else f"{desc} (resampling {len(todo)})",
        )
        flat_p = [p for p, cs in zip(batch_prompts, conts) for _ in cs]
        flat_c = [c for cs in conts for c in cs]
        ok = _valid(tokenizer, flat_p, flat_c)
        if exclude is not None:
            flat_x = [exclude[i] for i, cs in zip(todo, conts) for _ in cs]
            ok = [good and c != x for good, c, x in zip(ok, flat_c, flat_x)]
        valid = [j for j, good in enumerate(ok) if good]  # only valid samples are scored
        scores = _score(source, [flat_p[j] for j in valid], [flat_c[j] for j in valid]) if valid else []
        rewards = dict(zip(valid, scores))
        if rnd == 0:
            first_round = list(scores)
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


# --- layouts: how one prompt's samples become one row ---------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    """How one prompt's valid samples become one dataset row (pairs, candidate sets)."""

    unit: str  # what a row is, in messages and build_info
    num_samples: int  # continuations sampled per prompt and round
    least: int  # valid samples a prompt needs for a row (with fewer it gives none, tied or not)
    done: Callable[[list[Sample]], bool]  # the prompt needs no more sampling rounds
    row: Callable[[str, list[Sample]], dict[str, Any] | None]  # None: the prompt gives no row
    extremes: Callable[[dict[str, Any]], tuple[float, float]]  # (best, worst) reward of a row, for build_info


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


def _pairs_layout(source: SampledSource) -> _Layout:
    return _Layout(
        "pairs", source.samples_per_prompt, 2, _resolved, _pair_row,
        lambda r: (r["chosen_reward"], r["rejected_reward"]),
    )  # fmt: skip


def _candidates_layout(source: SampledSource) -> _Layout:
    """The first K valid samples, best first (stable: equal rewards keep sampling order); a prompt whose K
    samples all tie is skipped (uniform labels teach nothing); missing valid samples are resampled."""
    k = source.candidates_per_prompt

    def row(prompt: str, got: list[Sample]) -> dict[str, Any] | None:
        ranked = sorted(got[:k], key=lambda s: -s[1])
        if len(ranked) < k or ranked[0][1] == ranked[-1][1]:
            return None
        return {"prompt": prompt, "completions": [c for c, _ in ranked], "rewards": [r for _, r in ranked]}

    def extremes(r: dict[str, Any]) -> tuple[float, float]:
        return r["rewards"][0], r["rewards"][-1]

    return _Layout("candidate sets", k, k, lambda got: len(got) >= k, row, extremes)


def _rows_for(
    model, tokenizer, source: SampledSource, prompts: list[str], layout: _Layout, tag: str, desc: str
) -> tuple[list[dict[str, Any] | None], dict[str, int], list[float]]:
    """One row (or None) per prompt, the sample counts and the valid first-round rewards."""
    samples, counts, first_round = _sample_rounds(
        model, tokenizer, source, prompts, tag, desc, layout.num_samples, layout.done
    )
    rows = [layout.row(prompt, got) for prompt, got in zip(prompts, samples)]
    counts["skipped"] = rows.count(None)
    # skipped with enough valid samples: the reward gave them all one score
    counts["tied"] = sum(row is None and len(got) >= layout.least for row, got in zip(rows, samples))
    return rows, counts, first_round


def _train_rows(
    model, tokenizer, source: SampledSource, layout: _Layout
) -> tuple[list[dict[str, Any]], dict[str, Any], list[float]]:
    """``num_train_rows`` rows (one per train prompt where possible), from the train prompts in order, in
    blocks, skipping prompts that give none. A finite list (or a stream) that runs out gives what it can; an
    endless stream is tried for ``4 * num_train_rows + 64`` prompts at most. Fails when too few rows come."""
    need = source.num_train_rows if source.num_train_rows is not None else len(source.train_prompts)
    stream = source.train_stream()
    rows: list[dict[str, Any]] = []
    sample_rewards: list[float] = []
    totals: dict[str, Any] = {"prompts": 0, "sampled": 0, "invalid": 0, "skipped": 0, "tied": 0, "exhausted": False}
    budget = len(source.train_prompts) if source.finite else 4 * need + 64  # prompts we are willing to try
    block = 0
    while len(rows) < need and not totals["exhausted"]:
        missing = need - len(rows)
        n = math.ceil(missing * 1.05) + 8 if block == 0 else math.ceil(missing * 1.5) + 8
        n = min(n, budget - totals["prompts"])
        if n <= 0:
            if source.finite:
                totals["exhausted"] = True
                break
            raise NoRowsError(
                f"{source.name}: only {len(rows)}/{need} prompts gave {layout.unit} with a strict preference after "
                f"{totals['prompts']} prompts: the model's samples barely differ in reward "
                f"({_why_none(totals, layout)}). {source.hint}".rstrip()
            )  # fmt: skip
        prompts = list(itertools.islice(stream, n))
        if len(prompts) < n:
            totals["exhausted"] = True
        if not prompts:
            break
        got, counts, rewards = _rows_for(
            model, tokenizer, source, prompts, layout, f"train-{block}", f"{source.name}: sampling train {layout.unit}"
        )
        rows.extend(r for r in got if r is not None)
        sample_rewards.extend(rewards)
        totals["prompts"] += len(prompts)
        for key in ("sampled", "invalid", "skipped", "tied"):
            totals[key] += counts[key]
        block += 1
    if not rows:
        raise NoRowsError(
            f"{source.name}: none of the {totals['prompts']} train prompts gave {layout.unit}: "
            f"{_why_none(totals, layout)}. {source.hint}".rstrip()
        )
    totals["rows_wanted"] = need
    return rows[:need], totals, sample_rewards


def _why_none(totals: dict[str, Any], layout: _Layout) -> str:
    """Why the prompts that gave no row gave none, with the numbers: tied rewards, too few valid samples, or both."""
    tied, skipped, prompts = totals["tied"], totals["skipped"], totals["prompts"]
    few = skipped - tied
    drawn = (f"{ROUNDS} rounds of {layout.num_samples} samples per prompt at most ({totals['sampled']} samples, "
             f"{totals['invalid']} of them invalid)")  # fmt: skip
    if few == 0 and tied == prompts:
        return (f"the reward never separated the samples: it gave all valid samples of each prompt the same score "
                f"(a binary reward: all right or all wrong) in {drawn}")  # fmt: skip
    if few == 0:
        return f"the reward gave all valid samples of {tied} of the {prompts} prompts the same score in {drawn}"
    if tied == 0:
        return f"{few} of the {prompts} prompts had fewer than {layout.least} valid samples after {drawn}"
    return (f"the reward gave all valid samples of {tied} of the {prompts} prompts the same score and {few} had fewer "
            f"than {layout.least} valid samples, in {drawn}")  # fmt: skip


# --- cached splits and build info -----------------------------------------------------------------------------
def _cached_splits(
    kind: str,
    recipe: dict[str, Any],
    features: dict[str, Any],
    make: Callable[[], tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]],
    summary: Callable[[dict[str, Any]], str],
) -> datasets.DatasetDict:
    """The cached DatasetDict of ``make() -> ({split: rows}, build info)``; built (and summarised) on first use.
    Building leaves the caller's RNG states as they were.

    Loaded into memory: a memory-mapped split would make every later ``.map``/``.filter`` (ours, TRL's) write
    ``cache-*.arrow`` files into the cache entry, which must not change once built (and may be read-only)."""
    import datasets

    built = False

    def build(out: Path) -> None:
        nonlocal built
        built = True
        start = time.perf_counter()
        with tiny_lm.preserved_rng():
            splits, info = make()
        feats = datasets.Features(features)
        dd = datasets.DatasetDict(
            {
                split: datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in features}, features=feats)
                for split, rows in splits.items()
            }
        )
        with files.quiet():
            dd.save_to_disk(str(out))
        write_info(out, {**info, "seconds": time.perf_counter() - start})

    path = cached(kind, recipe, build)
    if built:
        info = json.loads((path / INFO_FILE).read_text())
        tiny_lm.console.print(f"{summary(info)} -> {path}", soft_wrap=True, highlight=False)
    with files.quiet():
        return datasets.load_from_disk(str(path), keep_in_memory=True)


def _sampled_splits(source: SampledSource, kind: str, recipe: dict[str, Any], layout: _Layout, features):
    """Train rows from the train prompts and one test row per test prompt that gives one, as ``layout`` says."""

    def make():
        model, tokenizer = load_model(source)
        train, train_counts, train_rewards = _train_rows(model, tokenizer, source, layout)
        test_all, test_counts, test_rewards = _rows_for(
            model, tokenizer, source, list(source.test_prompts), layout, "test",
            f"{source.name}: sampling test {layout.unit}",
        )  # fmt: skip
        test = [r for r in test_all if r is not None]
        info = {
            "model": str(source.model_dir),
            "device": source.device,
            "counts": {"train": train_counts, "test": test_counts},
            "stats": {
                "train": _reward_stats(train, train_rewards, layout),
                "test": _reward_stats(test, test_rewards, layout),
            },
        }
        return {"train": train, "test": test}, info

    def summary(info: dict[str, Any]) -> str:
        s, unit, counts = info["stats"]["train"], layout.unit, info["counts"]["train"]
        test, secs = info["stats"]["test"][unit], info["seconds"]
        line = f"{source.name}: {s[unit]} train / {test} test {unit} built in {secs:.0f}s"
        if "sample_mean" in s:
            line += (
                f" (model reward {s['sample_mean']:+.2f} ± {s['sample_std']:.2f}, best-worst gap {s['gap_mean']:.2f})"
            )
        if s[unit] < counts["rows_wanted"]:
            line += f"; the train prompts ran out after {counts['prompts']}: {s[unit]} of {counts['rows_wanted']} rows"
        return line

    return _cached_splits(kind, recipe, features, make, summary)


def _check(source: SampledSource, key: str, least: int) -> None:
    value = getattr(source, key)
    if value < least:
        raise ValueError(f"{source.name} needs {key} >= {least}, got {value}")


def build_pairs(source: SampledSource) -> datasets.DatasetDict:
    """The cached preference pairs: "train" (``num_train_rows`` rows, fewer if a finite list runs out) and "test"
    (one row per test prompt whose samples do not all tie, in order).

    Columns: prompt, chosen, rejected (plain text: the completions continue the prompt as sampled) and
    chosen_reward, rejected_reward (the reward of prompt and completion; chosen_reward > rejected_reward). The
    pair is the first best and the first worst of the prompt's valid samples (``samples_per_prompt`` per round).
    """
    import datasets

    _check(source, "samples_per_prompt", 2)  # best vs worst
    text, reward = datasets.Value("string"), datasets.Value("float64")
    features = {"prompt": text, "chosen": text, "rejected": text, "chosen_reward": reward, "rejected_reward": reward}
    return _sampled_splits(source, f"{source.name}_pairs", pairs_recipe(source), _pairs_layout(source), features)


def build_candidates(source: SampledSource) -> datasets.DatasetDict:
    """The cached ranked candidates (ADPO): "train" and "test" as in :func:`build_pairs`.

    Columns: prompt; completions, ``candidates_per_prompt`` valid samples sorted best first (stable); rewards,
    theirs (non-increasing, first > last). Sampling uses the same seeds as the pairs, so with
    ``candidates_per_prompt == samples_per_prompt`` a prompt's pair is usually its first and last candidate.
    """
    import datasets

    _check(source, "candidates_per_prompt", 2)
    features = {
        "prompt": datasets.Value("string"),
        "completions": datasets.List(datasets.Value("string")),
        "rewards": datasets.List(datasets.Value("float64")),
    }
    kind, layout = f"{source.name}_candidates", _candidates_layout(source)
    return _sampled_splits(source, kind, candidates_recipe(source), layout, features)


def build_negatives(source: SampledSource, pairs: datasets.DatasetDict | None = None) -> datasets.DatasetDict:
    """The cached negatives with self-samples (D2O): "train" and "test", one row per row of the pairs' split (a
    prompt that cannot get ``self_samples`` valid samples in :data:`ROUNDS` rounds is dropped).

    ``pairs``: None samples them (:func:`build_pairs` of ``source``); or a DatasetDict with "train" and "test"
    splits of (at least) text columns prompt and rejected, e.g. a preference dataset's human-labelled pairs (its
    rows are fingerprinted for the cache key; ``source``'s train/test prompts are not used).

    Columns: prompt; negative, the pair's rejected completion (sampled pairs: the worst of its samples; it plays
    the human-labelled negative); samples, ``self_samples`` fresh samples y_i ~ pi_SFT with other seeds, valid as
    in :func:`build_pairs` and never equal to the negative.
    """
    import datasets

    _check(source, "self_samples", 1)
    if pairs is None:
        _check(source, "samples_per_prompt", 2)
    recipe = negatives_recipe(source, pairs)
    if pairs is None:
        pairs = build_pairs(source)
    k = source.self_samples

    def make():
        model, tokenizer = load_model(source)
        splits, counts, stats = {}, {}, {}
        for split in ("train", "test"):
            prompts, negatives = list(pairs[split]["prompt"]), list(pairs[split]["rejected"])
            has_rewards = "rejected_reward" in pairs[split].column_names
            rejected_rewards = pairs[split]["rejected_reward"] if has_rewards else [None] * len(prompts)
            got, counts[split], rewards = _sample_rounds(
                model, tokenizer, source, prompts, f"self-{split}", f"{source.name}: sampling {split} self-samples",
                k, lambda s: len(s) >= k, exclude=negatives,
            )  # fmt: skip
            keep = [i for i, s in enumerate(got) if len(s) >= k]
            splits[split] = [
                {"prompt": prompts[i], "negative": negatives[i], "samples": [c for c, _ in got[i][:k]]} for i in keep
            ]
            counts[split]["skipped"] = len(prompts) - len(keep)
            negative_rewards = [rejected_rewards[i] for i in keep if rejected_rewards[i] is not None]
            stats[split] = {"rows": len(keep), "sample_mean": sum(rewards) / max(len(rewards), 1)}
            if negative_rewards:
                stats[split]["negative_mean"] = sum(negative_rewards) / len(negative_rewards)
        info = {"model": str(source.model_dir), "device": source.device, "counts": counts, "stats": stats}
        return splits, info

    def summary(info: dict[str, Any]) -> str:
        s = info["stats"]["train"]
        negative = f"negative reward {s['negative_mean']:+.2f}, " if "negative_mean" in s else ""
        return (
            f"{source.name}: {s['rows']} train / {info['stats']['test']['rows']} test negatives with {k} self-samples "
            f"built in {info['seconds']:.0f}s ({negative}self-sample reward {s['sample_mean']:+.2f})"
        )

    features = {
        "prompt": datasets.Value("string"),
        "negative": datasets.Value("string"),
        "samples": datasets.List(datasets.Value("string")),
    }
    return _cached_splits(f"{source.name}_negatives", recipe, features, make, summary)


def _reward_stats(rows: list[dict[str, Any]], sample_rewards: list[float], layout: _Layout) -> dict[str, float]:
    """The model's reward over all valid first-round samples, and the best ("chosen") and worst ("rejected")
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
