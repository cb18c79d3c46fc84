"""adpa: SFT(y_w)/|y_w| - beta (1/|y|) sum_t sum_a pi_theta(a) (log pi_dpo(a) - log pi_ref(a)) on student samples.

The expectation is computed as KL(pi_theta || pi_ref) - KL(pi_theta || pi_dpo) by the fused kernel; checked here
against the direct [N, V] sum in float64 (value and gradient), on random heads and on tiny HF models of two widths.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignctl.kernels import token_logprobs_and_divergence
from alignctl.objectives import adpa

from ._helpers import grads, np_


def _direct_advantage(student_logits, dpo_logits, ref_logits) -> torch.Tensor:
    """sum_a p(a) (log q_dpo(a) - log q_ref(a)) per row, written out from the definition in float64."""
    p = torch.softmax(student_logits.double(), -1)
    log_dpo = dpo_logits.double() - torch.logsumexp(dpo_logits.double(), -1, keepdim=True)
    log_ref = ref_logits.double() - torch.logsumexp(ref_logits.double(), -1, keepdim=True)
    return (p * (log_dpo - log_ref)).sum(-1)


def _heads(seed: int, n=13, vocab=37, d=8, d_teacher=12, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    weight = torch.randn(vocab, d, generator=g, dtype=dtype).requires_grad_()
    teachers = [(torch.randn(n, d_teacher, generator=g, dtype=dtype), torch.randn(vocab, d_teacher, generator=g,
                                                                                   dtype=dtype)) for _ in range(2)]
    targets = torch.randint(0, vocab, (n,), generator=g)
    return hidden, weight, teachers, targets


def _kernel_advantage(hidden, weight, teachers, targets, impl="chunked"):
    (h_dpo, w_dpo), (h_ref, w_ref) = teachers
    common = dict(divergence="reverse_kl", impl=impl, row_chunk=4, vocab_chunk=8)
    to_ref = token_logprobs_and_divergence(hidden, weight, targets, ref_hidden=h_ref, ref_weight=w_ref, **common)
    to_dpo = token_logprobs_and_divergence(hidden, weight, targets, ref_hidden=h_dpo, ref_weight=w_dpo, **common)
    return adpa.expected_advantage(to_ref.divergence, to_dpo.divergence)


@pytest.mark.parametrize("impl", ["chunked", "reference"])
def test_two_kl_passes_equal_the_direct_expectation(impl):
    """KL(p || ref) - KL(p || dpo) = sum_a p (log dpo - log ref), value and gradient (teacher wider than student)."""
    hidden, weight, teachers, targets = _heads(seed=3)
    got = _kernel_advantage(hidden, weight, teachers, targets, impl)
    (h_dpo, w_dpo), (h_ref, w_ref) = teachers
    want = _direct_advantage(hidden @ weight.T, h_dpo @ w_dpo.T, h_ref @ w_ref.T)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert want.abs().min() > 1e-3  # a real signal, not an identity of zeros
    v = torch.randn(len(want), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((got * v).sum(), [hidden, weight]),
                    torch.autograd.grad((want * v).sum(), [hidden, weight])):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_float32_kernel_matches_float64_definition():
    hidden, weight, teachers, targets = _heads(seed=5, dtype=torch.float32)
    got = _kernel_advantage(hidden, weight, teachers, targets)
    (h_dpo, w_dpo), (h_ref, w_ref) = teachers
    want = _direct_advantage(hidden.double() @ weight.double().T, h_dpo.double() @ w_dpo.double().T,
                             h_ref.double() @ w_ref.double().T)  # fmt: skip
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_advantage_is_zero_when_teacher_equals_its_reference():
    """Spec 11's sanity check: pi_dpo = pi_ref gives A = 0 everywhere, so no gradient from the advantage term."""
    hidden, weight, (teacher, _), targets = _heads(seed=7)
    advantage = _kernel_advantage(hidden, weight, [teacher, teacher], targets)
    torch.testing.assert_close(advantage, torch.zeros_like(advantage), rtol=0, atol=1e-12)
    for g in torch.autograd.grad(advantage.sum(), [hidden, weight]):
        assert g.abs().max() < 1e-10


def _advantage_logps(seed=0, batch=5, with_advantage=True):
    g = torch.Generator().manual_seed(seed)
    leaves = {
        "policy_chosen_logps": -torch.rand(batch, generator=g, dtype=torch.float64) * 30,
        "policy_rejected_logps": -torch.rand(batch, generator=g, dtype=torch.float64) * 30,
    }
    if with_advantage:
        leaves["sample_advantage"] = torch.randn(batch, generator=g, dtype=torch.float64) * 3
    leaves = {k: v.requires_grad_() for k, v in leaves.items()}
    n_w, n_s = torch.randint(1, 20, (batch,), generator=g), torch.randint(1, 20, (batch,), generator=g)
    return adpa.AdvantageLogps(chosen_lengths=n_w, rejected_lengths=n_s, **leaves), leaves


