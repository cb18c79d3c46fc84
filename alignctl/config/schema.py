"""Typed schemas of every config group, registered in Hydra's ConfigStore and validated right after compose.

Objective schemas are derived from each objective's loss signature (its keyword-only hyperparameters, their
types and defaults), so an objective's hyperparameters are declared once, in its module. Dataset and reward
schemas come from their registries (alignctl.data.registry, alignctl.rewards.registry); model schemas are here.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from alignctl import divergences, objectives

KERNELS = ("fused", "naive")
ROLLOUTS = ("transformers", "vllm")
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION = ("eager", "sdpa", "flash_attention_2")


class ConfigError(ValueError):
    """A bad config value: the message is one line naming the field, the value and the valid choices."""


# ---------------------------------------------------------------------------------------------------------------
# Groups with one schema each


@dataclass
class DivergenceConfig:
    name: str = "auto"  # auto: the objective's preferred divergence
    alpha: float | None = None  # only for name=alpha: the f-DPO paper's alpha in (0, 1)

    def __post_init__(self) -> None:
        choices = ("auto", *divergences.NAMES, "none")
        if self.name not in choices:
            raise ConfigError(f"divergence.name={self.name!r} is not valid; choose one of: {', '.join(choices)}")
        if self.name == "alpha" and (self.alpha is None or not 0.0 < self.alpha < 1.0):
            raise ConfigError(f"divergence.alpha={self.alpha} is out of range; it must lie in (0, 1)")
        if self.name != "alpha" and self.alpha is not None:
            raise ConfigError(f"divergence.alpha={self.alpha} is only used with divergence=alpha, not {self.name}")

    def build(self) -> divergences.Divergence | None:
        return None if self.name == "none" else divergences.get(self.name, self.alpha)


@dataclass
class LoraConfig:
    """LoRA through peft; r=0 trains the full model. With LoRA the reference is the base with the adapter off."""

    r: int = 0
    alpha: float = 16.0
    dropout: float = 0.05
    # ["all-linear"] (peft: every linear layer but the output head) or module names, e.g. [q_proj, v_proj]
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])

    def __post_init__(self) -> None:
        check_ranges("model.lora", self)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.lora.dropout={self.dropout} is out of range; it must lie in [0, 1)")
        if not self.target_modules:
            raise ConfigError("model.lora.target_modules=[] names no module; use [all-linear] or module names")


@dataclass
class ModelOptions:
    """How a run loads and computes with its model; shared by every model option and never part of a recipe."""

    # How log-probs and token divergences are computed (alignctl.kernels): fused = chunked/Triton, never
    # [tokens, vocab] logits; naive = the model's own full logits. A model whose LM head the fused path cannot
    # represent falls back to naive with a one-line notice. disco and fdpg train on TRL's own log-probs (to match
    # the old-policy and reference log-probs TRL computes); their eval uses this.
    kernel: str = "fused"
    # How online objectives sample during training: transformers' generate (any machine), or TRL's vLLM option
    # (colocated on the training GPU; needs CUDA and `pip install vllm`).
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
    seed: int = 0
    vocab_size: int = 2048  # BPE target; stops early once every corpus word is one token (1151 by default)
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 128
    pretrain_steps: int = 300
    pretrain_batch_size: int = 32
    pretrain_lr: float = 3e-3

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
    hidden_size: int = 256
    num_layers: int = 6
    intermediate_size: int = 768
    # tiny's 3e-3 leaves this width behind tiny after 300 steps (final train loss 1.57 vs 1.51); 1e-3 gives 1.49
    pretrain_lr: float = 1e-3


# built locally by alignctl from an embedded task's corpus
EMBEDDED_MODELS = {"tiny": TinyModelConfig, "tiny-large": TinyLargeModelConfig}


def model_schema(name: str) -> type:
    """The schema of a model option: the embedded tiny model's, or HFModelConfig for `hf` and every preset."""
    return EMBEDDED_MODELS.get(name, HFModelConfig)


