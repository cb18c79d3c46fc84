"""orpo: NLL(y_w) + lam [-log sigmoid(r_w - r_l)], r = log odds of P = exp(lbar); and TRL's ORPOTrainer on one batch."""

from __future__ import annotations

import math
import types
import warnings

import numpy as np
import pytest
import torch

from alignctl.objectives import orpo
from alignctl.objectives.base import PreferenceLogps

from ._helpers import LOW_PRECISION, assert_finite, div, extreme_pairs, grads, np_


def _pairs(seed=0, batch=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    leaves = {"policy_chosen_logps": -torch.rand(batch, generator=g, dtype=torch.float64) * 30 - 0.1,
              "policy_rejected_logps": -torch.rand(batch, generator=g, dtype=torch.float64) * 30 - 0.1}
    leaves = {k: v.to(dtype).requires_grad_() for k, v in leaves.items()}
    n_w, n_l = torch.randint(1, 20, (batch,), generator=g), torch.randint(1, 20, (batch,), generator=g)
    return PreferenceLogps(leaves["policy_chosen_logps"], leaves["policy_rejected_logps"], n_w, n_l), leaves


# --- the paper's formula, straight from probabilities and odds, in plain math -----------------------------------
def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _reference(s_w: float, s_l: float, n_w: float, n_l: float, lam: float) -> tuple[float, float, float]:
    """(loss, log odds_w, log odds_l) for summed log-probs s and lengths n."""
    p_w, p_l = math.exp(s_w / n_w), math.exp(s_l / n_l)  # P = geometric mean of the token probabilities
    r_w, r_l = math.log(p_w / (1 - p_w)), math.log(p_l / (1 - p_l))
    return -s_w / n_w + lam * -_log_sigmoid(r_w - r_l), r_w, r_l


def test_value_and_gradient_against_the_formula():
    lam = 0.7
    logps, leaves = _pairs(seed=81)
    out = orpo.loss(logps, divergence=None, lam=lam)
    s_w, s_l = np_(leaves["policy_chosen_logps"]), np_(leaves["policy_rejected_logps"])
    n_w, n_l = logps.chosen_lengths.double().numpy(), logps.rejected_lengths.double().numpy()
    ref = np.array([_reference(*row, lam) for row in zip(s_w, s_l, n_w, n_l)])
    np.testing.assert_allclose(np_(out.losses), ref[:, 0], rtol=1e-10)
    np.testing.assert_allclose(np_(out.chosen_rewards), ref[:, 1], rtol=1e-10)
    np.testing.assert_allclose(np_(out.rejected_rewards), ref[:, 2], rtol=1e-10)
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad

    g = grads(out.losses, leaves)
    # central differences of the plain-math loss, per example
    h = 1e-6
    fd_w = [(_reference(a + h, b, na, nb, lam)[0] - _reference(a - h, b, na, nb, lam)[0]) / (2 * h)
            for a, b, na, nb in zip(s_w, s_l, n_w, n_l)]
    fd_l = [(_reference(a, b + h, na, nb, lam)[0] - _reference(a, b - h, na, nb, lam)[0]) / (2 * h)
            for a, b, na, nb in zip(s_w, s_l, n_w, n_l)]
    np.testing.assert_allclose(np_(g["policy_chosen_logps"]), fd_w, rtol=1e-6)
    np.testing.assert_allclose(np_(g["policy_rejected_logps"]), fd_l, rtol=1e-6)
    # by hand: d r / d lbar = 1 / (1 - P); d(-log sigmoid(d)) / d d = -(1 - sigmoid(d)) = -sigmoid(-d)
    p_w, p_l = np.exp(s_w / n_w), np.exp(s_l / n_l)
    s_neg = 1.0 / (1.0 + np.exp(ref[:, 1] - ref[:, 2]))
    np.testing.assert_allclose(np_(g["policy_chosen_logps"]), (-1 - lam * s_neg / (1 - p_w)) / n_w, rtol=1e-10)
    np.testing.assert_allclose(np_(g["policy_rejected_logps"]), lam * s_neg / (1 - p_l) / n_l, rtol=1e-10)


def test_equal_odds_and_lambda_zero():
    """Equal mean log-probs: the ratio term is lam log 2 whatever the lengths; lam = 0 is SFT on the chosen."""
    lam, lbar = 0.3, math.log(0.2)
    logps = PreferenceLogps(torch.tensor([3 * lbar]), torch.tensor([5 * lbar]), torch.tensor([3]), torch.tensor([5]))
    out = orpo.loss(logps, divergence=None, lam=lam)
    torch.testing.assert_close(out.losses, torch.tensor([-lbar + lam * math.log(2.0)]))
    logps, leaves = _pairs(seed=82)
    out = orpo.loss(logps, divergence=None, lam=0.0)
    torch.testing.assert_close(out.losses, -leaves["policy_chosen_logps"] / logps.chosen_lengths)
    assert (grads(out.losses, leaves)["policy_rejected_logps"] == 0).all()


def test_default_lambda_and_no_divergence():
    import inspect

    assert inspect.signature(orpo.loss).parameters["lam"].default == 0.1
    assert orpo.OBJECTIVE.divergences == () and not orpo.OBJECTIVE.needs_reference
    logps, _ = _pairs(seed=83)
    with pytest.raises(ValueError, match="objective=orpo uses no divergence"):
        orpo.loss(logps, divergence=div("js"))


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_finite_at_extreme_log_probs(dtype):
    logps, leaves = extreme_pairs(dtype, reference=False)  # mean log-probs from -1000 to 0 (P = 1) and impossible > 0
    out = orpo.loss(logps, divergence=None)
    assert_finite(out, leaves)
    assert out.losses.dtype == torch.float32  # low precision in, float32 math


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_low_precision_is_computed_in_float32(dtype):
    logps, leaves = _pairs(seed=84, dtype=dtype)
    out = orpo.loss(logps, divergence=None, lam=0.5)
    s_w, s_l = np_(leaves["policy_chosen_logps"]), np_(leaves["policy_rejected_logps"])  # the rounded inputs
    n_w, n_l = logps.chosen_lengths.double().numpy(), logps.rejected_lengths.double().numpy()
    ref = [_reference(*row, 0.5)[0] for row in zip(s_w, s_l, n_w, n_l)]
    assert out.losses.dtype == torch.float32
    np.testing.assert_allclose(np_(out.losses), ref, rtol=2e-5)


def test_probability_one_is_finite():
    """Both responses with P = 1 (mean log-prob 0): TRL's log-odds are +inf and its loss NaN; here lam log 2."""
    zero = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    out = orpo.loss(PreferenceLogps(zero, zero * 1, torch.tensor([4]), torch.tensor([4])), divergence=None, lam=0.1)
    torch.testing.assert_close(out.losses, torch.tensor([0.1 * math.log(2.0)], dtype=torch.float64))
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([-math.log(-math.expm1(-1e-5))], dtype=torch.float64))
    (g,) = torch.autograd.grad(out.losses.sum(), zero)
    assert torch.isfinite(g).all()