def test_loss_value_gradient_and_rewards():
    beta, sft = 1.3, 0.6
    logps, leaves = _advantage_logps(seed=21)
    out = adpa.loss(logps, divergence=None, beta=beta, sft_weight=sft)
    n_w, n_s = logps.chosen_lengths.double().numpy(), logps.rejected_lengths.double().numpy()
    l_w, l_s, a = (np_(leaves[k]) for k in ("policy_chosen_logps", "policy_rejected_logps", "sample_advantage"))
    np.testing.assert_allclose(np_(out.losses), -sft * l_w / n_w - beta * a / n_s, rtol=1e-12)
    g = grads(out.losses, leaves)
    np.testing.assert_allclose(np_(g["policy_chosen_logps"]), -sft / n_w, rtol=1e-12)
    np.testing.assert_allclose(np_(g["sample_advantage"]), -beta / n_s, rtol=1e-12)
    assert g["policy_rejected_logps"] is None  # the sample's likelihood itself is not trained
    np.testing.assert_allclose(np_(out.chosen_rewards), l_w / n_w, rtol=1e-12)
    np.testing.assert_allclose(np_(out.rejected_rewards), l_s / n_s, rtol=1e-12)


def test_without_teachers_losses_are_nan_and_rewards_defined():
    """eval scores held-out pairs for their rewards only; it has no teachers, so no advantage."""
    logps, _ = _advantage_logps(seed=22, with_advantage=False)
    out = adpa.loss(logps, divergence=None)
    assert torch.isnan(out.losses).all()
    assert torch.isfinite(out.chosen_rewards).all() and torch.isfinite(out.rejected_rewards).all()


def test_registry_entry():
    from ._helpers import check_entry

    check_entry("adpa", defaults={"beta": 1.6, "sft_weight": 1.0}, data="pairs", needs_reference=False,
                divergences=set(), default_divergence="none")  # fmt: skip
    from alignctl import objectives

    assert objectives.get("adpa").model_options == ("teacher", "teacher_reference")


# --- the trainer's scoring on real (tiny) models: student d=32, teacher d=48, one tokenizer --------------------
TEXTS = ["the film was a quiet delight.", "a dull plot and wooden acting.", "an honest, warm story."] * 6


@pytest.fixture(scope="module")
def models():
    from alignctl.data.tasks import tiny_lm
    from alignctl.models.schema import TinyModelConfig

    tokenizer = tiny_lm.train_bpe_tokenizer(TEXTS, vocab_size=280, model_max_length=64)
    built = []
    for seed, width in ((0, 32), (1, 48), (2, 48)):
        cfg = TinyModelConfig(seed=seed, hidden_size=width, num_layers=1, num_heads=2, intermediate_size=64,
                              max_position_embeddings=64)  # fmt: skip
        model = tiny_lm.build_llama(cfg, tokenizer)
        with torch.no_grad():  # logits of std ~1 rather than near-uniform ones
            model.lm_head.weight.mul_(8.0)
        built.append(model)
    return tokenizer, built


def _batch(tokenizer):
    from alignctl.models.sampling import pad_left

    rows = [(tokenizer(p)["input_ids"], tokenizer(c, add_special_tokens=False)["input_ids"])
            for p, c in (("the film", " was a quiet delight."), ("a dull", " plot and wooden acting."))]  # fmt: skip
    return pad_left(rows, tokenizer.pad_token_id)


@pytest.mark.parametrize("kernel", ["fused", "naive"])
def test_advantage_stats_on_models_match_full_logits(models, kernel):
    from alignctl.trainers.distill import advantage_stats

    tokenizer, (student, dpo, ref) = models
    b = _batch(tokenizer)
    stats, advantage = advantage_stats(student, dpo, ref, b.input_ids, b.attention_mask, b.completion_mask, kernel)
    position_ids = (b.attention_mask.cumsum(-1) - 1).clamp(min=0)

    def logits(model):
        return model(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=position_ids).logits[:, :-1]

    mask = b.completion_mask[:, 1:].bool()
    per_token = _direct_advantage(logits(student), logits(dpo), logits(ref)) * mask
    torch.testing.assert_close(advantage.double(), per_token.sum(-1), rtol=2e-4, atol=2e-4)
    assert per_token.sum(-1).abs().min() > 1e-2
    assert (stats.lengths == mask.sum(-1)).all()
    to_student, to_teacher = torch.autograd.grad(advantage.sum(), [student.lm_head.weight, dpo.lm_head.weight],
                                                 retain_graph=True, allow_unused=True)  # fmt: skip
    assert to_student.abs().max() > 0 and to_teacher is None  # only the student learns
    _, same = advantage_stats(student, dpo, dpo, b.input_ids, b.attention_mask, b.completion_mask, kernel)
    torch.testing.assert_close(same, torch.zeros_like(same), rtol=0, atol=1e-5)


def test_student_samples_replace_rejected_and_are_seeded(models):
    from datasets import Dataset

    from alignctl.trainers.distill import with_student_samples

    tokenizer, (student, _, _) = models
    pairs = Dataset.from_dict({"prompt": ["the film", "a dull", "the film"], "chosen": ["c1", "c2", "c3"],
                               "rejected": ["r1", "r2", "r3"]})  # fmt: skip
    first = with_student_samples(student, tokenizer, pairs, max_new_tokens=6, seed=3, batch_size=2)
    again = with_student_samples(student, tokenizer, pairs, max_new_tokens=6, seed=3, batch_size=2)
    other = with_student_samples(student, tokenizer, pairs, max_new_tokens=6, seed=4, batch_size=2)
    assert first["chosen"] == pairs["chosen"] and first["prompt"] == pairs["prompt"]
    assert first["rejected"] == again["rejected"]
    assert first["rejected"] != other["rejected"] and not set(first["rejected"]) & {"r1", "r2", "r3"}
