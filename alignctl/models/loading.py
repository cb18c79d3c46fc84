"""Where a run's models come from and how they load: the policy's starting weights, the reference, the tokenizer.

One path for every model option: the embedded tiny model is a local HF directory built by its task, and `hf` or
a preset names a hub id or a local directory; both load with `from_pretrained`. Nothing here downloads when the
hub is unreachable: a hub id must be in the local HF cache then, or the run stops with one line.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
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


def load_reward_model(cfg: RunConfig, source: str, tokenizer):
    """The starting weights as a sequence classifier with one output (a reward model; objective=reward_model) in
    model.dtype: the LM head is dropped and the score head is new, drawn from train.seed (as TRL's RewardTrainer seeds
    before it builds one). config.pad_token_id is the tokenizer's, so the model pools each text's last real token."""
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl.trainer.reward_trainer import suppress_seqcls_warning  # the new head and dropped LM head are expected

    kwargs: dict[str, Any] = {"dtype": getattr(torch, cfg.model.dtype), "num_labels": 1,
                              "trust_remote_code": cfg.model.trust_remote_code}  # fmt: skip
    if cfg.model.attn_implementation is not None:
        kwargs["attn_implementation"] = cfg.model.attn_implementation
    set_seed(cfg.train.seed)
    try:
        with suppress_seqcls_warning():
            model = AutoModelForSequenceClassification.from_pretrained(source, **kwargs)
    except ValueError as e:  # an architecture with no sequence-classification class in transformers
        raise UsageError(f"model {source} cannot load as a sequence classifier (a reward model): "
                         f"{_first_line(e)}") from None
    except (OSError, RuntimeError, EOFError) as e:
        raise UsageError(f"model {source} cannot be read ({type(e).__name__}: {_first_line(e)})") from None
    model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    return model


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def lora_config(cfg: RunConfig, task_type: str = "CAUSAL_LM"):
    """peft's LoraConfig for model.lora (None with r=0: the full model trains). task_type="SEQ_CLS" for a reward
    model: peft then also trains (and saves) the new score head in full."""
    lora = cfg.model.lora
    if lora.r == 0:
        return None
    try:
        from peft import LoraConfig
    except ImportError:
        raise UsageError("model.lora.r > 0 needs the peft package (pip install peft)") from None
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora_targets(cfg),
                      task_type=task_type)  # fmt: skip


def lora_targets(cfg: RunConfig) -> Any:
    """model.lora.target_modules as peft reads it: "all-linear" (its shorthand) or the list of module names."""
    targets = list(cfg.model.lora.target_modules)
    return "all-linear" if targets == ["all-linear"] else targets


def check_lora_targets(cfg: RunConfig, model, field: str, source: str) -> None:
    """Each name of model.lora.target_modules names at least one module of `model` (the policy's architecture, e.g.
    built on the meta device: meta_model) that LoRA can adapt, matched as peft matches a name (the whole module path,
    or its last dotted parts): a name that matches nothing would make peft fail, or, beside names that match, adapt
    fewer layers than asked. One line listing the model's linear layers otherwise. field=source: the model's
    option, for the message."""
    targets = lora_targets(cfg)
    if cfg.model.lora.r == 0 or targets == "all-linear":
        return
    adaptable = _lora_adaptable_types()
    modules = list(model.named_modules())
    linear = dict.fromkeys(name.rsplit(".", 1)[-1] for name, module in modules
                           if name and isinstance(module, adaptable["linear"]))  # fmt: skip
    listed = f"[{','.join(cfg.model.lora.target_modules)}]"
    choices = f"its linear layers are {', '.join(linear) or '(none)'}; or use model.lora.target_modules=[all-linear]"
    for target in targets:
        matched = [(name, module) for name, module in modules
                   if name and (name == target or name.endswith(f".{target}"))]  # fmt: skip
        if not matched:
            raise UsageError(f"model.lora.target_modules={listed}: {target!r} names no module of {field}={source}; "
                             f"{choices}")  # fmt: skip
        if not any(isinstance(module, adaptable["any"]) for _, module in matched):
            kind = type(matched[0][1]).__name__
            raise UsageError(f"model.lora.target_modules={listed}: {target!r} names a {kind} of {field}={source}, "
                             f"which LoRA cannot adapt (it adapts linear, embedding and convolution layers); "
                             f"{choices}")  # fmt: skip


def _lora_adaptable_types() -> dict[str, tuple[type, ...]]:
    """The module types peft's LoRA adapts: "linear" (what the messages list), "any" (those and the others)."""
    from transformers.pytorch_utils import Conv1D  # transformers: GPT-2's linear layer

    nn = torch.nn
    linear = (nn.Linear, Conv1D)
    return {"linear": linear, "any": (*linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)}


