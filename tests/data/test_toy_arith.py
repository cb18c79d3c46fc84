"""The embedded toy_arith task: seeded questions and splits, worked solutions, the corpus, and the base model."""

import dataclasses
import json
from collections import Counter

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignctl import cache
from alignctl.cache import RECIPE_FILE, recipe_hash
from alignctl.data.tasks import tiny_lm, toy_arith
from alignctl.data.tasks.toy_arith import ToyArithConfig
from alignctl.errors import ConfigError
from alignctl.models.schema import TinyModelConfig
from alignctl.rewards import arith_problems
from alignctl.rewards.arith_problems import Problem
from alignctl.rewards.exact_match import exact_match
from tests.conftest import session_cache_dir

from .conftest import one_thread

# A seconds-long build: a 1-layer model and a short corpus (it learns the format, not the arithmetic).
TINY_DATA = dict(
    corpus_size=600, pretrain_steps=40, num_train_prompts=32, num_test_prompts=16, num_ood_prompts=16,
    max_new_tokens=32,
)  # fmt: skip
TINY_MODEL = dict(
    vocab_size=512, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64,
    pretrain_batch_size=16, pretrain_lr=1e-2,
)  # fmt: skip


def tiny_cfgs(**data_overrides):
    return ToyArithConfig(**{**TINY_DATA, **data_overrides}), TinyModelConfig(**TINY_MODEL)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """The tiny base model, built once into the session's shared cache (tests/conftest.py's directory)."""
    with pytest.MonkeyPatch.context() as mp, one_thread():
        mp.setenv("ALIGNCTL_CACHE_DIR", str(session_cache_dir(tmp_path_factory)))
        return toy_arith.build_base_model(*tiny_cfgs())


# --- questions and splits ----------------------------------------------------------------------------------------
def test_questions_are_seeded_and_prefix_stable():
    cfg = ToyArithConfig()
    for split in toy_arith.SPLITS:
        assert toy_arith.prompts(cfg, split) == toy_arith.prompts(ToyArithConfig(), split)
    longer = dataclasses.replace(cfg, num_test_prompts=400)
    assert toy_arith.prompts(longer, "test")[:256] == toy_arith.prompts(cfg, "test")
    other = toy_arith.prompts(dataclasses.replace(cfg, seed=1), "test")
    assert len(set(other) & set(toy_arith.prompts(cfg, "test"))) < 100
    # the same questions whatever else is asked for: adding an operation interleaves, it does not reshuffle
    adds = [p for p in arith_problems.problems(0, 2, "+-", 400, "train") if p.op == "+"]
    assert adds == arith_problems.problems(0, 2, "+", len(adds), "train")


def test_splits_are_disjoint_and_the_corpus_holds_no_held_out_question():
    cfg = ToyArithConfig()
    qs = {split: toy_arith.problems(cfg, split) for split in toy_arith.SPLITS}
    sizes = {"train": cfg.num_train_prompts, "test": cfg.num_test_prompts, "ood": cfg.num_ood_prompts}
    for split, problems in qs.items():
        assert len(problems) == len(set(problems)) == sizes[split]
    assert not set(qs["train"]) & set(qs["test"])
    assert not set(qs["train"]) & set(qs["ood"]) and not set(qs["test"]) & set(qs["ood"])
    assert {arith_problems.side_of(p, cfg.seed) for p in qs["test"] + qs["ood"]} == {"test"}
    corpus_prompts = {text[: text.index("A:") + 2] for text in toy_arith.corpus(cfg)}
    assert len(corpus_prompts) == cfg.corpus_size  # distinct questions
    assert set(toy_arith.prompts(cfg, "train")) <= corpus_prompts  # pretrained on the train split's questions
    assert not corpus_prompts & set(toy_arith.prompts(cfg, "test") + toy_arith.prompts(cfg, "ood"))


