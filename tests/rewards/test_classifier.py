"""The classifier reward: tiny random HF sequence classifiers, scores checked against the model's own forward."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alignctl.errors import UsageError
from alignctl.rewards.base import RewardContext
from alignctl.rewards.classifier import ClassifierConfig, build

PROMPTS = ["The film was", "The plot", "I watched this movie and", "", "The music was really", "a"]
COMPLETIONS = [" great and funny.", " was long , slow and boring", " it was not bad", " good", "", " awful awful awful"]


def hand_logits(path, texts):
    """One text at a time (no padding), straight through the model's forward."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        return torch.cat([model(**tokenizer(t, return_tensors="pt")).logits for t in texts])  # [N, num_labels]


def score(path, prompts=PROMPTS, completions=COMPLETIONS, **fields):
    return build(ClassifierConfig(path=path, **fields), RewardContext(device="cpu"))(prompts, completions)


def one_line_usage_error(fn, *needles):
    with pytest.raises(UsageError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message and all(n in message for n in needles), message
    return message


def test_pos_minus_neg_is_the_difference_of_softmax_probabilities(gpt2_style_dir):
    texts = [p + c for p, c in zip(PROMPTS, COMPLETIONS)]
    probs = hand_logits(gpt2_style_dir, texts).softmax(-1)
    scores = score(gpt2_style_dir)  # default mode, POSITIVE / NEGATIVE
    assert scores == pytest.approx((probs[:, 1] - probs[:, 0]).tolist(), abs=1e-5)
    assert len(scores) == len(PROMPTS) and all(isinstance(s, float) and -1 <= s <= 1 for s in scores)
    assert max(scores) - min(scores) > 1e-3  # the texts are told apart


def test_label_mode_is_one_probability_and_labels_match_in_any_case(bert_dir):
    texts = [p + c for p, c in zip(PROMPTS, COMPLETIONS)]
    probs = hand_logits(bert_dir, texts).softmax(-1)  # 3 labels: negative, neutral, positive
    for label, column in (("positive", 2), ("NEUTRAL", 1), ("Negative", 0)):
        scores = score(bert_dir, mode="label", label=label)
        assert scores == pytest.approx(probs[:, column].tolist(), abs=1e-5)
        assert all(0 <= s <= 1 for s in scores)
    # the softmax runs over all three labels, so P(pos) - P(neg) is not 2 P(pos) - 1
    both = score(bert_dir, positive_label="Positive", negative_label="NEGATIVE")
    assert both == pytest.approx((probs[:, 2] - probs[:, 0]).tolist(), abs=1e-5)


def test_logit_mode_is_the_reward_models_raw_score(reward_model_dir):
    texts = [p + c for p, c in zip(PROMPTS, COMPLETIONS)]
    scores = score(reward_model_dir, mode="logit")
    assert scores == pytest.approx(hand_logits(reward_model_dir, texts)[:, 0].tolist(), abs=1e-5)


@pytest.mark.parametrize("fixture", ["gpt2_style_dir", "bert_dir", "reward_model_dir"])
def test_batching_and_padding_do_not_change_scores(fixture, request):
    path = request.getfixturevalue(fixture)
    fields = {
        "bert_dir": {"positive_label": "positive", "negative_label": "negative"},
        "reward_model_dir": {"mode": "logit"},
    }.get(fixture, {})
    one = score(path, batch_size=1, **fields)
    assert score(path, batch_size=32, **fields) == pytest.approx(one, abs=1e-5)
    assert score(path, batch_size=4, **fields) == pytest.approx(one, abs=1e-5)  # a ragged last batch


def test_input_completion_scores_the_completion_alone(gpt2_style_dir):
    probs = hand_logits(gpt2_style_dir, COMPLETIONS[:4]).softmax(-1)
    scores = score(gpt2_style_dir, PROMPTS[:4], COMPLETIONS[:4], input="completion", mode="label", label="POSITIVE")
    assert scores == pytest.approx(probs[:, 1].tolist(), abs=1e-5)


def test_long_texts_keep_their_last_tokens(gpt2_style_dir, bert_dir):
    prompt = "the film was long and the plot was slow and the cast " * 20  # > 64 tokens, the models' maximum
    # the last 8 tokens: all words for the GPT-2 style tokenizer; [CLS] + 6 words + [SEP] for BERT's
    tails = {gpt2_style_dir: "was slow and the cast great great great", bert_dir: "and the cast great great great"}
    for path, tail_text in tails.items():
        a, b = score(path, [prompt] * 2, [" great great great", " awful awful awful"], max_length=8)
        assert a != pytest.approx(b, abs=1e-6)  # the completions are still read
        (tail,) = score(path, [""], [tail_text], max_length=8)
        assert a == pytest.approx(tail, abs=1e-5)
    assert len(score(gpt2_style_dir, [prompt] * 3, ["", " good", " bad"])) == 3  # default 512, capped at 64


def test_the_tokenizer_without_pad_gets_eos_and_empty_inputs_are_fine(gpt2_style_dir):
    reward = build(ClassifierConfig(path=gpt2_style_dir), RewardContext())
    assert reward([], []) == []
    assert len(reward(["", ""], ["", " good"])) == 2
    with pytest.raises(ValueError):
        reward(["a", "b"], ["c"])


def test_low_precision_dtype_is_close(gpt2_style_dir):
    full = score(gpt2_style_dir)
    half = score(gpt2_style_dir, dtype="bfloat16")
    assert half == pytest.approx(full, abs=0.05) and all(isinstance(s, float) for s in half)


def test_recipe_names_what_changes_scores(gpt2_style_dir):
    from alignctl.rewards.classifier import ENTRY

    base = ENTRY.recipe(ClassifierConfig(path=gpt2_style_dir))
    assert base == ENTRY.recipe(ClassifierConfig(path=gpt2_style_dir, batch_size=1))
    assert base != ENTRY.recipe(ClassifierConfig(path=gpt2_style_dir, input="completion"))
    assert "files" in base and json.dumps(base)


# --- bad input ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields, needles",
    [
        ({}, ["reward.path"]),  # "???": not given
        ({"path": ""}, ["reward.path"]),
        ({"path": "m", "mode": "prob"}, ["reward.mode=prob", "pos_minus_neg, label, logit"]),
        ({"path": "m", "input": "prompt"}, ["reward.input=prompt", "prompt_completion, completion"]),
        ({"path": "m", "dtype": "fp8"}, ["reward.dtype=fp8", "float32, bfloat16, float16"]),
        ({"path": "m", "mode": "label"}, ["reward.label", "mode=label"]),
        ({"path": "m", "label": "POSITIVE"}, ["reward.label=POSITIVE", "mode=label"]),
        ({"path": "m", "positive_label": "pos", "negative_label": "POS"}, ["reward.negative_label=POS"]),
        ({"path": "m", "batch_size": 0}, ["reward.batch_size=0", ">= 1"]),
        ({"path": "m", "max_length": -1}, ["reward.max_length=-1"]),
    ],
)
def test_bad_values_fail_when_the_config_is_made(fields, needles):
    one_line_usage_error(lambda: ClassifierConfig(**fields), *needles)


