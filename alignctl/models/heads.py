"""How a Hugging Face causal LM turns its decoder's last hidden states into logits, for the fused kernels.

model.kernel=fused scores a model from its decoder's last hidden states (`decoder_hidden`) and its LM head as a map
(`Head`: z = softcap((h W^T + b) * logit_scale), see `alignctl.kernels`), never from [tokens, vocab] logits. That is
only right when the head really is that map, so:

* `describe_head(model)` reads the map off the model: the output layer must be a plain `torch.nn.Linear` (its weight
  and bias; tied or untied makes no difference), and the few families whose forward does more after it (Gemma-2/3's
  final softcap, Cohere's and Granite's logit scaling) are listed in `LOGIT_MAPS`, each checked against its forward in
  transformers 5. Anything else that looks like a logit transform in the config, a custom output module, a PEFT
  adapter on the output layer or a prompt-learning adapter gives a reason string instead of a `Head`.
* `verify_head(model, head)` proves it numerically: the model's own forward on a tiny dummy batch against `head`
  applied to `decoder_hidden`, once on the decoder's own hidden states and once with them amplified (through a hook on
  the decoder) so that the logits reach the hundreds, where a missing cap or scale cannot hide.

`alignctl.models.scoring.resolve_kernel` runs both once at load time and falls back to model.kernel=naive (the model's own
logits, correct for any architecture by construction) with a one-line notice when either fails.

PEFT: LoRA layers are injected in place into the wrapped model, so the unwrapped causal LM's decoder runs them (and
`PeftModel.disable_adapter()` switches them off for it too); a `modules_to_save` copy of the output layer is resolved
to the copy the forward would use at the time of the call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from alignctl.kernels import head_logits

__all__ = [
    "LOGIT_MAPS",
    "Head",
    "causal_lm",
    "decoder_hidden",
    "describe_head",
    "model_logits",
    "positions_from_mask",
    "verify_head",
]


@dataclass(frozen=True)
class Head:
    """An LM head as a map: logits = softcap((hidden @ weight.T + bias) * logit_scale), softcap(z) = c tanh(z / c)."""

    weight: torch.Tensor  # [V, d]
    bias: torch.Tensor | None = None  # [V]
    logit_scale: float = 1.0  # multiplier (Cohere's logit_scale; 1 / Granite's logits_scaling)
    softcap: float | None = None  # c of Gemma-2's final_logit_softcapping

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Full logits [..., V] in float32 (float64 for float64 inputs): the readable definition, for checks."""
        return head_logits(hidden, self.weight, self.bias, self.logit_scale, self.softcap)


def _softcap(lm: nn.Module, config: Any) -> tuple[float, float | None]:
    return 1.0, config.final_logit_softcapping  # logits / c, tanh, * c (Gemma2ForCausalLM.forward)


def _cohere_scale(lm: nn.Module, config: Any) -> tuple[float, float | None]:
    return getattr(lm, "logit_scale", config.logit_scale), None  # logits * self.logit_scale (CohereForCausalLM)


def _granite_scale(lm: nn.Module, config: Any) -> tuple[float, float | None]:
    return 1.0 / config.logits_scaling, None  # logits / self.config.logits_scaling (GraniteForCausalLM)


# model_type -> (causal LM, its text config) -> (logit_scale, softcap): the families whose forward transforms the
# output layer's result, as their forwards do it in transformers 5. Every other family must apply the output layer
# alone (and `verify_head` checks that it does).
LOGIT_MAPS: dict[str, Callable[[nn.Module, Any], tuple[float, float | None]]] = {
    "gemma2": _softcap,
    "gemma3_text": _softcap,
    "cohere": _cohere_scale,
    "cohere2": _cohere_scale,
    "granite": _granite_scale,
    "granitemoe": _granite_scale,
    "granitemoeshared": _granite_scale,
    "granitemoehybrid": _granite_scale,
}
# Config fields that other families use for logit transforms alignctl does not model (scale and cap in other
# orders, multipliers, ...): a family not in LOGIT_MAPS with one of these set is not scored by the fused path.
_TRANSFORM_FIELDS = (
    "final_logit_softcapping",
    "logit_softcapping",
    "logit_scale",
    "logits_scaling",
    "lm_head_multiplier",
    "output_multiplier",
    "logit_multiplier",
    "final_logits_bias",
)
_NEUTRAL = (None, 1, 1.0, False)