def test_in_distribution_and_ood_questions_differ():
    cfg = ToyArithConfig()
    train, test, ood = (toy_arith.problems(cfg, s) for s in toy_arith.SPLITS)
    assert {p.op for p in train + test} == {"+"} and {p.op for p in ood} == {"-"}
    assert all(10 <= x <= 99 for p in train + test + ood for x in (p.a, p.b))
    assert all(p.a >= p.b for p in ood)  # subtraction never goes negative
    longer = dataclasses.replace(cfg, ood_digits=3, ood_operations="+-")
    ood3 = toy_arith.problems(longer, "ood")
    assert all(100 <= x <= 999 for p in ood3 for x in (p.a, p.b))
    assert 0.4 < Counter(p.op for p in ood3)["+"] / len(ood3) < 0.6
    # share of the corpus that is ood-kind
    ops = Counter(text.split("=")[0][-3] for text in toy_arith.corpus(cfg))  # the char before b's two digits
    assert ops["-"] == round(cfg.corpus_size * cfg.ood_corpus_share)


def test_answers_and_solutions_align_with_prompts():
    cfg = ToyArithConfig(num_train_prompts=64, num_test_prompts=64, num_ood_prompts=64)
    for split in toy_arith.SPLITS:
        prompts, answers = toy_arith.prompts(cfg, split), toy_arith.answers(cfg, split)
        solutions = toy_arith.solutions(cfg, split)
        assert len(prompts) == len(answers) == len(solutions)
        assert exact_match(prompts, solutions) == [1.0] * len(prompts)
        assert answers == [toy_arith.expected_answer(p) for p in prompts]
        assert all(s.startswith(" ") and s.endswith(f"The answer is {a}.") for s, a in zip(solutions, answers))
    assert toy_arith.eval_prompts(cfg) == toy_arith.prompts(cfg, "test")
    assert toy_arith.expected_answer("no question here") is None
    with pytest.raises(ValueError, match="split"):
        toy_arith.prompts(cfg, "validation")


def test_worked_solution_format():
    assert Problem(23, "+", 58).text() == "Q: 23+58=? A: 3+8=11, carry 1; 2+5+1=8. The answer is 81."
    assert Problem(82, "-", 57).text() == "Q: 82-57=? A: 12-7=5, borrow 1; 8-5-1=2. The answer is 25."
    assert Problem(99, "+", 99).solution() == " 9+9=18, carry 1; 9+9+1=19. The answer is 198."
    assert Problem(52, "-", 48).solution() == " 12-8=4, borrow 1; 5-4-1=0. The answer is 4."
    assert Problem(100, "-", 1).solution() == " 10-1=9, borrow 1; 10-0-1=9, borrow 1; 1-0-1=0. The answer is 99."
    # careless: the slipped column's result is off by one and the rest follows from it, carries included
    assert Problem(45, "+", 54).solution((0, 1)) == " 5+4=10, carry 1; 4+5+1=10. The answer is 100."
    assert Problem(99, "+", 99).solution((1, 1)) == " 9+9=18, carry 1; 9+9+1=18. The answer is 188."  # 20 -> 18
    assert Problem(82, "-", 57).solution((1, -1)) == " 12-7=5, borrow 1; 8-5-1=1. The answer is 15."
    with pytest.raises(ValueError):
        Problem(3, "-", 5).solution()


def test_corpus_slips_at_the_configured_rate():
    cfg = ToyArithConfig()
    texts = toy_arith.corpus(cfg)
    assert texts == toy_arith.corpus(ToyArithConfig())
    prompts = [t[: t.index("A:") + 2] for t in texts]
    rewards = exact_match(prompts, [t[len(p) :] for t, p in zip(texts, prompts)])
    assert abs(rewards.count(0.0) / len(texts) - cfg.slip_rate) < 0.03
    assert all(arith_problems.parse_answer(t) is not None for t in texts)  # careless, never malformed
    clean = toy_arith.corpus(dataclasses.replace(cfg, slip_rate=0.0))
    assert exact_match(prompts, [t[len(p) :] for t, p in zip(clean, prompts)]) == [1.0] * len(texts)


