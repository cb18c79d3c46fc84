"""alignctl.data.sampled: pairs, candidates and negatives sampled from any HF model dir and scored by any reward."""

import itertools
import json
import random
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from alignctl.cache import recipe_hash
from alignctl.data import sampled
from alignctl.data.tasks import tiny_lm
from alignctl.errors import UsageError
from alignctl.models import files
from alignctl.models.schema import TinyModelConfig

from .conftest import one_thread

WORDS = "the a film plot was good bad very not great awful and but it actor scene story slow fun dull".split()
TRAIN = [f"The {w} was" for w in WORDS]  # 20 prompts ending in a word
TEST = ["It was", "A very", "The story"]


def length(prompts, completions):
    assert all(c.strip() and "\ufffd" not in c for c in completions)  # only valid samples are scored
    return [float(len(c)) for c in completions]


def has_e(prompts, completions):  # binary, like exact_match
    return [1.0 if "e" in c else 0.0 for c in completions]


def _model_dir(path, pad=True, steps=40):
    """A 1-layer Llama with a BPE tokenizer, both trained for a moment on word strings (so that it writes words,
    not random bytes)."""
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))) + "." for _ in range(300)]
    cfg = TinyModelConfig(
        vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64
    )
    with tiny_lm.preserved_rng(), one_thread():
        tok = tiny_lm.train_bpe_tokenizer(texts, cfg.vocab_size, model_max_length=64)
        model = tiny_lm.build_llama(cfg, tok)
        enc = tok([t + tok.eos_token for t in texts], return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
        for step in range(steps):
            rows = slice(step * 32 % 288, step * 32 % 288 + 32)
            loss = model(input_ids=enc["input_ids"][rows], attention_mask=enc["attention_mask"][rows],
                         labels=labels[rows]).loss  # fmt: skip
            loss.backward()
            opt.step()
            opt.zero_grad()
        model.eval()
        if not pad:  # a GPT-2-like tokenizer: the builder pads with EOS
            tok.pad_token = None
            model.config.pad_token_id = model.generation_config.pad_token_id = None
        files.save_hf_dir(model, tok, path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _model_dir(tmp_path_factory.mktemp("sampled-model"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNCTL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def source(model_dir, **kw):
    kw = {
        "name": "user",
        "model_dir": model_dir,
        "train_prompts": TRAIN,
        "test_prompts": TEST,
        "data_fingerprint": sampled.fingerprint_texts(TRAIN + ["--"] + TEST),
        "reward": length,
        "reward_recipe": {"name": "length"},
        "samples_per_prompt": 3,
        "candidates_per_prompt": 3,
        "self_samples": 2,
        "max_new_tokens": 6,
        "num_train_rows": 8,
        **kw,
    }
    return sampled.SampledSource(**kw)


def build(builder, src):
    with one_thread():
        return builder(src)


def test_pairs_candidates_and_negatives(model_dir, cache):
    src = source(model_dir)
    pairs = build(sampled.build_pairs, src)
    assert len(pairs["train"]) == 8 and 1 <= len(pairs["test"]) <= len(TEST)
    assert pairs["train"].column_names == ["prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"]
    for split in ("train", "test"):
        rows = pairs[split].to_list()
        assert len({r["prompt"] for r in rows}) == len(rows)  # at most one row per prompt of a finite list
        for r in rows:
            assert r["chosen_reward"] > r["rejected_reward"]
            assert [r["chosen_reward"], r["rejected_reward"]] == length([], [r["chosen"], r["rejected"]])
            assert all(c[0] == " " or not c[0].isalnum() for c in (r["chosen"], r["rejected"]))
    assert pairs["train"]["prompt"] == [p for p in TRAIN if p in set(pairs["train"]["prompt"])]  # in order

    cands = build(sampled.build_candidates, src)
    assert len(cands["train"]) == 8
    for r in cands["train"].to_list() + cands["test"].to_list():
        assert len(r["completions"]) == len(r["rewards"]) == 3
        assert r["rewards"] == sorted(r["rewards"], reverse=True) and r["rewards"][0] > r["rewards"][-1]
        assert r["rewards"] == length([], r["completions"])

    negs = build(sampled.build_negatives, src)
    rejected = {(p["prompt"], p["rejected"]) for p in pairs["train"]}
    assert len(negs["train"]) >= 7
    for r in negs["train"]:
        assert (r["prompt"], r["negative"]) in rejected
        assert len(r["samples"]) == 2 and r["negative"] not in r["samples"]
    info = json.loads((sampled.artifact_path(src, "pairs") / sampled.INFO_FILE).read_text())
    assert info["device"] == "cpu" and info["counts"]["train"]["exhausted"] is False


def test_a_second_call_hits_the_cache(model_dir, cache, monkeypatch):
    src = source(model_dir, num_train_rows=4)
    first = {b: build(getattr(sampled, b), src) for b in ("build_pairs", "build_candidates", "build_negatives")}

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt a cached dataset")

    monkeypatch.setattr(sampled, "load_model", no_build)
    monkeypatch.setattr(tiny_lm, "sample_continuations", no_build)
    for b, dd in first.items():
        again = build(getattr(sampled, b), src)
        assert all(again[s].to_list() == dd[s].to_list() for s in ("train", "test"))


def test_rows_do_not_depend_on_the_generation_batch_size(model_dir, tmp_path, monkeypatch):
    """Row-seeded sampling: batch_size only groups prompts (by length) for generate(); the pairs are the same,
    and it is not part of the cache key (a GPU user's larger batch reuses a CPU build)."""
    built = {}
    for batch_size in (512, 4):
        monkeypatch.setenv("ALIGNCTL_CACHE_DIR", str(tmp_path / f"cache{batch_size}"))
        built[batch_size] = build(sampled.build_pairs, source(model_dir, batch_size=batch_size))
    assert all(built[512][s].to_list() == built[4][s].to_list() for s in ("train", "test"))
    assert sampled.pairs_recipe(source(model_dir, batch_size=4)) == sampled.pairs_recipe(source(model_dir))
    assert sampled.pairs_recipe(source(model_dir, seed=1)) != sampled.pairs_recipe(source(model_dir))


def test_sample_continuations_are_row_seeded(model_dir):
    """Sample j of prompt i depends on (seed, i, j) alone: not on the batch size, on which other prompts share its
    batch (prompts of varied lengths are regrouped by length), or on the caller's RNG."""
    model, tok = sampled.load_model(source(model_dir))
    prompts = ["It", "The film was very slow and the plot was", "A", "The story was fun but the actor"]
    with one_thread():
        whole = tiny_lm.sample_continuations(model, tok, prompts, 3, 6, seed=7, batch_size=512)
        torch.manual_seed(123)
        small = tiny_lm.sample_continuations(model, tok, prompts, 3, 6, seed=7, batch_size=3)
        alone = tiny_lm.sample_continuations(model, tok, prompts[:2], 3, 6, seed=7, batch_size=1)
        other = tiny_lm.sample_continuations(model, tok, prompts, 3, 6, seed=8)
    assert whole == small and alone == whole[:2]
    assert [len(cs) for cs in whole] == [3, 3, 3, 3] and other != whole


def test_stream_of_prompts_and_binary_reward(model_dir, cache):
    """An endless stream (a function returning a fresh iterator); a 1/0 reward: tied prompts give no pair."""
    src = source(
        _model_dir(cache.parent / "no-pad", pad=False),
        train_prompts=lambda: (f"{w} {i} was" for i in itertools.count() for w in WORDS[:3]),
        reward=has_e, reward_recipe={"name": "has_e"}, samples_per_prompt=4, num_train_rows=6,
    )  # fmt: skip
    pairs = build(sampled.build_pairs, src)
    assert len(pairs["train"]) == 6
    assert set(pairs["train"]["chosen_reward"]) == {1.0} and set(pairs["train"]["rejected_reward"]) == {0.0}
    info = json.loads((sampled.artifact_path(src, "pairs") / sampled.INFO_FILE).read_text())
    assert info["counts"]["train"]["skipped"] > 0  # all right or all wrong: no pair
    flat = source(
        model_dir, train_prompts=src.train_prompts, reward=lambda p, c: [0.0] * len(c), reward_recipe={"name": "zero"},
        num_train_rows=6, hint="Try X.",
    )  # fmt: skip
    with pytest.raises(RuntimeError, match=r"only 0/6 prompts gave pairs .* after 88 prompts.* Try X\.$"):
        build(sampled.build_pairs, flat)  # an endless stream is tried for 4 * rows + 64 prompts


def test_an_iterator_of_prompts_is_read_once(model_dir, cache):
    src = source(model_dir, train_prompts=iter(TRAIN), num_train_rows=4)
    pairs = build(sampled.build_pairs, src)
    as_list = build(sampled.build_pairs, source(model_dir, num_train_rows=4, data_fingerprint="rebuild"))
    assert pairs["train"].to_list() == as_list["train"].to_list()
    assert build(sampled.build_pairs, src)["train"].to_list() == pairs["train"].to_list()  # a cache hit reads nothing
    with pytest.raises(RuntimeError, match="a build already read it"):
        build(sampled.build_candidates, src)


def test_negatives_of_given_pairs(model_dir, cache):
    """A preference dataset's human-labelled pairs (no rewards): their rejected completions are the negatives."""
    from datasets import Dataset, DatasetDict

    def split(prompts):
        n = len(prompts)
        return Dataset.from_dict({"prompt": prompts, "chosen": [" good."] * n, "rejected": [" bad."] * n})

    given = DatasetDict({"train": split(TRAIN[:6]), "test": split(TEST[:2])})
    src = source(model_dir)
    negs = build(lambda s: sampled.build_negatives(s, given), src)
    assert negs["train"]["prompt"] == TRAIN[:6] and set(negs["train"]["negative"]) == {" bad."}
    assert all(len(r) == 2 and " bad." not in r for r in negs["train"]["samples"])
    assert len(negs["test"]) == 2
    key = recipe_hash(sampled.negatives_recipe(src, given))
    assert key != recipe_hash(sampled.negatives_recipe(src))
    other = DatasetDict({"train": split(TRAIN[:5]), "test": split(TEST[:2])})
    assert recipe_hash(sampled.negatives_recipe(src, other)) != key


def test_a_finite_prompt_list_that_runs_out(model_dir, cache):
    src = source(model_dir, train_prompts=TRAIN[:5], num_train_rows=50)
    pairs = build(sampled.build_pairs, src)
    assert 1 <= len(pairs["train"]) <= 5
    counts = json.loads((sampled.artifact_path(src, "pairs") / sampled.INFO_FILE).read_text())["counts"]["train"]
    assert counts["exhausted"] is True and counts["prompts"] == 5 and counts["rows_wanted"] == 50
    everything = build(sampled.build_pairs, source(model_dir, num_train_rows=None))  # one row per prompt that gives one
    assert len(everything["train"]) <= len(TRAIN) and len(everything["train"]) >= len(pairs["train"])
    with pytest.raises(RuntimeError, match="none of the 5 train prompts gave pairs"):
        build(sampled.build_pairs, source(model_dir, train_prompts=TRAIN[:5], reward=lambda p, c: [1.0] * len(c),
                                          reward_recipe={"name": "one"}))  # fmt: skip


def test_cache_key_follows_weights_reward_and_prompts(model_dir, tmp_path):
    key = recipe_hash(sampled.pairs_recipe(source(model_dir)))
    fp = files.model_fingerprint(model_dir)
    assert len(fp) == 64 and sampled.pairs_recipe(source(model_dir))["model"] == fp
    copy = shutil.copytree(model_dir, tmp_path / "copy")
    (copy / "README.md").write_text("notes")  # not a file that changes what the model samples
    assert files.model_fingerprint(copy) == fp and recipe_hash(sampled.pairs_recipe(source(copy))) == key
    weights = load_file(copy / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] += 1e-3
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert files.model_fingerprint(copy) != fp
    assert recipe_hash(sampled.pairs_recipe(source(copy))) != key
    assert recipe_hash(sampled.pairs_recipe(source(model_dir, reward_recipe={"name": "length", "v": 2}))) != key
    assert recipe_hash(sampled.pairs_recipe(source(model_dir, data_fingerprint="other"))) != key
    assert recipe_hash(sampled.pairs_recipe(source(model_dir, candidates_per_prompt=5))) == key
    assert recipe_hash(sampled.pairs_recipe(source(model_dir, device="meta"))) == key  # the device is not in it
    assert sampled.fingerprint_texts(["ab", "c"]) != sampled.fingerprint_texts(["a", "bc"])
    assert sampled.fingerprint_texts(TRAIN) != sampled.fingerprint_texts(TRAIN[::-1])
    with pytest.raises(UsageError, match="config.json"):
        files.model_fingerprint(tmp_path)


def test_reward_of_the_wrong_length_raises(model_dir, cache):
    src = source(model_dir, reward=lambda p, c: [0.0], reward_recipe={"name": "broken"})
    with pytest.raises(ValueError, match=r"reward returned 1 scores for \d+ completions"):
        build(sampled.build_pairs, src)
    assert not sampled.artifact_path(src, "pairs").exists()
    nan = source(model_dir, reward=lambda p, c: [float("nan")] * len(c), reward_recipe={"name": "nan"})
    with pytest.raises(ValueError, match="non-finite"):
        build(sampled.build_pairs, nan)


def test_sources_are_checked(model_dir, cache):
    with pytest.raises(ValueError, match="num_train_rows is needed"):
        source(model_dir, train_prompts=lambda: iter(TRAIN), num_train_rows=None)
    with pytest.raises(TypeError):
        source(model_dir, reward_recipe={"fn": length})  # not JSON: cannot key the cache
    with pytest.raises(TypeError, match="prompts must be strings"):
        source(model_dir, test_prompts=[{"prompt": "It was"}])
    with pytest.raises(UsageError, match="neither a local directory nor in the local HF cache"):
        files.model_fingerprint("no-such-org/no-such-model")
    with pytest.raises(ValueError, match="samples_per_prompt >= 2"):
        sampled.build_pairs(source(model_dir, samples_per_prompt=1))
    with pytest.raises(ValueError, match="self_samples >= 1"):
        sampled.build_negatives(source(model_dir, self_samples=0))
    assert not cache.exists()  # failed before building anything


def test_validity_rule(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    cases = [
        ("The plot", " was", True),
        ("The plot", ". It", True),
        ("The plot", "s", False),  # would extend the prompt's last word
        ("The plot", "   ", False),  # no content
        ("The plot", " bad\ufffd", False),  # undecodable bytes
        ("Review:\n", "good film", True),  # a chat-rendered prompt ends with a newline
        ("Review: ", "good", False),  # allowed to start with a letter, but BPE merges the space into " good"
        (f"Review{tok.bos_token}", "good", True),  # or with a special token
    ]
    prompts, completions, want = zip(*cases)
    assert sampled._valid(tok, list(prompts), list(completions)) == list(want)
