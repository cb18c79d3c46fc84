"""Classifier reward: any HF sequence-classification checkpoint (a sentiment classifier or a reward model) scores
each text.

``reward=classifier reward.path=<local dir or hub id>``, with ``reward.mode``:

- ``pos_minus_neg`` (default): P(positive_label) - P(negative_label), in [-1, 1], the probabilities a softmax
  over all the model's logits. The sentiment reward of the f-DPO paper (Wang et al., 2024, "Beyond Reverse KL",
  IMDB: a sentiment classifier's positive minus negative probability).
- ``label``: P(label), in [0, 1].
- ``logit``: the raw score of a reward model with a single output (``num_labels == 1``), unbounded.

Labels are names of the model's ``config.id2label``, matched case-insensitively. The scored text is
``prompt + completion`` (``input=prompt_completion``, the default, TRL's convention for non-chat text, as the
sentiment reward does) or the completion alone (``input=completion``). Texts are cut to their *last*
``max_length`` tokens (left truncation, also capped by the tokenizer's and the model's own maximum), so the
completion is always part of what is scored; batches are padded on the right. A tokenizer without a pad token
pads with its eos token (GPT-2 classifiers), and the model's ``pad_token_id`` is set to the tokenizer's, so the
model pools the last real token. The model loads with ``trust_remote_code=False`` in ``dtype``, moves to the
policy's device, and runs in eval mode without gradients; softmax and scores are computed in float32. A checkpoint
that lacks some of the classifier's weights (a causal LM or a bare encoder: its head would be random) is refused; a
local directory whose config.json names only causal-LM architectures already when the config is checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignctl.errors import UsageError
from alignctl.rewards.base import Reward, RewardConfig, RewardContext, RewardEntry

MODES = ("pos_minus_neg", "label", "logit")
INPUTS = ("prompt_completion", "completion")
DTYPES = ("float32", "bfloat16", "float16")
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


@dataclass
class ClassifierConfig(RewardConfig):
    name: str = "classifier"
    path: str = "???"  # HF sequence-classification model: a local directory or a hub id (required)
    mode: str = "pos_minus_neg"  # pos_minus_neg | label | logit (see the module docstring)
    label: str | None = None  # mode=label: the label whose probability is the reward (required there)
    positive_label: str = "POSITIVE"  # mode=pos_minus_neg
    negative_label: str = "NEGATIVE"  # mode=pos_minus_neg
    input: str = "prompt_completion"  # prompt_completion (prompt + completion) | completion
    batch_size: int = 32
    max_length: int = 512  # tokens per text; longer texts keep their last max_length tokens
    dtype: str = "float32"  # float32 | bfloat16 | float16

    def __post_init__(self) -> None:
        super().__post_init__()  # the calibration options every reward has
        if self.path in ("???", "") or self.path is None:
            raise UsageError("reward.path is missing; set reward.path=<HF sequence-classification model dir or hub id>")
        for key, choices in (("mode", MODES), ("input", INPUTS), ("dtype", DTYPES)):
            if getattr(self, key) not in choices:
                raise UsageError(
                    f"reward.{key}={getattr(self, key)} is not valid; choose one of: {', '.join(choices)}"
                )
        if self.mode == "label" and not self.label:
            raise UsageError("reward.label is missing; reward.mode=label needs the label whose probability scores")
        if self.mode != "label" and self.label is not None:
            raise UsageError(f"reward.label={self.label} is only used with reward.mode=label, not {self.mode}")
        if self.mode == "pos_minus_neg" and self.positive_label.lower() == self.negative_label.lower():
            raise UsageError(
                f"reward.negative_label={self.negative_label} equals reward.positive_label; they must differ"
            )
        for key in ("batch_size", "max_length"):
            if getattr(self, key) < 1:
                raise UsageError(f"reward.{key}={getattr(self, key)} is out of range; it must be >= 1")
        _source(self.path)  # a missing directory or a malformed hub id fails now, before anything loads


def _source(path: str) -> tuple[str, bool]:
    """What ``from_pretrained`` gets for ``reward.path``, and whether it must not touch the network."""
    from huggingface_hub import constants, is_offline_mode, try_to_load_from_cache

    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            run_model = local / "model"
            hint = f"; a run directory's model is {run_model}" if (run_model / "config.json").is_file() else ""
            raise UsageError(f"reward.path={path} is not an HF model directory (no config.json in it){hint}")
        check_sequence_classifier("reward.path", str(local))
        return str(local), True
    if not _HUB_ID.fullmatch(path) or ".." in path or "--" in path:
        raise UsageError(f"reward.path={path} does not exist; give a local HF model directory or a hub id (org/name)")
    offline = is_offline_mode()
    if offline and not isinstance(try_to_load_from_cache(path, "config.json"), str):
        raise UsageError(
            f"reward.path={path} is neither a local directory nor in the HF cache ({constants.HF_HUB_CACHE}) and "
            "HF_HUB_OFFLINE is set; download it first or give a local directory"
        )
    return path, offline


def check_sequence_classifier(field: str, model_dir: str) -> None:
    """A local model directory whose config.json names only causal-LM architectures (a policy, e.g. a run's model/)
    has no trained classification head: refused from its config.json alone, before any weights load."""
    import json

    try:
        architectures = json.loads((Path(model_dir) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return  # unreadable here: loading it says why
    if architectures and all(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise UsageError(
            f"{field}={model_dir} is a causal LM ({', '.join(architectures)}), not a sequence classifier: its score "
            "head would be random; give a classifier or reward model (e.g. the model/ of an objective=reward_model run)"
        )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _label_index(cfg: ClassifierConfig, key: str, id2label: dict[int, str]) -> int:
    wanted = getattr(cfg, key)
    by_name = {str(name).lower(): int(i) for i, name in id2label.items()}
    if wanted.lower() not in by_name:
        labels = ", ".join(str(id2label[i]) for i in sorted(id2label))
        hint = " (a single-output reward model: use reward.mode=logit)" if len(id2label) == 1 else ""
        raise UsageError(f"reward.{key}={wanted} is not a label of {cfg.path}; its labels: {labels}{hint}")
    return by_name[wanted.lower()]


def _load(cfg: ClassifierConfig, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source, local_only = _source(cfg.path)
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            source, dtype=getattr(torch, cfg.dtype), local_files_only=local_only, trust_remote_code=False,
            output_loading_info=True,
        )  # fmt: skip
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only, trust_remote_code=False)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as e:  # missing files, unknown model type, bad id
        raise UsageError(
            f"reward.path={cfg.path} does not load as an HF sequence-classification model and tokenizer "
            f"({_first_line(e)})"
        ) from None
    # weights the checkpoint lacks are random (a causal LM's dir has no classification head): never score with them
    missing = sorted(info.get("missing_keys", ())) + sorted(k[0] for k in info.get("mismatched_keys", ()))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise UsageError(
            f"reward.path={cfg.path} is not a trained sequence classifier: its checkpoint lacks {shown} "
            f"(architectures: {', '.join(getattr(model.config, 'architectures', None) or ['?'])})"
        )
    return model.to(device).eval().requires_grad_(False), tokenizer


def _set_pad_token(cfg: ClassifierConfig, model: Any, tokenizer: Any) -> None:
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise UsageError(f"reward.path={cfg.path}: its tokenizer has no pad, eos or unk token to pad batches with")
        tokenizer.pad_token = fallback
    model.config.get_text_config().pad_token_id = tokenizer.pad_token_id  # the model pools the last non-pad token
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "left"


def _max_length(cfg: ClassifierConfig, model: Any, tokenizer: Any) -> int:
    limits = [cfg.max_length]
    if isinstance(tokenizer.model_max_length, int) and tokenizer.model_max_length < 10**9:
        limits.append(tokenizer.model_max_length)
    positions = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    return min(limits)


def build(cfg: ClassifierConfig, context: RewardContext) -> Reward:
    """Load the classifier once; return the batched ``(prompts, completions) -> scores`` function."""
    import torch

    model, tokenizer = _load(cfg, context.device)
    id2label = {int(i): str(name) for i, name in (model.config.id2label or {}).items()}
    num_labels = model.config.num_labels
    if cfg.mode == "logit" and num_labels != 1:
        labels = ", ".join(id2label[i] for i in sorted(id2label))
        raise UsageError(
            f"reward.mode=logit needs a single-output reward model (num_labels == 1); {cfg.path} has {num_labels} "
            f"labels: {labels}; use reward.mode=label or pos_minus_neg"
        )
    if cfg.mode == "label":
        columns = [_label_index(cfg, "label", id2label)]
    elif cfg.mode == "pos_minus_neg":
        columns = [_label_index(cfg, "positive_label", id2label), _label_index(cfg, "negative_label", id2label)]
    else:
        columns = [0]
    _set_pad_token(cfg, model, tokenizer)
    max_length = _max_length(cfg, model, tokenizer)
    device = next(model.parameters()).device

    @torch.inference_mode()
    def score(texts: list[str]) -> list[float]:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
        logits = model(**enc).logits.float()  # [B, num_labels]
        if cfg.mode == "logit":
            return logits[:, 0].tolist()
        probs = logits.softmax(dim=-1)
        if cfg.mode == "label":
            return probs[:, columns[0]].tolist()
        return (probs[:, columns[0]] - probs[:, columns[1]]).tolist()

    def reward(prompts: list[str], completions: list[str]) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        for i, (p, c) in enumerate(zip(prompts, completions)):
            if not (isinstance(p, str) and isinstance(c, str)):
                raise TypeError(f"the classifier reward scores text; got {type(p).__name__}/{type(c).__name__} at {i}")
        texts = [p + c for p, c in zip(prompts, completions)] if cfg.input == "prompt_completion" else list(completions)
        out: list[float] = []
        for start in range(0, len(texts), cfg.batch_size):
            out.extend(score(texts[start : start + cfg.batch_size]))
        return out

    return reward


def _recipe(cfg: ClassifierConfig) -> dict[str, Any]:
    """Everything that changes the scores (not batch_size); a local model directory adds a fingerprint of its files
    (names, sizes, config.json), so retrained weights at the same path make new cache keys."""
    import hashlib

    recipe = {
        k: getattr(cfg, k)
        for k in ("name", "path", "mode", "label", "positive_label", "negative_label", "input", "max_length", "dtype")
    }
    local = Path(cfg.path).expanduser()
    if local.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in local.iterdir() if p.is_file()):
            h.update(f"{f.name}:{f.stat().st_size};".encode())
        if (local / "config.json").is_file():
            h.update((local / "config.json").read_bytes())
        recipe["files"] = h.hexdigest()[:16]
    return recipe


ENTRY = RewardEntry(
    name="classifier",
    schema=ClassifierConfig,
    description="An HF sequence-classification model's score: P(label), P(positive) - P(negative), or a reward "
    "model's logit (reward.path=<dir or hub id>).",
    build=build,
    recipe=_recipe,
)