def test_registry_entry():
    from ._helpers import check_entry

    check_entry(
        "orpo", defaults={"lam": 0.1}, data="pairs", needs_reference=False, divergences=set(),
        default_divergence="none",
    )


# --- TRL's own ORPO loss on one batch -----------------------------------------------------------------------------
class _TinyLM(torch.nn.Module):
    """logits = a table lookup of the input token: enough for TRL's forward (it reads `.logits`)."""

    def __init__(self, vocab: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=g, dtype=torch.float64) * 2)

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        return types.SimpleNamespace(logits=self.table[input_ids])


def _trl_trainer(beta: float):
    """An ORPOTrainer with only the attributes its loss path reads (no model, data or accelerator set up)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trl.experimental")
        from trl.experimental.orpo import ORPOTrainer  # TRL's own trainer: the reference under test

    trainer = object.__new__(ORPOTrainer)
    trainer.__dict__.update(
        beta=beta, is_encoder_decoder=False, padding_value=0, aux_loss_enabled=False,
        accelerator=types.SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x),
    )
    return trainer


def _batch(prompt_len: int, chosen_lens: list[int], rejected_lens: list[int], vocab: int, seed: int):
    """TRL's tokenized pair batch: prompt + completion ids, right-padded; labels -100 on the prompt and padding."""
    g = torch.Generator().manual_seed(seed)
    batch = {}
    for side, lens in (("chosen", chosen_lens), ("rejected", rejected_lens)):
        width = prompt_len + max(lens)
        ids = torch.randint(1, vocab, (len(lens), width), generator=g)
        real = torch.arange(width)[None, :] < (prompt_len + torch.tensor(lens))[:, None]
        ids = torch.where(real, ids, 0)
        labels = torch.where(real, ids, -100)
        labels[:, :prompt_len] = -100
        batch.update({f"{side}_input_ids": ids, f"{side}_attention_mask": real.long(), f"{side}_labels": labels})
    return batch


