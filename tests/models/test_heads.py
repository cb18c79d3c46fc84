"""describe_head / verify_head per family, heads with a bias and a logit scale, what the probe catches, and
resolve_kernel's fallback to model.kernel=naive with its one-line notice."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from alignctl.divergences import get as get_divergence
from alignctl.models.heads import Head, decoder_hidden, describe_head, verify_head
from alignctl.models.scoring import resolve_kernel, sequence_stats

from .test_families import assert_stats_close, left_padded_batch, load

# family -> (the module whose weight is the head's, softcap)
EXPECTED = {
    "llama": ("lm_head", None),
    "qwen2": ("model.embed_tokens", None),  # tied
    "gpt2": ("transformer.wte", None),  # tied
    "gpt_neox": ("lm_head", None),  # Pythia's untied embed_out
    "gemma2": ("model.embed_tokens", 10.0),  # tied, final_logit_softcapping
}
NOTICE = re.compile(r"^alignctl: model\.kernel=fused cannot score (\w+) \((.+)\); using model\.kernel=naive$")


@pytest.mark.parametrize("family", list(EXPECTED))
def test_describe_and_verify_each_family(family_model_dirs, family):
    model = load(family_model_dirs[family])
    head = describe_head(model)
    assert isinstance(head, Head), head
    owner, softcap = EXPECTED[family]
    assert head.weight is model.get_submodule(owner).weight
    assert head.bias is None and head.logit_scale == 1.0 and head.softcap == softcap
    assert verify_head(model, head) is None
    if family == "gpt_neox":
        assert head.weight is not model.get_input_embeddings().weight
    assert resolve_kernel(model, "fused") == "fused"


def test_verify_head_catches_wrong_heads(family_model_dirs):
    gemma = load(family_model_dirs["gemma2"])
    head = describe_head(gemma)
    assert verify_head(gemma, Head(head.weight)) is not None  # the fixture's logits reach the cap
    assert verify_head(gemma, Head(head.weight, softcap=30.0)) is not None  # the wrong cap
    # HF's own init: logits of ~0.1, where a cap of 30 changes nothing visible; the amplified probe reaches +-400
    small = _tiny("gemma2", head_dim=16, num_key_value_heads=1, final_logit_softcapping=30.0, initializer_range=0.02)
    head = describe_head(small)
    assert head.softcap == 30.0 and verify_head(small, head) is None
    assert "amplified" in verify_head(small, Head(head.weight))
    llama = load(family_model_dirs["llama"])
    head = describe_head(llama)
    assert verify_head(llama, Head(head.weight, logit_scale=1.01)) is not None
    assert verify_head(llama, Head(head.weight, bias=torch.full((head.weight.shape[0],), 0.5))) is not None
    assert verify_head(llama, Head(llama.get_input_embeddings().weight)) is not None  # untied: not the embeddings
    assert "logits per token" in verify_head(llama, Head(head.weight[:-1]))
    assert verify_head(llama, head) is None
    assert not llama.training  # eval mode restored (and training mode below)
    llama.train()
    assert verify_head(llama, head) is None and llama.training


def _tiny(config_name: str, **kw):
    """A tiny random model built in memory (initializer_range 0.2 unless given: logits of std ~1-2)."""
    from transformers import AutoConfig, AutoModelForCausalLM, set_seed

    kw.setdefault("initializer_range", 0.2)
    config = AutoConfig.for_model(
        config_name, vocab_size=96, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=0, **kw,
    )  # fmt: skip
    set_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def _fused_equals_naive(model, reference=None) -> None:
    batch = left_padded_batch(model.config.vocab_size, model.config.pad_token_id, seed=7)
    divergence = get_divergence("js") if reference is not None else None
    stats = [sequence_stats(model, *batch, reference=reference, divergence=divergence, kernel=k)
             for k in ("fused", "naive")]  # fmt: skip
    assert_stats_close(*stats)
    params = [p for p in model.parameters()]
    grads = [torch.autograd.grad(s.logps.sum() + s.entropy.sum(), params, allow_unused=True) for s in stats]
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(float(b.abs().max()), 1e-8))


def test_head_with_bias_phi():
    """Phi's lm_head has a bias (nn.Linear(bias=True) in PhiForCausalLM): the Head carries it and the fused path
    (bias through the kernels, with its gradient) matches the model's own logits."""
    model = _tiny("phi")
    with torch.no_grad():
        model.lm_head.bias.normal_(0.0, 1.0)  # HF initialises it to zero
    head = describe_head(model)
    assert head.bias is model.lm_head.bias and head.logit_scale == 1.0 and head.softcap is None
    assert verify_head(model, head) is None
    assert verify_head(model, Head(head.weight)) is not None  # the bias matters
    reference = _tiny("phi")
    _fused_equals_naive(model, reference)