@dataclass
class TrainConfig:
    max_steps: int = 200
    batch_size: int = 16  # pairs per optimizer step (per device, before gradient accumulation)
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    warmup_steps: int = 10
    max_length: int = 64  # prompt + completion tokens
    logging_steps: int = 10
    save_steps: int = 100  # checkpoints for resuming; the final model is always saved
    seed: int = 0
    # torch CPU threads; 0 = torch's default. The tiny models train ~15x faster on 1 thread than on 2 on the
    # 2-core machine (40 DPO steps: 5 s vs 75 s): their matmuls are too small to split.
    num_threads: int = 1
    # false: a new run (its directory must not hold another run); true: continue the run directory's last
    # checkpoint (same config, but for train.max_steps, train.num_threads, eval.* and tracking); auto: resume when the
    # directory has a checkpoint, else start it (a scheduler can re-launch the same command). YAML true/false work.
    resume: str = "false"
    overwrite: bool = False  # clear a previous run's results from the run directory, then start afresh
    # Online objectives only (objective data "groups", e.g. grpo); offline objectives ignore them. Here rather than
    # in the objective's config because they shape the run, not the loss (its schema is its loss signature), and
    # they are integers (an objective's data_options are floats). batch_size counts completions for them (TRL's
    # GRPO convention): batch_size / num_generations prompts per step.
    num_generations: int = 4  # completions sampled per prompt: the group GRPO normalises advantages over
    # (also objective=hypo's k: fresh policy samples per prompt of each step's pairs, the RLOO group of its KL term)
    # divergence=forward_kl/js/alpha: pi_0 samples stored per training prompt before training (with pi_0's
    # per-token log-probs), and how many of them each step's divergence term reads.
    reference_samples_per_prompt: int = 4
    divergence_batch_size: int = 16
    # With exact_match: prompts pi_0 solves in every stored sample get the divergence term only, the rest the RL
    # loss only (DPH-RL's D_pef / D_exp split); false: RL on every prompt, divergence on every correct sample.
    split_solved_prompts: bool = True
    num_iterations: int = 1  # policy updates per generated batch (TRL's num_iterations, GRPO's mu)
    # Upper clip of the GRPO ratio, 1 + clip_high (DAPO's clip-higher, DPH-RL's setting); the ratio is 1 at the
    # first update on a batch, so clipping acts only with num_iterations > 1.
    clip_high: float = 0.28

    def __post_init__(self) -> None:
        self.resume = str(self.resume).lower()  # true/false from the command line or a saved YAML are booleans
        if self.resume not in RESUME_MODES:
            raise ConfigError(f"train.resume={self.resume!r} is not valid; choose one of: {', '.join(RESUME_MODES)}")
        if self.overwrite and self.resume != "false":
            raise ConfigError(
                f"train.overwrite=true and train.resume={self.resume} contradict each other: overwrite clears the run "
                "directory, resume continues it; set only one"
            )


RESUME_MODES = ("false", "true", "auto")


@dataclass
class EvalConfig:
    enabled: bool = True
    num_prompts: int = 64  # held-out prompts sampled from
    samples_per_prompt: int = 4  # also n of pass@k (k = 1..n) with a correct/incorrect reward (exact_match)
    max_new_tokens: int = 24  # with exact_match, dataset.max_new_tokens instead (a worked answer must fit)
    temperature: float = 1.0
    batch_size: int = 64
    seed: int = 0
    reference: str | None = None  # reference model dir for `alignctl eval model_dir=...`
    # The reward-KL trajectory: every N training steps (0: never), reward and KL to the reference on the first
    # curve_prompts held-out prompts (curve_samples_per_prompt each, eval.seed) -> curve.jsonl in the run dir.
    every_steps: int = 0
    curve_prompts: int = 16
    curve_samples_per_prompt: int = 2
    # InfAlign's metric: per held-out prompt, the best of N policy samples vs the best of N reference samples (by the
    # raw reward), (wins + ties/2) / prompts -> best_of_{N}_win_rate_vs_reference in eval.json; 0: off.
    best_of_n: int = 0


LAUNCHERS = ("basic", "local", "slurm", "submitit_local")
# The fields each launcher reads (submitit_local takes slurm's, so a SLURM sweep can be tried locally unchanged): a
# value set for another launcher is an error, e.g. launcher.n_jobs=4 without launcher=local would run one at a time.
LAUNCHER_FIELDS = {
    "basic": (),
    "local": ("n_jobs",),
    "slurm": ("partition", "account", "qos", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min",
              "array_parallelism", "nodes"),
}  # fmt: skip
LAUNCHER_FIELDS["submitit_local"] = LAUNCHER_FIELDS["slurm"]


