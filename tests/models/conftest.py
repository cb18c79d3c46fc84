"""Tiny randomly initialised causal LMs of several architecture families, saved as ordinary HF directories.

`family_model_dirs` (session scope) -> {family name: Path}: each directory loads with
`AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`, holds safetensors weights, a
generation config and a byte-level BPE tokenizer (a few hundred tokens, BOS/EOS/PAD set) trained on FAMILY_TEXTS.
Families and what each covers in the LM head:

* llama: untied lm_head;
* qwen2: lm_head tied to the input embeddings (tie_word_embeddings=True);
* gpt2: lm_head tied to `transformer.wte`, LayerNorm decoder, dropout 0.1 (its defaults; call .eval() for
  deterministic forwards);
* gpt_neox: untied output layer (Pythia's `embed_out`, `lm_head` in transformers 5), parallel residual;
* gemma2: final_logit_softcapping = GEMMA2_SOFTCAP, with the final norm scaled so that the pre-cap logits have a
  standard deviation of ~1.5 caps on the fixture texts, so the cap bends most of them (tanh saturates).

Hidden size 32, 1 layer (gemma2: 2, for its alternating sliding/global layers), float32, initializer_range 0.1
(logits of std ~1 instead of HF's near-uniform 0.02 init).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

FAMILIES = ("llama", "qwen2", "gpt2", "gpt_neox", "gemma2")
FAMILY_TEXTS = [
    "the film was a quiet delight from start to finish.",
    "a dull plot and wooden acting made it hard to watch.",
    "Q: 12+34=? A: 2+4=6; 1+3=4. The answer is 46.",
    "she said the ending was brilliant, and I agree.",
    "nothing in this movie works; the score is loud and the jokes fall flat.",
    "an honest, warm story with a great cast.",
] * 4
GEMMA2_SOFTCAP = 10.0
VOCAB_SIZE = 320
SEED = 1234



def _config(family: str, tokenizer, vocab_size: int):
    from transformers import AutoConfig

    ids = dict(
        vocab_size=vocab_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.1,
    )
    if family == "gpt2":
        return AutoConfig.for_model("gpt2", n_embd=32, n_layer=1, n_head=2, n_positions=128, **ids)
    common = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128, **ids)
    if family == "llama":
        return AutoConfig.for_model("llama", num_hidden_layers=1, num_key_value_heads=2, tie_word_embeddings=False,
                                    **common)  # fmt: skip
    if family == "qwen2":
        return AutoConfig.for_model("qwen2", num_hidden_layers=1, num_key_value_heads=1, tie_word_embeddings=True,
                                    **common)  # fmt: skip
    if family == "gpt_neox":
        return AutoConfig.for_model("gpt_neox", num_hidden_layers=1, tie_word_embeddings=False, **common)
    if family == "gemma2":
        return AutoConfig.for_model(
            "gemma2", num_hidden_layers=2, num_key_value_heads=1, head_dim=16, sliding_window=16,
            final_logit_softcapping=GEMMA2_SOFTCAP, **common,
        )  # fmt: skip
    raise KeyError(family)


def _bend_gemma2_logits(model, tokenizer) -> None:
    """Scale Gemma-2's final norm ((1 + w) x) so that the pre-cap logits have std ~1.5 caps on the fixture texts."""
    batch = tokenizer(FAMILY_TEXTS[:6], return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = model.model(**batch).last_hidden_state[batch["attention_mask"].bool()]
        std = float((hidden @ model.lm_head.weight.T).std())
        norm = model.model.norm.weight
        norm.copy_((1.0 + norm) * (1.5 * GEMMA2_SOFTCAP / std) - 1.0)


def build_family(family: str, path: Path) -> Path:
    """A tiny random `family` model and its tokenizer saved to `path` (seeded: the same weights every time).

    The vocabulary is the tokenizer's as AutoTokenizer loads it beside this family's config: transformers 5 picks
    the tokenizer class from the config's model_type, and Qwen2Tokenizer adds its own <|endoftext|>."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from alignctl.data.tasks import tiny_lm
    from alignctl.models import files

    trained = tiny_lm.train_bpe_tokenizer(FAMILY_TEXTS, vocab_size=VOCAB_SIZE, model_max_length=128)
    with files.quiet():
        trained.save_pretrained(path)
        _config(family, trained, len(trained)).save_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    set_seed(SEED)
    model = AutoModelForCausalLM.from_config(_config(family, tokenizer, len(tokenizer))).to(torch.float32)
    if family == "gemma2":
        _bend_gemma2_logits(model, tokenizer)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, getattr(tokenizer, key))
    files.save_hf_dir(model, tokenizer, path)
    return path


@pytest.fixture(scope="session")
def family_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """{family: directory} for FAMILIES; see the module docstring."""
    root = tmp_path_factory.mktemp("families")
    return {family: build_family(family, root / family) for family in FAMILIES}
