"""The model group's schemas: how a run loads and computes with its model (ModelOptions, shared by every model
option), the embedded tiny models' architectures (built by alignctl.data.tasks.tiny_lm), and any Hugging Face
causal LM (`model=hf`). alignctl.config.schema composes them into the run's config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any

from alignctl.constraints import NonNegative, Positive, UnitBelowOne, check_ranges
from alignctl.errors import ConfigError

KERNELS = ("fused", "naive")
ROLLOUTS = ("transformers", "vllm")
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION = ("eager", "sdpa", "flash_attention_2")



@dataclass
class LoraConfig:
    """LoRA through peft; r=0 trains the full model. With LoRA the reference is the base with the adapter off."""

    r: Annotated[int, NonNegative] = 0
    alpha: Annotated[float, NonNegative] = 16.0
    dropout: Annotated[float, UnitBelowOne] = 0.05
    # ["all-linear"] (peft: every linear layer but the output head) or module names, e.g. [q_proj, v_proj]
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])

    def __post_init__(self) -> None:
        check_ranges("model.lora", self)
        if not self.target_modules:
            raise ConfigError("model.lora.target_modules=[] names no module; use [all-linear] or module names")
        listed = f"[{','.join(map(str, self.target_modules))}]"
        for name in self.target_modules:
            if not isinstance(name, str) or not name.strip(" ."):
                raise ConfigError(f"model.lora.target_modules={listed}: {name!r} is not a module name; give names "
                                  "such as q_proj, or [all-linear]")  # fmt: skip
        if "all-linear" in self.target_modules and len(self.target_modules) > 1:  # peft reads it only alone
            raise ConfigError(f"model.lora.target_modules={listed}: all-linear stands alone (it already takes every "
                              "linear layer but the output head); use [all-linear] or only module names")  # fmt: skip
        # whether each name is a module of the model is checked against the model when the run is validated
        # (alignctl.run.sources.check_models)


@dataclass
class ModelOptions:
    """How a run loads and computes with its model; shared by every model option and never part of a recipe."""

    # How log-probs and token divergences are computed (alignctl.kernels): fused = chunked/Triton, never
    # [tokens, vocab] logits; naive = the model's own full logits. A model whose LM head the fused path cannot
    # represent falls back to naive with a one-line notice. disco and fdpg train on TRL's own log-probs (to match
    # the old-policy and reference log-probs TRL computes); their eval uses this.
    kernel: str = "fused"
    # How online objectives sample during training: transformers' generate (any machine), or TRL's vLLM option
    # (colocated on the training GPU; needs CUDA and `pip install "vllm>=0.22,<=0.31"`, TRL 1.16's range).
    rollout: str = "transformers"
    dtype: str = "float32"  # weights' dtype: float32 | bfloat16 | float16
    # The reference (KL anchor, eval's baseline): null = the policy's starting weights; or a model dir / hub id; or
    # `soup` (SALSA): the uniform weight average of model.soup's models, which is then also the starting policy.
    reference: str | None = None
    # With model.reference=soup: >= 2 model dirs, run dirs (<run>/model) or hub ids; with model=tiny an integer k is
    # the embedded base model built with model.seed=k (model.soup=[0,1]). Built once, cached (alignctl.models.soup).
    soup: list[Any] = field(default_factory=list)
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None  # null: transformers' default for the model (eager | sdpa | ...)
    trust_remote_code: bool = False  # run code shipped with a hub model: only when you trust its authors
    # A Jinja chat template (a .jinja file or the template text) for conversational data, replacing the tokenizer's
    chat_template: str | None = None
    lora: LoraConfig = field(default_factory=LoraConfig)

    def _check_options(self) -> None:
        check_ranges("model", self)
        for key, valid in (("kernel", KERNELS), ("rollout", ROLLOUTS), ("dtype", DTYPES)):
            if getattr(self, key) not in valid:
                raise ConfigError(f"model.{key}={getattr(self, key)!r} is not valid; choose one of: {', '.join(valid)}")
        if self.attn_implementation is not None and self.attn_implementation not in ATTENTION:
            raise ConfigError(
                f"model.attn_implementation={self.attn_implementation!r} is not valid; choose one of: "
                f"{', '.join(ATTENTION)} (or null for the model's default)"
            )
        self._check_soup()

    def _check_soup(self) -> None:
        """model.soup and model.reference=soup come together; entries are paths/hub ids, or seeds with model=tiny."""
        if self.reference == SOUP and len(self.soup) < 2:
            raise ConfigError(f"model.reference=soup needs model.soup=[<model or run dir>, <model or run dir>, ...] "
                              f"with at least 2 entries; got model.soup={list(self.soup)}")  # fmt: skip
        if self.soup and self.reference != SOUP:
            raise ConfigError(f"model.soup={list(self.soup)} is only read with model.reference=soup, not model."
                              f"reference={self.reference or 'null'}; set model.reference=soup or unset model.soup")
        for i, entry in enumerate(self.soup):
            if isinstance(entry, bool) or not isinstance(entry, (int, str)) or (isinstance(entry, str) and not entry):
                raise ConfigError(f"model.soup[{i}]={entry!r} is not valid; give a model dir, a run dir or a hub id"
                                  " (or, with model=tiny, an integer seed)")  # fmt: skip
            if isinstance(entry, int) and self.name not in EMBEDDED_MODELS:  # (every model schema has a name)
                raise ConfigError(f"model.soup[{i}]={entry} is not valid with model={self.name}: an "
                                  "integer entry is a seed of the embedded base model (model="
                                  f"{', '.join(EMBEDDED_MODELS)}); give model dirs, run dirs or hub ids")  # fmt: skip
            if isinstance(entry, int) and entry < 0:
                raise ConfigError(f"model.soup[{i}]={entry} is out of range; a seed must be >= 0")


SOUP = "soup"  # model.reference=soup: SALSA's weight-averaged reference (alignctl.models.soup)


# Model fields that say how a run computes, not what the model is: left out of cached artifacts' recipes.
NOT_IN_RECIPE = ("name", *(f.name for f in dataclasses.fields(ModelOptions)))


@dataclass
class TinyModelConfig(ModelOptions):
    """The embedded tiny Llama-architecture LM, pretrained locally with TRL's SFTTrainer on the task's corpus."""

    name: str = "tiny"
    seed: Annotated[int, NonNegative] = 0
    # BPE target; stops early once every corpus word is one token (1151 by default)
    vocab_size: Annotated[int, Positive] = 2048
    hidden_size: Annotated[int, Positive] = 128
    num_layers: Annotated[int, Positive] = 4
    num_heads: Annotated[int, Positive] = 4
    intermediate_size: Annotated[int, Positive] = 384
    max_position_embeddings: Annotated[int, Positive] = 128
    pretrain_steps: Annotated[int, Positive] = 300
    pretrain_batch_size: Annotated[int, Positive] = 32
    pretrain_lr: Annotated[float, Positive] = 3e-3

    def __post_init__(self) -> None:
        self._check_options()


@dataclass
class HFModelConfig(ModelOptions):
    """Any Hugging Face causal LM: a hub id (from the local HF cache when offline) or a local model directory."""

    name: str = "hf"
    path: str = "???"  # required

    def __post_init__(self) -> None:
        self._check_options()
        if self.soup and self.path != self.soup[0]:  # the soup replaces model.path as the starting policy
            raise ConfigError(f"model.path={self.path} is not model.soup[0]={self.soup[0]}: with model.reference=soup "
                              "the soup is the starting policy (with model.soup[0]'s config and tokenizer); set "
                              "model.path to model.soup[0]")  # fmt: skip


@dataclass
class TinyLargeModelConfig(TinyModelConfig):
    """A larger embedded model (about 5x tiny's parameters), e.g. a distillation teacher for `tiny` students. Built
    from the same corpus with the same vocab_size and max_position_embeddings, so it has tiny's tokenizer."""

    name: str = "tiny-large"
    hidden_size: Annotated[int, Positive] = 256
    num_layers: Annotated[int, Positive] = 6
    intermediate_size: Annotated[int, Positive] = 768
    # tiny's 3e-3 leaves this width behind tiny after 300 steps (final train loss 1.57 vs 1.51); 1e-3 gives 1.49
    pretrain_lr: Annotated[float, Positive] = 1e-3


# built locally by alignctl from an embedded task's corpus
EMBEDDED_MODELS = {"tiny": TinyModelConfig, "tiny-large": TinyLargeModelConfig}


def model_schema(name: str) -> type:
    """The schema of a model option: the embedded tiny model's, or HFModelConfig for `hf` and every preset."""
    return EMBEDDED_MODELS.get(name, HFModelConfig)
