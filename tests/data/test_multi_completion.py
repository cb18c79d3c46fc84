"""toy_sentiment's multi-completion data: ranked candidates (ADPO) and negatives with self-samples (D2O)."""

import dataclasses

import pytest
from transformers import AutoTokenizer

from alignctl.cache import recipe_hash
from alignctl.data.tasks import tiny_lm, toy_sentiment
from alignctl.data.tasks.toy_sentiment import ToySentimentConfig
from alignctl.errors import ConfigError
from alignctl.rewards.sentiment import sentiment

from .conftest import one_thread, tiny_cfgs


def _build(cache, builder, **data_overrides):
    with pytest.MonkeyPatch.context() as mp, one_thread():
        mp.setenv("ALIGNCTL_CACHE_DIR", str(cache))
        return builder(*tiny_cfgs(**data_overrides))


@pytest.fixture(scope="module")
def candidates(tiny_build, tiny_cache):
    return _build(tiny_cache, toy_sentiment.build_candidates)


@pytest.fixture(scope="module")
def negatives(tiny_build, tiny_cache):
    return _build(tiny_cache, toy_sentiment.build_negatives)


def _splits_where_sampled(tok, prompt, completion):
    """The tokenized prompt is a prefix of the tokenized prompt + completion (trainers split there)."""
    assert completion.strip() and (completion[0] == " " or not completion[0].isalnum())
    p_ids, f_ids = tok(prompt)["input_ids"], tok(prompt + completion)["input_ids"]
    return f_ids[: len(p_ids)] == p_ids


def test_candidates_are_k_valid_samples_ranked_best_first(tiny_build, candidates):
    path, pairs = tiny_build
    data_cfg, _ = tiny_cfgs()
    k = data_cfg.candidates_per_prompt
    tok = AutoTokenizer.from_pretrained(path)
    assert len(candidates["train"]) == data_cfg.num_train_prompts
    assert 1 <= len(candidates["test"]) <= data_cfg.num_test_prompts
    for split in ("train", "test"):
        ds = candidates[split]
        assert ds.column_names == ["prompt", "completions", "rewards"]
        for r in ds:
            assert len(r["completions"]) == len(r["rewards"]) == k
            assert r["rewards"] == sorted(r["rewards"], reverse=True) and r["rewards"][0] > r["rewards"][-1]
            assert r["rewards"] == pytest.approx(sentiment([r["prompt"]] * k, r["completions"]))
            assert all(_splits_where_sampled(tok, r["prompt"], c) for c in r["completions"])
    evals = iter(toy_sentiment.eval_prompts(data_cfg))
    assert all(any(p == e for e in evals) for p in candidates["test"]["prompt"])
    # same prompts and seeds as the pairs: with K == samples_per_prompt a pair is mostly the first and last candidate
    assert k == data_cfg.samples_per_prompt
    ends = {(c["prompt"], c["completions"][0], c["completions"][-1]) for c in candidates["train"]}
    assert sum((p["prompt"], p["chosen"], p["rejected"]) in ends for p in pairs["train"]) >= len(pairs["train"]) // 2


def test_negatives_are_the_pairs_rejected_plus_fresh_self_samples(tiny_build, negatives):
    path, pairs = tiny_build
    data_cfg, _ = tiny_cfgs()
    tok = AutoTokenizer.from_pretrained(path)
    for split in ("train", "test"):
        ds = negatives[split]
        assert ds.column_names == ["prompt", "negative", "samples"]
        # the pairs' (prompt, rejected) in order; a prompt without enough valid self-samples is dropped (rare)
        pool = iter(zip(pairs[split]["prompt"], pairs[split]["rejected"], pairs[split]["chosen"]))
        matched = [next(p for p in pool if p[:2] == (r["prompt"], r["negative"])) for r in ds]
        assert len(matched) == len(ds) >= len(pairs[split]) - 1
        for r in ds:
            assert len(r["samples"]) == data_cfg.self_samples and r["negative"] not in r["samples"]
            assert all(_splits_where_sampled(tok, r["prompt"], c) for c in r["samples"])
        # fresh samples, not the rest of the pair's pool (an identical text is possible, but rare)
        assert sum(chosen in r["samples"] for r, (_, _, chosen) in zip(ds, matched)) <= max(1, len(ds) // 10)


def test_sizes_are_configurable_and_builds_are_cached(tiny_build, tiny_cache, monkeypatch):
    cands = _build(tiny_cache, toy_sentiment.build_candidates, candidates_per_prompt=2)
    negs = _build(tiny_cache, toy_sentiment.build_negatives, self_samples=2)
    assert {len(r) for r in cands["train"]["completions"]} == {2}
    assert {len(r) for r in negs["train"]["samples"]} == {2}

    def no_sampling(*args, **kwargs):
        raise AssertionError("rebuilt a cached dataset")

    monkeypatch.setattr(tiny_lm, "sample_continuations", no_sampling)
    again = _build(tiny_cache, toy_sentiment.build_candidates, candidates_per_prompt=2)
    assert again["train"].to_list() == cands["train"].to_list()
    assert _build(tiny_cache, toy_sentiment.build_negatives, self_samples=2)["test"].to_list() == negs["test"].to_list()


def test_recipes_key_what_matters(tiny_build, tiny_cache, monkeypatch):
    monkeypatch.setenv("ALIGNCTL_CACHE_DIR", str(tiny_cache))  # the recipes fingerprint the built base model
    data_cfg, model_cfg = tiny_cfgs()

    def hashes(**changes):
        d = dataclasses.replace(data_cfg, **changes)
        return tuple(
            recipe_hash(f(d, model_cfg))
            for f in (toy_sentiment.pairs_recipe, toy_sentiment.candidates_recipe, toy_sentiment.negatives_recipe)
        )

    pairs, cands, negs = hashes()
    assert hashes(candidates_per_prompt=3) == (pairs, hashes(candidates_per_prompt=3)[1], negs)
    assert hashes(candidates_per_prompt=3)[1] != cands
    assert hashes(self_samples=3)[:2] == (pairs, cands) and hashes(self_samples=3)[2] != negs
    more_pool = hashes(samples_per_prompt=5)  # the negative is the worst of a larger pool
    assert more_pool[1] == cands and more_pool[0] != pairs and more_pool[2] != negs
    assert all(a != b for a, b in zip(hashes(max_new_tokens=8), (pairs, cands, negs)))


def test_sizes_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNCTL_CACHE_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="candidates_per_prompt >= 2"):
        toy_sentiment.build_candidates(*tiny_cfgs(candidates_per_prompt=1))
    assert not any(tmp_path.iterdir())
    for field in ("candidates_per_prompt", "self_samples"):
        with pytest.raises(ConfigError, match=field):
            ToySentimentConfig(**{field: 0})