def _our_logps(model, batch) -> PreferenceLogps:
    """Completion log-prob sums and lengths, computed here from the same logits (alignctl's trainer's statistics)."""
    out = {}
    for side in ("chosen", "rejected"):
        logits = model(batch[f"{side}_input_ids"]).logits[:, :-1]
        labels = batch[f"{side}_labels"][:, 1:]
        mask = labels != -100
        per_token = logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        out[f"{side}_logps"], out[f"{side}_len"] = (per_token * mask).sum(-1), mask.sum(-1)
    return PreferenceLogps(out["chosen_logps"], out["rejected_logps"], out["chosen_len"], out["rejected_len"])


def test_matches_trl_when_its_nll_covers_the_same_tokens():
    """TRL's NLL is one token mean over prompt + completion of the chosen half; with a one-token prompt (never a
    target) and chosen completions of equal length it is the mean of -lbar_w, and TRL's total loss, ratio term,
    log odds ratio and gradient equal alignctl's."""
    beta, vocab = 0.25, 11
    model = _TinyLM(vocab, seed=91)
    batch = _batch(prompt_len=1, chosen_lens=[6, 6, 6, 6], rejected_lens=[2, 7, 4, 5], vocab=vocab, seed=92)
    trl_loss, metrics = _trl_trainer(beta).get_batch_loss_metrics(model, batch)
    (trl_grad,) = torch.autograd.grad(trl_loss, model.table)

    logps = _our_logps(model, batch)
    out = orpo.loss(logps, divergence=None, lam=beta)
    (our_grad,) = torch.autograd.grad(out.losses.mean(), model.table)
    lbar_w = (logps.policy_chosen_logps / logps.chosen_lengths).detach()
    lbar_l = (logps.policy_rejected_logps / logps.rejected_lengths).detach()

    torch.testing.assert_close(metrics["nll_loss"], -lbar_w.mean().item(), rtol=1e-6, atol=0)
    torch.testing.assert_close(trl_loss.double(), out.losses.mean().detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(trl_grad, our_grad, rtol=1e-5, atol=1e-7)  # TRL's ratio term runs in float32
    margin = out.chosen_rewards - out.rejected_rewards
    torch.testing.assert_close(metrics["log_odds_chosen"], margin.mean().item(), rtol=1e-6, atol=0)
    ratio = torch.nn.functional.logsigmoid(margin)
    torch.testing.assert_close(metrics["log_odds_ratio"], ratio.mean().item(), rtol=1e-6, atol=0)
    # TRL's `rewards/*` are beta * lbar, not the log-odds alignctl reports
    torch.testing.assert_close(metrics["rewards/chosen"], beta * lbar_w.mean().item(), rtol=1e-6, atol=0)
    torch.testing.assert_close(metrics["rewards/rejected"], beta * lbar_l.mean().item(), rtol=1e-6, atol=0)


def test_trl_ratio_term_matches_and_its_nll_convention_differs():
    """With a longer prompt and chosen completions of unequal length TRL's ratio term still equals alignctl's; its NLL
    is the token mean pooled over prompt and completion tokens of the whole chosen half, not the mean of -lbar_w."""
    beta, vocab = 0.1, 13
    model = _TinyLM(vocab, seed=93)
    batch = _batch(prompt_len=4, chosen_lens=[1, 9, 3], rejected_lens=[5, 2, 8], vocab=vocab, seed=94)
    trl_loss, metrics = _trl_trainer(beta).get_batch_loss_metrics(model, batch)

    logps = _our_logps(model, batch)
    out = orpo.loss(logps, divergence=None, lam=beta)
    nll = -(logps.policy_chosen_logps / logps.chosen_lengths)
    torch.testing.assert_close(trl_loss.item() - metrics["nll_loss"], (out.losses - nll).mean().item(), rtol=1e-6,
                               atol=0)
    # TRL's NLL, re-derived: every real token after the first of each chosen sequence, pooled
    logits = model(batch["chosen_input_ids"]).logits[:, :-1]
    targets = batch["chosen_input_ids"][:, 1:]
    real = batch["chosen_attention_mask"][:, 1:].bool()
    per_token = logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0]
    pooled = -(per_token[real]).mean().item()
    torch.testing.assert_close(metrics["nll_loss"], pooled, rtol=1e-9, atol=0)
    assert abs(pooled - nll.mean().item()) > 0.01