def causal_lm(model: nn.Module) -> nn.Module:
    """The transformers causal LM itself: `model`, or the model a peft PeftModel or a DistributedDataParallel wraps
    (its LoRA layers in place; read its head from it, but run a DDP model's forward through `decoder_hidden`).

    Raises TypeError for anything else and ValueError for prompt-learning adapters (their virtual tokens only exist
    in PeftModel.forward).
    """
    from transformers import PreTrainedModel

    if isinstance(model, DistributedDataParallel):
        model = model.module

    if hasattr(model, "get_base_model") and hasattr(model, "peft_config"):  # peft.PeftModel, without importing peft
        if getattr(model, "active_peft_config", None) is not None and model.active_peft_config.is_prompt_learning:
            raise ValueError(f"a {type(model.active_peft_config).__name__} adapter adds virtual tokens in its forward")
        model = model.get_base_model()
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"expected a transformers PreTrainedModel or a peft PeftModel, got {type(model).__name__}")
    return model


def _decoder(lm: nn.Module) -> nn.Module:
    decoder = getattr(lm, lm.base_model_prefix, None)
    if not isinstance(decoder, nn.Module) or decoder is lm:
        raise TypeError(f"{type(lm).__name__} has no decoder submodule {lm.base_model_prefix!r}")
    return decoder


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens (left padding safe): [B, T]."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def decoder_hidden(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Last hidden states [B, T, d] of the decoder (after its final norm): what the model's output layer consumes.

    `model` is a transformers causal LM or a peft PeftModel around one (see `causal_lm`); `position_ids` default to
    positions counted over real tokens. Runs the decoder submodule (`getattr(lm, lm.base_model_prefix)`), without a
    KV cache; autograd and gradient checkpointing work as in the model's own forward.
    """
    if position_ids is None:
        position_ids = positions_from_mask(attention_mask)
    if isinstance(model, DistributedDataParallel):
        # DDP averages the gradients of a forward through its wrapper only (a bypass would leave each rank with its
        # own): run the whole model, with one position's logits, and take the decoder's output from its hidden states
        # (the last is after the final norm, as tests/models checks)
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                    output_hidden_states=True, logits_to_keep=1)  # fmt: skip
        return out.hidden_states[-1]
    lm = causal_lm(model)
    out = _decoder(lm)(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def model_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The model's own forward logits [B, T, V] (whatever its architecture does after the decoder)."""
    if position_ids is None:
        position_ids = positions_from_mask(attention_mask)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return out.logits


def _output_layer(lm: nn.Module) -> nn.Module | str:
    """The module the forward applies as the output layer now, or why it cannot be used as a map."""
    out = lm.get_output_embeddings()
    if out is None:
        return f"{type(lm).__name__} has no output embeddings"
    if type(out).__name__ == "ModulesToSaveWrapper":  # peft's trainable copy of the layer: the one in use now
        adapters = list(getattr(out, "active_adapters", []) or [])
        # as ModulesToSaveWrapper.forward: the original layer when disabled or when an active adapter has no copy
        if getattr(out, "disable_adapters", False) or any(a not in out.modules_to_save for a in adapters or [None]):
            out = out.original_module
        elif len(adapters) == 1:
            out = out.modules_to_save[adapters[0]]
        else:
            return f"the output layer has {len(adapters)} active modules_to_save copies"
    if hasattr(out, "get_base_layer") and hasattr(out, "active_adapters"):  # peft BaseTunerLayer (LoRA, ...)
        return f"the output layer carries a PEFT adapter ({type(out).__name__})"
    if not isinstance(out, nn.Linear) or type(out).forward is not nn.Linear.forward:
        return f"the output layer is a {type(out).__name__}, not a plain torch.nn.Linear"
    if not out.weight.is_floating_point() or out.weight.is_meta:
        return f"the output layer's weight is {out.weight.dtype} on {out.weight.device}"
    return out


