"""Tiny randomly initialised sequence classifiers, saved as ordinary HF directories (nothing is downloaded)."""

import pytest
import torch

WORDS = (
    "the a film movie plot acting music cast ending story was is were and but not very really quite "
    "great good wonderful lovely fine bad awful boring dull terrible long short slow funny sad"
).split()
NO_PAD = ["<unk>", "</s>"]  # GPT-2 style: an eos token, no pad token
WITH_PAD = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]  # BERT style


def _tokenizer(specials, bert):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(specials + WORDS + [".", ","])}
    unk = specials[1] if bert else specials[0]
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bert:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
            model_max_length=64,
        )  # fmt: skip
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>", model_max_length=64)


def _save(model, tokenizer, path):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)



def _llama(num_labels, id2label, tokenizer, seed):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64, num_labels=num_labels, id2label=id2label,
        label2id={v: k for k, v in id2label.items()}, eos_token_id=tokenizer.eos_token_id, pad_token_id=None,
    )  # fmt: skip
    model = LlamaForSequenceClassification(cfg)
    with torch.no_grad():  # random init gives near-zero logits: spread them so the scores differ visibly
        model.score.weight.normal_(0, 0.3)
    return model


@pytest.fixture(scope="session")
def gpt2_style_dir(tmp_path_factory):
    """A 2-label sentiment classifier (Llama) whose tokenizer has no pad token, only eos."""
    tokenizer = _tokenizer(NO_PAD, bert=False)
    model = _llama(2, {0: "NEGATIVE", 1: "POSITIVE"}, tokenizer, seed=0)
    return _save(model, tokenizer, tmp_path_factory.mktemp("sentiment-llama"))


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory):
    """A 3-label BERT classifier with lower-case labels and a pad token ([CLS] pooling)."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = _tokenizer(WITH_PAD, bert=True)
    torch.manual_seed(1)
    cfg = BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=64, num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"},
        label2id={"negative": 0, "neutral": 1, "positive": 2}, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 2.0)
    return _save(model, tokenizer, tmp_path_factory.mktemp("sentiment-bert"))


@pytest.fixture(scope="session")
def reward_model_dir(tmp_path_factory):
    """A single-output reward model (num_labels == 1)."""
    tokenizer = _tokenizer(NO_PAD, bert=False)
    model = _llama(1, {0: "LABEL_0"}, tokenizer, seed=2)
    return _save(model, tokenizer, tmp_path_factory.mktemp("reward-model"))
