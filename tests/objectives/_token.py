"""A tiny token-level setup for the TDPO tests: random logits -> sequence log-probs and sequential divergences."""

from __future__ import annotations

import torch

from alignctl.objectives.base import PreferenceLogps


def token_batch(policy_logits_w, policy_logits_l, ref_logits_w, ref_logits_l, tokens_w, tokens_l, divergence):
    """PreferenceLogps from [B, T, V] logits; K = sum_t divergence.token(policy_t, ref_t) (forward_kl: KL(ref||pol))."""

    def seq(pol, ref, tok):
        lp, lq = pol.log_softmax(-1), ref.log_softmax(-1)
        logps = lp.gather(-1, tok.unsqueeze(-1)).squeeze(-1).sum(-1)
        ref_logps = lq.gather(-1, tok.unsqueeze(-1)).squeeze(-1).sum(-1)
        return logps, ref_logps, divergence.token(lp, lq).sum(-1)

    pw, rw, kw = seq(policy_logits_w, ref_logits_w, tokens_w)
    pl, rl, kl = seq(policy_logits_l, ref_logits_l, tokens_l)
    n = torch.full((tokens_w.shape[0],), tokens_w.shape[1])
    return PreferenceLogps(pw, pl, n, n, rw, rl, kw, kl)


def random_logits(seed: int, shape=(3, 4, 5)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randint(0, shape[-1], shape[:2], generator=g)