@pytest.mark.parametrize(
    ("name", "kw", "scale"),
    [("cohere", dict(logit_scale=0.25), 0.25), ("granite", dict(logits_scaling=4.0), 0.25)],
    ids=["cohere", "granite"],
)
def test_logit_scale(name, kw, scale):
    """Cohere multiplies its logits by logit_scale, Granite divides them by logits_scaling."""
    model = _tiny(name, **kw)
    head = describe_head(model)
    assert isinstance(head, Head) and head.logit_scale == pytest.approx(scale) and head.softcap is None
    assert verify_head(model, head) is None
    assert verify_head(model, Head(head.weight)) is not None
    _fused_equals_naive(model, _tiny(name, **kw))


class _DoubledHead(nn.Module):
    """A custom output module alignctl cannot read as a map."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x):
        return 2.0 * self.linear(x)


def test_resolve_kernel_falls_back_for_an_unrecognised_head(family_model_dirs, capsys):
    model = load(family_model_dirs["llama"])
    model.set_output_embeddings(_DoubledHead(model.lm_head))
    capsys.readouterr()  # from_pretrained's progress bar
    reason = describe_head(model)
    assert isinstance(reason, str) and "_DoubledHead" in reason
    assert resolve_kernel(model, "naive") == "naive"
    assert capsys.readouterr().err == ""
    assert resolve_kernel(model, "fused") == "naive"
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    match = NOTICE.match(lines[0])
    assert match and match.group(1) == "LlamaForCausalLM" and "_DoubledHead" in match.group(2)
    batch = left_padded_batch(model.config.vocab_size, model.config.pad_token_id)
    with pytest.raises(ValueError, match="model.kernel=fused cannot score"):
        sequence_stats(model, *batch, kernel="fused")
    # naive scores what the model computes: log-softmax of the doubled logits
    with torch.no_grad():
        stats = sequence_stats(model, *batch, kernel="naive")
        input_ids, attention_mask, completion_mask = batch
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        logits = 2.0 * model.lm_head.linear(decoder_hidden(model, input_ids, attention_mask, positions))
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, input_ids[:, 1:, None])[..., 0]
        torch.testing.assert_close(stats.logps, (logp * completion_mask[:, 1:]).sum(1))
    with pytest.raises(ValueError, match="model.kernel"):
        resolve_kernel(model, "chunked")


def test_resolve_kernel_falls_back_when_the_forward_does_more(family_model_dirs, capsys):
    """A forward that transforms the logits in a way no config field tells: describe_head sees a plain Linear, the
    probe sees the difference."""
    from transformers import LlamaForCausalLM

    class Shifted(LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 1.5
            return out

    model = Shifted.from_pretrained(family_model_dirs["llama"]).eval()
    capsys.readouterr()
    assert isinstance(describe_head(model), Head)
    assert resolve_kernel(model, "fused") == "naive"
    (line,) = capsys.readouterr().err.splitlines()
    assert NOTICE.match(line) and "differ" in line


def test_unknown_logit_transform_in_config_is_not_guessed(family_model_dirs):
    model = load(family_model_dirs["llama"])
    model.config.final_logit_softcapping = 20.0  # llama's forward ignores it, but alignctl does not guess
    reason = describe_head(model)
    assert isinstance(reason, str) and "final_logit_softcapping" in reason


def test_peft_models(family_model_dirs):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(
        load(family_model_dirs["qwen2"]), peft.LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)
    ).eval()
    head = describe_head(model)
    assert isinstance(head, Head) and verify_head(model, head) is None
    assert resolve_kernel(model, "fused") == "fused"
    with model.disable_adapter():
        assert verify_head(model, describe_head(model)) is None
    # LoRA on the output layer itself: not a plain map
    on_head = peft.get_peft_model(load(family_model_dirs["llama"]), peft.LoraConfig(r=2, target_modules=["lm_head"]))
    reason = describe_head(on_head)
    assert isinstance(reason, str) and "PEFT adapter" in reason
    # prompt tuning adds virtual tokens in PeftModel.forward, which the decoder alone would not see
    prompt = peft.get_peft_model(
        load(family_model_dirs["llama"]), peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2)
    )
    reason = describe_head(prompt)
    assert isinstance(reason, str) and "virtual tokens" in reason