@dataclass
class LauncherConfig:
    """How a sweep (-m) runs its jobs; never part of what a run trains (not in run names, changeable on resume). The
    option's YAML (conf/launcher/) selects Hydra's launcher plugin and hands it these values."""

    name: str = "basic"  # basic: one after another | local: joblib, in parallel | slurm | submitit_local
    n_jobs: int = 2  # local: jobs at once (each job trains on train.num_threads torch threads)
    partition: str | None = None  # slurm: null = the cluster's default partition
    account: str | None = None  # slurm: the account charged, where the cluster asks for one
    qos: str | None = None  # slurm: quality of service
    gpus_per_node: int = 1  # slurm/submitit_local: GPUs per job (0: a CPU job)
    cpus_per_task: int = 4  # slurm: CPUs per job
    mem_gb: int | None = None  # slurm: memory per job; null = the partition's default
    timeout_min: int = 60  # slurm/submitit_local: a job's time limit in minutes
    array_parallelism: int = 256  # slurm: jobs of the sweep's array running at once
    nodes: int = 1  # slurm: a job trains on one node

    def __post_init__(self) -> None:
        if self.name not in LAUNCHERS:
            raise ConfigError(f"launcher.name={self.name!r} is not valid; choose one of: {', '.join(LAUNCHERS)}")
        check_ranges("launcher", self)
        if self.nodes != 1:
            raise ConfigError(f"launcher.nodes={self.nodes} is out of range; a job trains on one node: it must be 1")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "name" and f.name not in LAUNCHER_FIELDS[self.name] and value != f.default:
                users = [n for n, used in LAUNCHER_FIELDS.items() if f.name in used]
                raise ConfigError(
                    f"launcher.{f.name}={value} is not used by launcher={self.name}; it is read by "
                    f"launcher={' or launcher='.join(users)}"
                )


DISTRIBUTED = ("none", "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3")


@dataclass
class DistributedConfig:
    """How one run trains: in this process (none) or under `accelerate launch` with num_processes ranks. Apart from
    `launcher` (how a sweep's jobs start), so a sweep of multi-process jobs composes both. Never part of what a run
    trains: train.batch_size is the global batch whatever the number of processes (see alignctl/run/distributed.py)."""

    name: str = "none"  # none | ddp | fsdp | deepspeed_zero2 | deepspeed_zero3
    num_processes: int = 1  # ranks on this node (GPUs; on a CPU-only machine, processes with the gloo backend)
    config_file: str | None = None  # a user's own accelerate config (`accelerate config`); null: the shipped one
    main_process_port: int | None = None  # rendezvous port; null: a free one

    def __post_init__(self) -> None:
        if self.name not in DISTRIBUTED:
            raise ConfigError(f"distributed.name={self.name!r} is not valid; choose one of: {', '.join(DISTRIBUTED)}")
        check_ranges("distributed", self)
        if self.name == "none" and self.num_processes != 1:
            raise ConfigError(
                f"distributed.num_processes={self.num_processes} needs a distributed option; use distributed=ddp "
                f"(or {', '.join(DISTRIBUTED[2:])})"
            )