def describe_head(model: nn.Module) -> Head | str:
    """The model's LM head as a `Head`, or a sentence saying why it cannot tell.

    Reads the output layer the forward would use now (for a PeftModel under `disable_adapter()`, the original one),
    so call it where the scoring happens rather than caching the result.
    """
    try:
        lm = causal_lm(model)
        _decoder(lm)
    except (TypeError, ValueError) as e:
        return str(e)
    out = _output_layer(lm)
    if isinstance(out, str):
        return out
    config = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    model_type = getattr(config, "model_type", None) or getattr(lm.config, "model_type", "")
    logit_scale, softcap = 1.0, None
    if model_type in LOGIT_MAPS:
        logit_scale, softcap = LOGIT_MAPS[model_type](lm, config)
    else:
        for field in _TRANSFORM_FIELDS:
            value = getattr(config, field, None)
            if value not in _NEUTRAL:
                return f"its config sets {field}={value!r}, which alignctl does not model for model_type={model_type!r}"
    logit_scale = float(logit_scale if logit_scale is not None else 1.0)
    if not (math.isfinite(logit_scale) and logit_scale > 0):
        return f"logit scale {logit_scale!r} is not a positive number"
    if softcap is not None:
        softcap = float(softcap)
        if not (math.isfinite(softcap) and softcap > 0):
            return f"final logit softcap {softcap!r} is not a positive number"
    return Head(weight=out.weight, bias=out.bias, logit_scale=logit_scale, softcap=softcap)


# Allowed max |model logits - head logits| relative to max(1, max |model logits|) per dtype: the model may round its
# logits to its own dtype (and run TF32 GEMMs for float32 on GPUs); a wrong map is off by O(1) relative.
PROBE_TOLERANCE = {torch.float64: 1e-6, torch.float32: 2e-3, torch.float16: 1e-2, torch.bfloat16: 4e-2}
PROBE_AMPLITUDE = 400.0  # largest |pre-cap logit| in the amplified probe: far beyond any cap


def verify_head(model: nn.Module, head: Head) -> str | None:
    """None when the model's own forward logits equal `head` applied to `decoder_hidden` on a tiny dummy batch (two
    sequences, one left-padded), within a dtype-aware tolerance; else a sentence saying where they differ.

    Two probes: the decoder's own hidden states, then the same scaled (by a hook on the decoder's output) so that the
    logits reach +-PROBE_AMPLITUDE, where a missed softcap or logit scale shows plainly. Runs in eval mode (dropout
    off) without gradients and restores the training mode.
    """
    try:
        lm = causal_lm(model)
        decoder = _decoder(lm)
        param = next(lm.parameters())
    except (TypeError, ValueError, StopIteration) as e:
        return str(e) or "the model has no parameters"
    vocab = head.weight.shape[0]
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab, (2, 7), generator=g).to(param.device)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :3] = 0
    positions = positions_from_mask(attention_mask)
    valid = attention_mask.bool()
    tol = PROBE_TOLERANCE.get(param.dtype, 4e-2)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            want = model_logits(model, input_ids, attention_mask, positions)
            hidden = decoder_hidden(model, input_ids, attention_mask, positions)
            if want.shape[-1] != vocab:
                return f"its forward gives {want.shape[-1]} logits per token, its output layer {vocab}"
            reason = _compare(want[valid], head.logits(hidden)[valid], tol, "on its own hidden states")
            if reason is not None:
                return reason
            pre = Head(head.weight, None, head.logit_scale, None).logits(hidden[valid])
            k = PROBE_AMPLITUDE / max(float(pre.abs().max()), 1e-6)

            def amplify(module, args, output):
                if hasattr(output, "last_hidden_state"):
                    output.last_hidden_state = output.last_hidden_state * k
                    return output
                return (output[0] * k, *output[1:])

            handle = decoder.register_forward_hook(amplify)
            try:
                want = model_logits(model, input_ids, attention_mask, positions)
            finally:
                handle.remove()
            return _compare(want[valid], head.logits(hidden * k)[valid], tol, "on amplified hidden states")
    except Exception as e:  # noqa: BLE001 - any failure of the probe is a reason not to trust the fused path
        return f"the probe failed: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    finally:
        model.train(was_training)


def _compare(want: torch.Tensor, got: torch.Tensor, tol: float, where: str) -> str | None:
    want = want.to(got.dtype)
    if not bool(torch.isfinite(want).all()):
        return f"its forward gives non-finite logits {where}"
    scale = max(1.0, float(want.abs().max()))
    err = float((want - got).abs().max())
    if not err <= tol * scale:
        return (
            f"its logits differ from the described head by up to {err:.3g} {where} "
            f"(|logits| up to {scale:.3g}, tolerance {tol * scale:.3g})"
        )
    return None
