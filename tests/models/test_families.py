"""model.kernel=fused (decoder hidden states + the described head, tiled kernels) against model.kernel=naive (the
model's own forward logits, plain math) for every architecture family of the `family_model_dirs` fixture, on
left-padded batches of different lengths: sequence statistics for every divergence, per-token log-probs, and
gradients w.r.t. every policy parameter; and through PEFT (LoRA in the decoder, modules_to_save on the head,
`disable_adapter()` as the reference)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from alignctl.divergences import get as get_divergence
from alignctl.models.scoring import completion_token_logps, sequence_stats

from .conftest import FAMILIES

DIVERGENCES = [("reverse_kl", None), ("forward_kl", None), ("js", None), ("alpha", 0.3)]
VALUE_TOL = dict(rtol=1e-5, atol=1e-5)


def load(path, perturb_seed: int | None = None):
    """The family's model in eval mode (no dropout); with a seed, every weight scaled by 1 + 0.3 N(0, 1): a
    reference of the same family with other weights."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    if perturb_seed is not None:
        g = torch.Generator().manual_seed(perturb_seed)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
    return model


def left_padded_batch(vocab: int, pad_id: int, seed: int = 0):
    """Three sequences of 9, 8 and 6 real tokens, left-padded to 9; completions of 4, 3 and 5 tokens."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab, (3, 9), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :1] = 0
    attention_mask[2, :3] = 0
    input_ids[attention_mask == 0] = pad_id
    completion_mask = torch.zeros_like(input_ids)
    completion_mask[0, 5:] = 1
    completion_mask[1, 6:] = 1
    completion_mask[2, 4:] = 1
    return input_ids, attention_mask, completion_mask


@pytest.fixture(scope="module")
def family_models(family_model_dirs):
    """{family: (policy, reference, batch)}, loaded once for the module."""
    out = {}
    for family, path in family_model_dirs.items():
        policy, reference = load(path), load(path, perturb_seed=1)
        batch = left_padded_batch(policy.config.get_text_config().vocab_size, policy.config.pad_token_id)
        out[family] = (policy, reference, batch)
    return out


def assert_stats_close(got, want) -> None:
    for name in ("logps", "lengths", "entropy", "ref_logps", "divergence"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a.detach(), b.detach(), **VALUE_TOL, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("family", FAMILIES)
def test_fused_matches_naive_for_every_divergence(family_models, family):
    policy, reference, (input_ids, attention_mask, completion_mask) = family_models[family]
    with torch.no_grad():
        for name, alpha in DIVERGENCES:
            divergence = get_divergence(name, alpha)
            fused, naive = (
                sequence_stats(policy, input_ids, attention_mask, completion_mask, reference=reference,
                               divergence=divergence, kernel=kernel)
                for kernel in ("fused", "naive")
            )  # fmt: skip
            assert_stats_close(fused, naive)
            assert (fused.divergence > 0).all() and fused.ref_logps is not None
        fused, naive = (
            sequence_stats(policy, input_ids, attention_mask, completion_mask, kernel=kernel)
            for kernel in ("fused", "naive")
        )
        assert_stats_close(fused, naive)
        assert fused.lengths.tolist() == [4, 3, 5]
        tokens = [completion_token_logps(policy, input_ids, attention_mask, completion_mask, kernel=k)
                  for k in ("fused", "naive")]  # fmt: skip
        assert tokens[0].shape == (12,)
        torch.testing.assert_close(tokens[0], tokens[1], **VALUE_TOL)


def test_gemma2_fixture_cap_binds(family_models):
    """The fixture's Gemma-2 logits reach the softcap, so the fused path's cap (and its gradient) is exercised."""
    policy, _, (input_ids, attention_mask, _) = family_models["gemma2"]
    with torch.no_grad():
        logits = policy(input_ids=input_ids, attention_mask=attention_mask).logits
    cap = policy.config.final_logit_softcapping
    assert float(logits.abs().max()) > 0.99 * cap
    assert float((logits.abs() > 0.75 * cap).float().mean()) > 0.1  # tanh is well into its bend


def _policy_grads(policy, reference, batch, kernel: str, divergence) -> list[torch.Tensor]:
    input_ids, attention_mask, completion_mask = batch
    stats = sequence_stats(policy, input_ids, attention_mask, completion_mask, reference=reference,
                           divergence=divergence, kernel=kernel)  # fmt: skip
    weights = torch.tensor([1.0, -2.0, 0.5])
    loss = (stats.logps * weights).sum() + 0.3 * stats.entropy.sum() + 0.7 * stats.divergence.sum()
    params = [p for p in policy.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params, allow_unused=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_fused_gradients_match_naive(family_models, family):
    policy, reference, batch = family_models[family]
    divergence = get_divergence("reverse_kl" if family != "gemma2" else "js")
    fused = _policy_grads(policy, reference, batch, "fused", divergence)
    naive = _policy_grads(policy, reference, batch, "naive", divergence)
    names = [n for n, p in policy.named_parameters() if p.requires_grad]
    for name, a, b in zip(names, fused, naive):
        assert (a is None) == (b is None), name
        if a is not None:
            scale = max(float(b.abs().max()), 1e-8)
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale, msg=lambda m: f"{name}: {m}")
    assert any(a is not None and float(a.abs().max()) > 0 for a in fused)


# ---------------------------------------------------------------------------------------------------------------- PEFT


def _lora(model, **kw):
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False, **kw)
    return peft.get_peft_model(model, config).eval()


@pytest.mark.parametrize(
    ("family", "targets"), [("llama", ["q_proj", "v_proj", "down_proj"]), ("gpt2", ["c_attn", "c_fc"])]
)
def test_lora_policy_and_disabled_adapter_reference(family_model_dirs, family, targets):
    """The reference is the policy with its adapter off (reference_context=disable_adapter), as the preference
    trainer does with LoRA: fused equals naive, the adapter matters, and only LoRA weights get gradients."""
    base = load(family_model_dirs[family])
    model = _lora(base, target_modules=targets, fan_in_fan_out=family == "gpt2")
    batch = left_padded_batch(base.config.vocab_size, base.config.pad_token_id, seed=3)
    divergence = get_divergence("forward_kl")
    stats = {}
    for kernel in ("fused", "naive"):
        stats[kernel] = sequence_stats(
            model, *batch, reference=model, divergence=divergence, kernel=kernel,
            reference_context=model.disable_adapter,
        )  # fmt: skip
    assert_stats_close(stats["fused"], stats["naive"])
    assert float(stats["fused"].divergence.detach().min()) > 1e-4  # the adapter changes the distribution
    with torch.no_grad():  # adapter off == a fresh copy of the base model (get_peft_model injected LoRA into `base`)
        plain = sequence_stats(load(family_model_dirs[family]), *batch, kernel="naive")
    torch.testing.assert_close(stats["fused"].ref_logps, plain.logps, **VALUE_TOL)

    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    grads = {}
    for kernel in ("fused", "naive"):
        s = sequence_stats(model, *batch, reference=model, divergence=divergence, kernel=kernel,
                           reference_context=model.disable_adapter)  # fmt: skip
        grads[kernel] = torch.autograd.grad(s.logps.sum() + s.divergence.sum(), params)
    for a, b in zip(grads["fused"], grads["naive"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(float(b.abs().max()), 1e-8))


def test_lora_with_a_trained_copy_of_the_head(family_model_dirs):
    """modules_to_save=["lm_head"]: the fused path uses the adapter's copy of the head, and the original one under
    disable_adapter(); both copies differ, so taking the wrong one would show."""
    base = load(family_model_dirs["llama"])
    model = _lora(base, target_modules=["q_proj"], modules_to_save=["lm_head"])
    wrapper = model.get_output_embeddings()
    with torch.no_grad():
        copy = wrapper.modules_to_save["default"].weight
        copy.add_(0.5 * torch.randn(copy.shape, generator=torch.Generator().manual_seed(5)))
    batch = left_padded_batch(base.config.vocab_size, base.config.pad_token_id, seed=4)
    fused = {}
    with torch.no_grad():
        for adapter, context in (("on", contextlib.nullcontext), ("off", model.disable_adapter)):
            with context():
                fused[adapter], naive = (sequence_stats(model, *batch, kernel=k) for k in ("fused", "naive"))
            assert_stats_close(fused[adapter], naive)
    assert float((fused["on"].logps - fused["off"].logps).abs().max()) > 1e-2


@pytest.fixture
def one_rank_group(tmp_path):
    """A one-process gloo group: enough for DistributedDataParallel to wrap a model and run its hooks."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("family", FAMILIES)
def test_fused_path_through_a_ddp_wrapper_matches_the_bare_model(family_models, family, one_rank_group):
    """Under DDP the fused path runs the wrapper's forward (gradients are averaged only for such a forward) and
    takes the decoder's output from the hidden states: the same values and gradients as the bare model's."""
    from torch.nn.parallel import DistributedDataParallel

    policy, reference, batch = family_models[family]
    wrapped = DistributedDataParallel(policy)
    divergence = get_divergence("js", None)
    with torch.no_grad():
        assert_stats_close(
            sequence_stats(wrapped, *batch, reference=reference, divergence=divergence, kernel="fused"),
            sequence_stats(policy, *batch, reference=reference, divergence=divergence, kernel="fused"),
        )
    for got, want in zip(_policy_grads(wrapped, reference, batch, "fused", divergence),
                         _policy_grads(policy, reference, batch, "fused", divergence)):  # fmt: skip
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, **VALUE_TOL)
