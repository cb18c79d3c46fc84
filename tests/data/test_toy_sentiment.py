"""The embedded toy_sentiment task: base model on the ordinary HF path, preference pairs, held-out prompts."""

import dataclasses
import json
import string

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignctl import cache
from alignctl.cache import RECIPE_FILE, recipe_hash
from alignctl.data.tasks import tiny_lm, toy_sentiment
from alignctl.models import files
from alignctl.rewards.sentiment import sentiment

from .conftest import TINY_MODEL, build_tiny, tiny_cfgs

COLUMNS = ["prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"]


def test_base_model_loads_with_from_pretrained(tiny_build):
    path, _ = tiny_build
    assert (path / "model.safetensors").is_file() and (path / RECIPE_FILE).is_file()
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == "LlamaForCausalLM"
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (
        TINY_MODEL["hidden_size"], TINY_MODEL["num_layers"], TINY_MODEL["num_heads"], TINY_MODEL["intermediate_size"]
    )  # fmt: skip
    assert cfg.vocab_size == len(tok) <= TINY_MODEL["vocab_size"]
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (
        tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    )  # fmt: skip
    info = json.loads((path / cache.INFO_FILE).read_text())
    assert info["params"] == tiny_lm.param_count(model)
    enc = tok(["The plot was"], return_tensors="pt")
    torch.manual_seed(0)
    out = model.generate(**enc, do_sample=True, top_k=0, max_new_tokens=5, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > enc["input_ids"].shape[1]


def test_base_model_is_reused_from_cache(tiny_build, tiny_cache, monkeypatch):
    path, _ = tiny_build

    def no_training(*args, **kwargs):
        raise AssertionError("rebuilt a cached base model")

    monkeypatch.setattr(tiny_lm, "pretrain", no_training)
    monkeypatch.setenv("ALIGNCTL_CACHE_DIR", str(tiny_cache))
    assert toy_sentiment.build_base_model(*tiny_cfgs()) == path
    assert len(toy_sentiment.build_pairs(*tiny_cfgs())["train"]) == 24


def test_pairs_columns_sizes_and_rewards(tiny_build):
    path, pairs = tiny_build
    data_cfg, _ = tiny_cfgs()
    assert set(pairs) == {"train", "test"}
    assert len(pairs["train"]) == data_cfg.num_train_prompts
    assert 1 <= len(pairs["test"]) <= data_cfg.num_test_prompts
    tok = AutoTokenizer.from_pretrained(path)
    for split in ("train", "test"):
        ds = pairs[split]
        assert ds.column_names == COLUMNS
        rows = ds.to_list()
        for r in rows:
            assert r["chosen_reward"] > r["rejected_reward"]
            assert len(r["prompt"].split()) == data_cfg.prompt_words and r["prompt"] == r["prompt"].strip()
            for c in (r["chosen"], r["rejected"]):
                assert c.strip() and (c[0] == " " or c[0] in string.punctuation)
                p_ids, f_ids = tok(r["prompt"])["input_ids"], tok(r["prompt"] + c)["input_ids"]
                assert f_ids[: len(p_ids)] == p_ids  # DPOTrainer splits the pair where it was sampled
        prompts = [r["prompt"] for r in rows]
        assert ds["chosen_reward"] == pytest.approx(sentiment(prompts, ds["chosen"]))
        assert ds["rejected_reward"] == pytest.approx(sentiment(prompts, ds["rejected"]))
    # the test split is the eval prompts, in order (tied prompts, if any, dropped)
    evals = iter(toy_sentiment.eval_prompts(data_cfg))
    assert all(any(p == e for e in evals) for p in pairs["test"]["prompt"])


def test_eval_prompts_are_held_out_and_deterministic(monkeypatch):
    data_cfg, _ = tiny_cfgs()
    prompts = toy_sentiment.eval_prompts(data_cfg)
    assert len(prompts) == data_cfg.num_test_prompts and prompts == toy_sentiment.eval_prompts(data_cfg)
    assert all(len(p.split()) == data_cfg.prompt_words for p in prompts)
    # reviews that are in the pretraining corpus are skipped
    first_two = toy_sentiment.review_grammar.generate_reviews(data_cfg.seed, 2, stream="heldout-test")
    monkeypatch.setattr(toy_sentiment, "_corpus", lambda seed, size: (first_two[0],))
    assert toy_sentiment.eval_prompts(data_cfg)[0] == " ".join(first_two[1].split()[: data_cfg.prompt_words])


def test_build_is_deterministic_for_a_seed(tiny_build, tmp_path):
    path, pairs = tiny_build
    rng_before = torch.get_rng_state()
    path2, pairs2 = build_tiny(tmp_path)  # from scratch in another cache
    assert torch.equal(torch.get_rng_state(), rng_before)  # building does not reseed the caller
    assert path2 != path and path2.name == path.name
    w1, w2 = load_file(path / "model.safetensors"), load_file(path2 / "model.safetensors")
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    for split in ("train", "test"):
        assert pairs[split].to_list() == pairs2[split].to_list()


def test_recipes_key_what_matters(tiny_build, tiny_cache, monkeypatch):
    monkeypatch.setenv("ALIGNCTL_CACHE_DIR", str(tiny_cache))  # the pairs' recipe fingerprints the built base model
    path, _ = tiny_build
    data_cfg, model_cfg = tiny_cfgs()
    base = recipe_hash(toy_sentiment.base_model_recipe(data_cfg, model_cfg))
    recipe = toy_sentiment.pairs_recipe(data_cfg, model_cfg)
    pairs = recipe_hash(recipe)
    assert recipe["model"] == files.model_fingerprint(path)  # the base model's weights (and config, tokenizer)
    assert recipe["data"] == recipe_hash(toy_sentiment.prompts_recipe(data_cfg))
    assert recipe["reward"] == {"name": "sentiment"}
    more_pairs = dataclasses.replace(data_cfg, num_train_prompts=99)
    assert recipe_hash(toy_sentiment.base_model_recipe(more_pairs, model_cfg)) == base
    assert recipe_hash(toy_sentiment.pairs_recipe(more_pairs, model_cfg)) != pairs
    other_prompts = dataclasses.replace(data_cfg, prompt_words=5)  # same base model, other prompts
    assert recipe_hash(toy_sentiment.base_model_recipe(other_prompts, model_cfg)) == base
    assert recipe_hash(toy_sentiment.pairs_recipe(other_prompts, model_cfg)) != pairs
    other_model = dataclasses.replace(model_cfg, pretrain_steps=121)  # other weights: the pairs follow (test_sampled)
    assert recipe_hash(toy_sentiment.base_model_recipe(data_cfg, other_model)) != base
    other_seed = dataclasses.replace(data_cfg, seed=1)
    assert recipe_hash(toy_sentiment.base_model_recipe(other_seed, model_cfg)) != base
    assert toy_sentiment.prompts_recipe(other_seed) != toy_sentiment.prompts_recipe(data_cfg)


def test_one_sample_per_prompt_cannot_make_pairs(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNCTL_CACHE_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="samples_per_prompt"):
        toy_sentiment.build_pairs(*tiny_cfgs(samples_per_prompt=1))
    assert not any(tmp_path.iterdir())  # failed before building anything