@dataclass
class RunConfig:
    objective: Any = None
    divergence: DivergenceConfig = field(default_factory=DivergenceConfig)
    reward: Any = None
    dataset: Any = None
    model: Any = None
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: str = "wandb"  # wandb (offline unless WANDB_MODE says otherwise) | none
    launcher: LauncherConfig = field(default_factory=LauncherConfig)  # how a sweep runs its jobs (-m only)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)  # how one run trains: 1 or N ranks

    def __post_init__(self) -> None:
        if self.tracking not in ("wandb", "none"):
            raise ConfigError(f"tracking={self.tracking!r} is not valid; choose one of: wandb, none")
        entry = objectives.REGISTRY[self.objective.name]
        if self.divergence.name == "auto":
            name = entry.default_divergence
            self.divergence = DivergenceConfig(name, 0.5 if name == "alpha" else None)
        accepted = entry.divergences or ("none",)
        if self.divergence.name not in accepted:
            raise ConfigError(
                f"divergence={self.divergence.name} is not accepted by objective={entry.name}; "
                f"choose one of: {', '.join(accepted)}"
            )
        for group in ("train", "eval"):
            check_ranges(group, getattr(self, group))
        if entry.check is not None:
            problem = entry.check(hyperparameters(self.objective), self.divergence.name)
            if problem:
                raise ConfigError(problem)
        self._check_data_and_reward(entry)
        if entry.model_options:
            self._check_teachers()

    def _check_teachers(self) -> None:
        """A distillation objective's teacher models exist (alignctl.models.loading.teacher_sources), before any
        model loads; their vocabulary is checked against the policy's when they load."""
        from alignctl.errors import UsageError
        from alignctl.models import loading

        try:
            loading.teacher_sources(self)
        except UsageError as e:
            raise ConfigError(str(e)) from None

    def _check_data_and_reward(self, entry: objectives.Objective) -> None:
        """The dataset must provide the objective's data kind, the reward must be one the dataset can use, and the
        model option must be one the dataset can run with."""
        from alignctl.data import registry as data_registry

        dataset = data_registry.get(self.dataset.name)
        provided = data_registry.data_kinds(dataset)
        if entry.data not in provided:
            fits = [name for name, d in data_registry.REGISTRY.items() if entry.data in data_registry.data_kinds(d)]
            usable = [name for name, e in objectives.REGISTRY.items() if e.data in provided]
            raise ConfigError(
                f"dataset={self.dataset.name} provides no {DATA_KIND_NAMES[entry.data]}, which objective={entry.name}"
                f" needs; choose dataset from: {', '.join(fits)}, or objective from: {', '.join(usable)}"
            )
        if entry.reward_threshold_only and self.reward.transform != "identity":
            raise ConfigError(
                f"reward.transform={self.reward.transform} changes nothing for objective={entry.name}, which only splits "
                "samples at reward > objective.positive_threshold (a monotone transform just moves the threshold); use "
                "reward.transform=identity (threshold 0.5: better than the reference's median sample)"
            )
        if self.reward.name not in dataset.rewards:
            raise ConfigError(
                f"reward={self.reward.name} does not fit dataset={self.dataset.name}; "
                f"choose one of: {', '.join(dataset.rewards)}"
            )
        if self.model.name in EMBEDDED_MODELS and dataset.embedded_model is None:
            embedded = [name for name, d in data_registry.REGISTRY.items() if d.embedded_model is not None]
            raise ConfigError(
                f"model={self.model.name} is built from an embedded task's corpus and dataset={self.dataset.name} is "
                f"not one; use model=hf model.path=<hub id or model dir> (or a preset: alignctl ls model), or dataset "
                f"from: {', '.join(embedded)}"
            )
        if self.model.rollout != "transformers" and entry.data != "groups":
            online = [name for name, e in objectives.REGISTRY.items() if e.data == "groups"]
            raise ConfigError(
                f"model.rollout={self.model.rollout} only changes how online objectives ({', '.join(online)}) sample; "
                f"objective={entry.name} samples nothing while training"
            )
        # (a soup is allowed: it is the starting weights as well as the reference)
        if entry.data == "groups" and self.model.reference not in (None, SOUP):
            raise ConfigError(
                f"model.reference={self.model.reference} is not supported by objective={entry.name}: TRL's GRPOTrainer "
                "anchors online objectives to the policy's starting weights; unset model.reference (or use "
                "model.reference=soup, which is both)"
            )
        if entry.reads_groups and self.train.gradient_accumulation_steps != 1:
            raise ConfigError(
                f"train.gradient_accumulation_steps={self.train.gradient_accumulation_steps} is not supported by "
                f"objective={entry.name}: its loss reads whole groups, which TRL splits across accumulation steps; "
                "use 1 (raise train.batch_size instead)"
            )
        if entry.data == "groups" and self.train.batch_size % self.train.num_generations:
            raise ConfigError(
                f"train.batch_size={self.train.batch_size} is not a multiple of train.num_generations="
                f"{self.train.num_generations} (online objectives count completions per step)"
            )


def resolve_divergence(objective: str, divergence: str) -> str:
    """The divergence a run uses: `auto` means the objective's own default."""
    return objectives.REGISTRY[objective].default_divergence if divergence == "auto" else divergence


# ---------------------------------------------------------------------------------------------------------------
# Value rules by field name, shared by every schema: a hyperparameter named beta means the same thing everywhere.

_POSITIVE = {
    "beta", "tau", "max_steps", "batch_size", "gradient_accumulation_steps", "learning_rate", "max_length",
    "logging_steps", "num_prompts", "samples_per_prompt", "max_new_tokens", "temperature", "corpus_size",
    "prompt_words", "num_train_prompts", "num_test_prompts", "vocab_size", "hidden_size", "num_layers",
    "num_heads", "intermediate_size", "max_position_embeddings", "pretrain_steps", "pretrain_batch_size",
    "pretrain_lr", "candidates_per_prompt", "self_samples", "digits", "ood_digits", "num_ood_prompts",
    "num_generations", "reference_samples_per_prompt", "divergence_batch_size", "num_iterations", "delta", "clip_high",
    "max_rows", "test_size", "max_length", "curve_prompts", "curve_samples_per_prompt", "n_jobs", "cpus_per_task",
    "mem_gb", "timeout_min", "array_parallelism", "nodes", "num_processes", "main_process_port",
}
_NON_NEGATIVE = {
    "eta", "gamma_beta_ratio", "alpha", "lam", "warmup_steps", "save_steps", "num_threads", "seed", "divergence_coef",
    "constraint_weight", "r", "every_steps", "best_of_n", "gpus_per_node", "kd_weight", "sft_weight",
}
_PROBABILITY_BELOW_HALF = {"label_noise"}


