"""Where a run's models come from and how they load: the policy's starting weights, the reference, the tokenizer.

One path for every model option: the embedded tiny model is a local HF directory built by its task, and `hf` or
a preset names a hub id or a local directory; both load with `from_pretrained`. Nothing here downloads when the
hub is unreachable: a hub id must be in the local HF cache then, or the run stops with one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# A run's config (alignctl.config.schema.RunConfig, a layer above): these functions read only its `model` group.
RunConfig = Any

from alignctl.errors import UsageError
from alignctl.lazy import torch
from alignctl.models.schema import EMBEDDED_MODELS, SOUP


def check_source(field: str, value: str) -> str:
    """A local model directory (with config.json) or a hub id this machine can load: one in the local HF cache, or
    any when the hub is reachable. Otherwise one line naming the field and the value."""
    path = Path(value).expanduser()
    if names_local_path(value):
        if not (path / "config.json").is_file():
            raise UsageError(f"{field}={value} is not a Hugging Face model directory (no config.json there)")
        return str(path)
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(value, "config.json")
    except HFValidationError:  # not a directory here, and not spelled like a hub id either
        raise UsageError(
            f"{field}={value} is not a local directory, nor a hub id (<owner>/<name> of letters, digits, '-', '_', "
            "'.'); give an existing model directory or a hub id"
        ) from None
    if isinstance(cached, str):
        return value
    if _offline():
        raise UsageError(
            f"{field}={value} is not a local directory and not in the local Hugging Face cache, and the hub is "
            "offline (HF_HUB_OFFLINE); download it where there is network (huggingface-cli download) or give a "
            "local model directory"
        )
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(value)
    except (OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"{field}={value} is neither a local model directory nor a loadable hub model ({reason})")
    return value


def names_local_path(value: str) -> bool:
    """A model source that is a path on this machine (it exists, or is spelled as one), not a hub id."""
    return Path(value).expanduser().exists() or value.startswith((".", "/", "~"))


def check_local_paths(cfg: RunConfig) -> None:
    """The model sources a config names as local paths hold a model (model.path, model.reference, model.soup's
    entries: a run directory stands for its model/), checked when the config is composed, before anything loads.
    Hub ids are looked up when the model loads (the local HF cache, or the hub)."""
    named = [(f"model.soup[{i}]", entry, model_or_run_dir) for i, entry in enumerate(cfg.model.soup)
             if isinstance(entry, str)]  # fmt: skip
    if cfg.model.name not in EMBEDDED_MODELS:
        named.append(("model.path", cfg.model.path, check_source))
    if cfg.model.reference not in (None, SOUP):
        named.append(("model.reference", cfg.model.reference, check_source))
    for field, value, check in named:
        if names_local_path(value):
            check(field, value)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def load_tokenizer(cfg: RunConfig, source: str):
    """The policy's tokenizer: left-pads for generation; a missing pad token is the EOS token (GPT-2, Pythia,
    Llama ship none), which the attention masks keep out of every loss; model.chat_template replaces its template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.model.trust_remote_code)
    if tokenizer.eos_token is None:
        raise UsageError(f"the tokenizer of {source} has no EOS token; alignctl needs one to end completions")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.model.chat_template is not None:
        tokenizer.chat_template = read_chat_template(cfg.model.chat_template)
    return tokenizer


def read_chat_template(value: str) -> str:
    """model.chat_template: the text of a .jinja file, or the template itself."""
    if value.endswith((".jinja", ".jinja2", ".txt")):
        path = Path(value).expanduser()
        if not path.is_file():
            raise UsageError(f"model.chat_template={value} is not a readable file")
        return path.read_text(encoding="utf-8")
    if "{%" not in value and "{{" not in value:
        raise UsageError(
            f"model.chat_template={value!r} is neither a .jinja file nor a Jinja template (no {{% or {{{{ in it)"
        )
    return value