def model_config(field: str, source: str, trust_remote_code: bool):
    """The model's config (config.json only, no weights); one line naming field=source when it cannot be read."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UsageError(f"{field}={source}: its config.json cannot be read ({_first_line(e)})") from None


def meta_model(field: str, source: str, trust_remote_code: bool):
    """The causal LM of `source`'s config.json built on the meta device: its modules and shapes, no weights read
    and no memory taken (a 7B model: about 2 s)."""
    from transformers import AutoModelForCausalLM

    config = model_config(field, source, trust_remote_code)
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except ValueError as e:  # a config whose architecture is not a causal LM, as load_causal_lm says
        raise UsageError(f"model {source} cannot load as a causal LM: {_first_line(e)}") from None


@dataclass(frozen=True)
class Vocabulary:
    """What a model's token ids must agree on, read from its config.json and tokenizer files (no weights): `rows`,
    the input embedding's row count (config vocab_size); `tokens`, the ids its tokenizer produces (len(tokenizer),
    or the largest id + 1 if larger); `vocab`, the tokenizer's token -> id map."""

    field: str
    source: str
    rows: int
    tokens: int
    vocab: dict[str, int] = dataclasses.field(compare=False, repr=False)
    rows_from: str = "config.json vocab_size"  # where `rows` was read, for the message

    @property
    def label(self) -> str:
        """field=source, or for a model the run built (field "model=tiny") field (source)."""
        return f"{self.field} ({self.source})" if "=" in self.field else f"{self.field}={self.source}"

    def same_as(self, other: Vocabulary) -> bool:
        return self.rows == other.rows and self.vocab == other.vocab


def vocabulary(field: str, source: str, trust_remote_code: bool) -> Vocabulary:
    """The Vocabulary of the model at `source` (a model dir or a hub id check_source accepted), memoized for this
    process on its files' (size, mtime) (a sweep reads each source once)."""
    path = Path(source).expanduser()
    files = sorted(path / name for name in _VOCABULARY_FILES if (path / name).is_file()) if path.is_dir() else []
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _vocabulary(field, str(source), trust_remote_code, stamp)


_VOCABULARY_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model")  # fmt: skip


@functools.lru_cache(maxsize=32)
def _vocabulary(field: str, source: str, trust_remote_code: bool, stamp: tuple) -> Vocabulary:
    from transformers import AutoTokenizer

    config = model_config(field, source, trust_remote_code)
    rows, rows_from = getattr(config.get_text_config(), "vocab_size", None), "config.json vocab_size"
    if not isinstance(rows, int) or isinstance(rows, bool):  # no vocab_size in config.json: the model's own table
        rows = meta_model(field, source, trust_remote_code).get_input_embeddings().weight.shape[0]
        rows_from = "its embedding table as config.json builds it"
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UsageError(f"{field}={source}: its tokenizer cannot be read ({_first_line(e)})") from None
    vocab = tokenizer.get_vocab()
    tokens = max(len(tokenizer), max(vocab.values(), default=-1) + 1)
    return Vocabulary(field, source, int(rows), tokens, vocab, rows_from)


def check_vocabularies(policy: Vocabulary, others: list[tuple[Vocabulary, str]]) -> None:
    """Every token id the policy's tokenizer gives has a row in the policy's embedding, and each other model (the
    reference, a teacher) has the policy's vocabulary: the same tokenizer and as many embedding rows (it scores the
    policy's tokens; KL and distillation compare distributions over one vocabulary). others: (its Vocabulary,
    why it must share the policy's). One line naming the field, both sizes and what to do."""
    if policy.tokens > policy.rows:
        raise UsageError(
            f"{policy.label}: its tokenizer has {policy.tokens} tokens but its input embedding only "
            f"{policy.rows} rows ({policy.rows_from}), so token ids {policy.rows}..{policy.tokens - 1} index past "
            "the table; resize the embedding to the tokenizer (model.resize_token_embeddings(len(tokenizer)), then "
            "save_pretrained) or give the tokenizer the model was trained with"
        )  # fmt: skip
    for other, why in others:
        if other.same_as(policy):
            continue
        if (other.tokens, other.rows) == (policy.tokens, policy.rows):
            sizes = f"both {policy.tokens} tokens and {policy.rows} embedding rows, but other tokens"
        else:
            sizes = (f"{other.tokens} tokens and {other.rows} embedding rows against {policy.tokens} and "
                     f"{policy.rows}")  # fmt: skip
        raise UsageError(f"{other.label} has another vocabulary than the policy {policy.label} ({sizes}); {why}")


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