def check_ranges(group: str, node: Any) -> None:
    """The value rules of every numeric field of a config dataclass, by field name; no NaN or infinity anywhere."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{group}.{f.name}={value} is not a finite number")
        if f.name in _POSITIVE and not value > 0:
            raise ConfigError(f"{group}.{f.name}={value} is out of range; it must be > 0")
        if f.name in _NON_NEGATIVE and not value >= 0:
            raise ConfigError(f"{group}.{f.name}={value} is out of range; it must be >= 0")
        if f.name in _PROBABILITY_BELOW_HALF and not 0 <= value < 0.5:
            raise ConfigError(f"{group}.{f.name}={value} is out of range; it must lie in [0, 0.5)")


def _ranged(group: str, choices: dict[str, tuple[str, ...]] | None = None):
    def __post_init__(self) -> None:
        check_ranges(group, self)
        for name, valid in (choices or {}).items():
            if getattr(self, name) not in valid:
                raise ConfigError(
                    f"{group}.{name}={getattr(self, name)!r} is not valid; choose one of: {', '.join(valid)}"
                )

    return __post_init__


def objective_schema(entry: objectives.Objective) -> type:
    """A dataclass with `name`, the keyword-only hyperparameters of the objective's loss, and its data options.
    A `Literal[...]` hyperparameter becomes a string field checked against its choices."""
    fields: list[tuple[str, Any, Any]] = [("name", str, field(default=entry.name))]
    choices: dict[str, tuple[str, ...]] = {}
    for p in inspect.signature(entry.loss).parameters.values():
        if p.kind is p.KEYWORD_ONLY and p.name != "divergence":
            # this parameter's annotation only (typing.get_type_hints would evaluate the tensor ones too, importing
            # torch: alignctl.lazy)
            hint = eval(p.annotation, entry.loss.__globals__) if isinstance(p.annotation, str) else p.annotation
            if typing.get_origin(hint) is typing.Literal:
                choices[p.name], hint = typing.get_args(hint), str
            fields.append((p.name, hint, field(default=p.default)))
    fields += [(name, float, field(default=default)) for name, default in entry.data_options]
    # models the objective reads besides the policy (a distillation teacher): paths, not loss hyperparameters
    fields += [(name, str | None, field(default=None)) for name in entry.model_options]
    return dataclasses.make_dataclass(
        f"{entry.name.capitalize()}ObjectiveConfig", fields,
        namespace={"__post_init__": _ranged("objective", choices)},
    )  # fmt: skip


def hyperparameters(objective_cfg: Any) -> dict[str, Any]:
    """The loss keyword arguments of a composed objective config (everything but its name, data and model options)."""
    entry = objectives.get(objective_cfg.name)
    not_loss = {"name", *(name for name, _ in entry.data_options), *entry.model_options}
    return {f.name: getattr(objective_cfg, f.name) for f in dataclasses.fields(objective_cfg) if f.name not in not_loss}


DATA_KIND_NAMES = {
    "pairs": "preference pairs", "candidates": "ranked candidates", "negatives": "negatives with self-samples",
    "groups": "prompts with a reward", "sft": "completions to imitate",
}


def register() -> None:
    """Put every schema in Hydra's ConfigStore; group YAMLs extend them via `/schema/<group>@_here_`."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    for name, entry in objectives.REGISTRY.items():
        cs.store(group="schema/objective", name=name, node=objective_schema(entry))
    from alignctl.data import registry as data_registry
    from alignctl.rewards import registry as reward_registry

    for name, entry in data_registry.REGISTRY.items():
        cs.store(group="schema/dataset", name=name, node=entry.schema)
    for name, schema in (*EMBEDDED_MODELS.items(), ("hf", HFModelConfig)):
        cs.store(group="schema/model", name=name, node=schema)
    for name, entry in reward_registry.REGISTRY.items():
        cs.store(group="schema/reward", name=name, node=entry.schema)
    cs.store(group="schema/divergence", name="divergence", node=DivergenceConfig)
