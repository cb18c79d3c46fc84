"""SFT: supervised fine-tuning on reference completions, the first stage of the papers' pipelines (SFT -> pairs ->
preference optimisation), trained by TRL's SFTTrainer as it is.

    L = - (1 / N) sum_{i, t} log pi_theta(y_{i,t} | x_i, y_{i,<t})

over the N completion tokens of a batch (prompt tokens are context only: TRL's `completion_only_loss`). The
completions are a preference dataset's chosen responses, or a prompt dataset's reference completions. This
function is the formula TRL's loss computes; tests/objectives/test_sft.py checks the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignctl.divergences import Divergence
from alignctl.lazy import torch
from alignctl.objectives.base import Objective, OnlineOutput, resolve_divergence, token_mean, wide


@dataclass(frozen=True)
class CompletionLogps:
    """policy_logps [B, T]: log pi_theta of each target token; mask [B, T]: 1 on completion tokens."""

    policy_logps: torch.Tensor
    mask: torch.Tensor


def loss(
    logps: CompletionLogps,
    *,
    divergence: Divergence | None,
) -> OnlineOutput:
    """Mean negative log-likelihood per completion token; uses no divergence (divergence must be None)."""
    resolve_divergence(OBJECTIVE, divergence)
    nll = -token_mean(wide(logps.policy_logps), logps.mask)
    return OnlineOutput(nll, {"nll": nll.detach()})


OBJECTIVE = Objective(
    name="sft",
    loss=loss,
    description=(
        "SFT: supervised fine-tuning on chosen / reference completions (TRL's SFTTrainer); its model/ dir feeds "
        "model.path."
    ),
    divergences=(),
    data="sft",
    needs_reference=False,
)