def test_labels_the_model_does_not_have(gpt2_style_dir, reward_model_dir):
    message = one_line_usage_error(lambda: score(gpt2_style_dir, mode="label", label="happy"), "reward.label=happy")
    assert message == f"reward.label=happy is not a label of {gpt2_style_dir}; its labels: NEGATIVE, POSITIVE"
    one_line_usage_error(lambda: score(gpt2_style_dir, positive_label="pos"), "reward.positive_label=pos", "POSITIVE")
    one_line_usage_error(lambda: score(gpt2_style_dir, negative_label="neg"), "reward.negative_label=neg", "NEGATIVE")
    # a 1-label reward model has no sentiment labels: the message says which mode fits it
    one_line_usage_error(lambda: score(reward_model_dir), "reward.positive_label=POSITIVE", "LABEL_0", "mode=logit")


def test_logit_mode_needs_a_single_output_model(gpt2_style_dir):
    one_line_usage_error(
        lambda: score(gpt2_style_dir, mode="logit"), "reward.mode=logit", "num_labels == 1", "2 labels"
    )


def test_paths_that_do_not_load(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touch the network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    missing = str(tmp_path / "nope" / "model")
    one_line_usage_error(lambda: score(missing), f"reward.path={missing}", "does not exist")
    one_line_usage_error(lambda: score("./no/such/dir"), "reward.path=./no/such/dir", "does not exist")
    hub_id = "alignctl-test/no-such-model"
    one_line_usage_error(lambda: score(hub_id), f"reward.path={hub_id}", "HF cache", "HF_HUB_OFFLINE")
    one_line_usage_error(lambda: score(str(tmp_path)), f"reward.path={tmp_path}", "no config.json")
    (tmp_path / "config.json").write_text("{}")  # a directory that is no model
    one_line_usage_error(lambda: score(str(tmp_path)), f"reward.path={tmp_path}", "does not load")
    (tmp_path / "config.json").write_text("{not json")
    one_line_usage_error(lambda: score(str(tmp_path)), f"reward.path={tmp_path}", "does not load")


def test_a_hub_id_in_the_offline_cache_loads(gpt2_style_dir, tmp_path, monkeypatch):
    """A hub id resolves through the HF cache layout (models--org--name/snapshots/<commit>/) with no network."""
    import shutil

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    commit = "0" * 40
    repo = tmp_path / "models--alignctl-test--tiny-sentiment"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(gpt2_style_dir, repo / "snapshots" / commit)
    assert score("alignctl-test/tiny-sentiment") == pytest.approx(score(gpt2_style_dir), abs=1e-6)


def test_a_causal_lm_checkpoint_is_not_a_classifier(tmp_path):
    """Its classification head would be random: refused rather than scoring noise."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from .conftest import NO_PAD, _tokenizer

    tokenizer = _tokenizer(NO_PAD, bert=False)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    # its config.json names the architecture: refused when the config is checked, before any weights load
    one_line_usage_error(lambda: ClassifierConfig(path=str(tmp_path)), f"reward.path={tmp_path} is a causal LM",
                         "LlamaForCausalLM", "objective=reward_model")  # fmt: skip
    # without the architecture in config.json it loads, and the classifier weights its checkpoint lacks are named
    config = json.loads((tmp_path / "config.json").read_text())
    del config["architectures"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    one_line_usage_error(lambda: score(str(tmp_path)), f"reward.path={tmp_path}", "score.weight")


def test_a_run_directory_points_at_its_model(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    one_line_usage_error(lambda: ClassifierConfig(path=str(tmp_path)), "no config.json", f"{tmp_path / 'model'}")