def test_hard_facts_are_misremembered_consistently_at_their_rate():
    cfg = ToyArithConfig(hard_fact_share=0.3, hard_fact_slip_rate=0.9, slip_rate=0.0, ood_corpus_share=0.0, corpus_size=4000)
    facts = [(x, y, *[1] * c) for x in range(10) for y in range(10) for c in (0, 1)]
    offsets = {f: toy_arith.hard_fact(cfg, "+", f) for f in facts}
    hard = {f for f, d in offsets.items() if d}
    assert abs(len(hard) / len(facts) - 0.3) < 0.08 and set(offsets.values()) == {-1, 0, 1}
    assert offsets == {f: toy_arith.hard_fact(cfg, "+", f) for f in facts}  # a fixed property of (seed, fact)
    assert {f: toy_arith.hard_fact(dataclasses.replace(cfg, seed=1), "+", f) for f in facts} != offsets
    # Re-derive every column of every corpus document: a fact known is written right, a hard one either right or
    # off by its own offset (the same way every time), the hard ones wrong at about hard_fact_slip_rate.
    wrong = uses = 0
    for text in toy_arith.corpus(cfg):
        for step in text[text.index("A:") + 3 : text.index(". The")].split("; "):
            lhs, written = step.split(",")[0].split("=")
            terms = tuple(map(int, lhs.split("+")))
            delta, own = int(written) - sum(terms), offsets[terms]
            if own:  # turned around where it would leave the column's range (9+9+1 is never 20)
                assert delta in (0, own if 0 <= sum(terms) + own <= 19 else -own)
                uses += 1
                wrong += delta != 0
            else:
                assert delta == 0
    assert uses > 1000 and abs(wrong / uses - 0.9) < 0.03
    # Without hard facts the corpus is exactly the one the share-free recipe always wrote.
    assert toy_arith.corpus(dataclasses.replace(cfg, hard_fact_share=0.0)) == toy_arith.corpus(
        ToyArithConfig(slip_rate=0.0, ood_corpus_share=0.0, corpus_size=4000)
    )


def test_a_careless_slip_never_undoes_a_misremembered_fact():
    def always_plus_one(op, terms):
        return 1

    # units 3+8 is misremembered as 12; the careless -1 slip on that column would have made it right again
    assert Problem(23, "+", 58).solution((0, -1), always_plus_one).startswith(" 3+8=12")


def test_too_few_questions_is_a_clear_error():
    with pytest.raises(ValueError, match="only .* questions on the test side"):
        toy_arith.prompts(ToyArithConfig(num_test_prompts=5000), "test")


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(operations="*"), "operations"),
        (dict(operations="++"), "operations"),
        (dict(ood_operations=""), "ood_operations"),
        (dict(ood_operations="+"), "ood_operations"),  # same kind as the in-distribution questions
        (dict(digits=0), "digits"),
        (dict(ood_digits=19), "ood_digits"),
        (dict(slip_rate=1.0), "slip_rate"),
        (dict(hard_fact_share=1.0), "hard_fact_share"),
        (dict(hard_fact_slip_rate=1.5), "hard_fact_slip_rate"),
        (dict(ood_corpus_share=-0.1), "ood_corpus_share"),
        (dict(num_ood_prompts=0), "num_ood_prompts"),
        (dict(pretrain_steps=0), "pretrain_steps"),
    ],
)
def test_config_rejects_bad_values(overrides, field):
    with pytest.raises(ConfigError, match=f"dataset.{field}="):
        ToyArithConfig(**overrides)


# --- tokenizer and base model ------------------------------------------------------------------------------------
def test_digit_tokenizer_splits_every_digit_and_keeps_prompts_as_prefixes():
    texts = toy_arith.corpus(ToyArithConfig(corpus_size=500))
    tok = tiny_lm.train_bpe_tokenizer(texts, vocab_size=512, model_max_length=64, individual_digits=True)
    for text in texts[:50]:
        ids = tok(text)["input_ids"]
        pieces = [tok.convert_tokens_to_string([t]) for t in tok.convert_ids_to_tokens(ids[1:])]
        assert all(sum(c.isdigit() for c in piece) <= 1 for piece in pieces)
        assert tok.decode(ids, skip_special_tokens=True) == text
        prompt = text[: text.index("A:") + 2]
        assert ids[: len(tok(prompt)["input_ids"])] == tok(prompt)["input_ids"]
    # the default (toy_sentiment's) tokenizer still merges digits
    plain = tiny_lm.train_bpe_tokenizer(texts, vocab_size=512, model_max_length=64)
    assert len(plain("Q: 23+58=? A:")["input_ids"]) < len(tok("Q: 23+58=? A:")["input_ids"])