def load_causal_lm(cfg: RunConfig, source: str, trainable: bool = True):
    """A causal LM in model.dtype with model.attn_implementation; the reference (trainable=False) is frozen."""
    from transformers import AutoModelForCausalLM

    # model.dtype names a torch dtype (alignctl.models.schema.DTYPES)
    kwargs: dict[str, Any] = {"dtype": getattr(torch, cfg.model.dtype), "trust_remote_code": cfg.model.trust_remote_code}
    if cfg.model.attn_implementation is not None:
        kwargs["attn_implementation"] = cfg.model.attn_implementation
    from safetensors import SafetensorError

    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except ValueError as e:  # e.g. a config whose architecture is not a causal LM, or remote code not trusted
        raise UsageError(f"model {source} cannot load as a causal LM: {_first_line(e)}") from None
    except (SafetensorError, EOFError) as e:  # a truncated or corrupt weights file
        raise UsageError(f"model {source} cannot be read ({type(e).__name__}: {_first_line(e)}); its weights "
                         "file is truncated or corrupt: restore it, or retrain") from None  # fmt: skip
    except (OSError, RuntimeError) as e:  # a file missing or unreadable, weights that do not fit the config
        raise UsageError(f"model {source} cannot be read ({type(e).__name__}: {_first_line(e)})") from None
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = model.generation_config.eos_token_id
    if not trainable:
        model.eval().requires_grad_(False)
    return model


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def lora_config(cfg: RunConfig):
    """peft's LoraConfig for model.lora (None with r=0: the full model trains)."""
    lora = cfg.model.lora
    if lora.r == 0:
        return None
    try:
        from peft import LoraConfig
    except ImportError:
        raise UsageError("model.lora.r > 0 needs the peft package (pip install peft)") from None
    targets: Any = lora.target_modules
    if list(targets) == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, task_type="CAUSAL_LM"
    )


def save_policy(model, tokenizer, out: Path) -> None:
    """The trained policy as a plain HF directory any `model.path=` takes. With LoRA, the adapter alone goes to
    out/adapter/ and the merged weights to out/ (so eval and a later run load it like any model)."""
    from accelerate.utils import is_peft_model

    if is_peft_model(model):
        model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def model_or_run_dir(field: str, value: str) -> tuple[str, Path | None]:
    """(model dir, the run dir it is the final model of, or None): a run dir (config.yaml and model/) gives its
    model/; anything else must pass check_source."""
    path = Path(value).expanduser()
    if (path / "config.yaml").is_file() and (path / "model").is_dir():
        if not (path / "model" / "config.json").is_file():
            raise UsageError(f"{field}={value} is a run directory without a trained model (no model/config.json); "
                             "finish that run (train.resume=true) or give a model dir")  # fmt: skip
        return str(path / "model"), path
    return check_source(field, value), None


def vocabulary_mismatch(model, source: str, other, other_source: str) -> tuple[int, int] | None:
    """None when two models share one vocabulary (the same output size and the same tokens: equal sizes can still be
    different vocabularies); else their output sizes."""
    from transformers import AutoTokenizer

    sizes = model.get_output_embeddings().weight.shape[0], other.get_output_embeddings().weight.shape[0]
    if sizes[0] == sizes[1] and (
        AutoTokenizer.from_pretrained(source).get_vocab() == AutoTokenizer.from_pretrained(other_source).get_vocab()
    ):
        return None
    return sizes


def check_same_vocabulary(field: str, model, source: str, policy, policy_source_dir: str) -> None:
    """A teacher scores the student's tokens: both must have one vocabulary."""
    sizes = vocabulary_mismatch(model, source, policy, policy_source_dir)
    if sizes is not None:
        raise UsageError(f"{field}={source} has another tokenizer than the policy {policy_source_dir} ({sizes[0]} and "
                         f"{sizes[1]} output tokens); a teacher must share the student's vocabulary")  # fmt: skip