def test_base_model_loads_with_from_pretrained(tiny_base):
    path = tiny_base
    assert (path / "model.safetensors").is_file() and (path / RECIPE_FILE).is_file()
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (32, 1)
    assert model.config.vocab_size == len(tok) <= TINY_MODEL["vocab_size"]
    info = json.loads((path / cache.INFO_FILE).read_text())
    assert info["params"] == tiny_lm.param_count(model)
    assert info["pretrain_steps"] == TINY_DATA["pretrain_steps"]  # the task's budget, not model.pretrain_steps
    assert set(info["pass_at_1"]) == {"test", "ood"} and all(0 <= v <= 1 for v in info["pass_at_1"].values())
    data_cfg, _ = tiny_cfgs()
    with one_thread():
        conts = tiny_lm.sample_continuations(model, tok, toy_arith.prompts(data_cfg, "test")[:4], 2, 32, seed=0)
    rewards = exact_match([p for p in toy_arith.prompts(data_cfg, "test")[:4] for _ in range(2)], sum(conts, []))
    assert all(r in (0.0, 1.0) for r in rewards)  # whatever a barely trained model writes, the reward copes


def test_base_model_is_reused_from_cache(tiny_base, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("rebuilt a cached base model")

    monkeypatch.setattr(tiny_lm, "pretrain", no_training)
    data_cfg, model_cfg = tiny_cfgs()
    assert toy_arith.build_base_model(data_cfg, model_cfg) == tiny_base
    # the kernel is not part of the recipe; the split sizes and sampling budget are not either
    naive = dataclasses.replace(model_cfg, kernel="naive")
    resized = dataclasses.replace(data_cfg, num_test_prompts=8, num_train_prompts=4, max_new_tokens=16)
    assert toy_arith.build_base_model(resized, naive) == tiny_base


def test_recipe_tracks_what_shapes_the_model():
    data_cfg, model_cfg = tiny_cfgs()
    key = recipe_hash(toy_arith.base_model_recipe(data_cfg, model_cfg))
    for change in (dict(slip_rate=0.2), dict(ood_corpus_share=0.1), dict(seed=1), dict(pretrain_steps=41),
                   dict(corpus_size=601), dict(operations="+-", ood_digits=3),
                   dict(hard_fact_share=0.2), dict(hard_fact_share=0.2, hard_fact_slip_rate=0.5)):  # fmt: skip
        assert recipe_hash(toy_arith.base_model_recipe(dataclasses.replace(data_cfg, **change), model_cfg)) != key
    # model.pretrain_steps is replaced by the task's own budget
    other_steps = dataclasses.replace(model_cfg, pretrain_steps=999)
    assert recipe_hash(toy_arith.base_model_recipe(data_cfg, other_steps)) == key


def test_max_new_tokens_covers_every_worked_solution(tiny_base):
    tok = AutoTokenizer.from_pretrained(tiny_base)
    cfg = ToyArithConfig()
    for digits, ops in ((2, "+-"), (3, "+-")):
        problems = arith_problems.problems(0, digits, ops, 2000, "train")
        longest = max(len(tok(p.solution(), add_special_tokens=False)["input_ids"]) for p in problems)
        assert longest + 1 <= cfg.max_new_tokens  # + EOS


# --- the default build, measured ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_default_base_model_is_partly_right(tmp_path_factory):
    """Builds the default base model (about a minute on one thread) and reports its pass@1 at temperature 1."""
    data_cfg, model_cfg = ToyArithConfig(), TinyModelConfig()
    with pytest.MonkeyPatch.context() as mp, one_thread():
        mp.setenv("ALIGNCTL_CACHE_DIR", str(session_cache_dir(tmp_path_factory)))
        path = toy_arith.build_base_model(data_cfg, model_cfg)
    info = json.loads((path / cache.INFO_FILE).read_text())
    acc = info["pass_at_1"]
    print(f"\ntoy_arith base pass@1 (T=1, {info['pass_at_1_samples_per_prompt']} samples x "
          f"{info['pass_at_1_prompts']} questions): test {acc['test']:.3f}, ood {acc['ood']:.3f}; "
          f"build {info['build_seconds']:.0f}s")  # fmt: skip
    assert 0.15 <= acc["test"] <= 0.7  # "roughly 20-60%"
    assert acc["ood"] < acc["test"]
