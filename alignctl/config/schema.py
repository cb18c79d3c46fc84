"""Typed schemas of every config group, registered in Hydra's ConfigStore and validated right after compose.

Objective schemas are derived from each objective's loss signature (its keyword-only hyperparameters, their
types and defaults), so an objective's hyperparameters are declared once, in its module. Dataset and reward
schemas come from their registries (alignctl.data.registry, alignctl.rewards.registry); model schemas from
alignctl.models.schema. Value rules: alignctl.constraints.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any

from hydra.core.config_store import ConfigStore

from alignctl import divergences, objectives
from alignctl.constraints import NonNegative, Positive, Rule, check_ranges, field_rules, ranged
from alignctl.data import registry as data_registry
from alignctl.errors import ConfigError
from alignctl.models.schema import EMBEDDED_MODELS, ROLLOUTS, SOUP, HFModelConfig
from alignctl.rewards import registry as reward_registry

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
class TrainConfig:
    max_steps: Annotated[int, Positive] = 200
    batch_size: Annotated[int, Positive] = 16  # pairs per optimizer step (per device, before gradient accumulation)
    gradient_accumulation_steps: Annotated[int, Positive] = 1
    learning_rate: Annotated[float, Positive] = 1e-4
    warmup_steps: Annotated[int, NonNegative] = 10
    max_length: Annotated[int, Positive] = 64  # prompt + completion tokens
    logging_steps: Annotated[int, Positive] = 10
    save_steps: Annotated[int, NonNegative] = 100  # checkpoints for resuming; the final model is always saved
    seed: Annotated[int, NonNegative] = 0
    # torch CPU threads; 0 = torch's default. The tiny models train ~15x faster on 1 thread than on 2 on the
    # 2-core machine (40 DPO steps: 5 s vs 75 s): their matmuls are too small to split.
    num_threads: Annotated[int, NonNegative] = 1
    # false: a new run (its directory must not hold another run); true: continue the run directory's last
    # checkpoint (same config, but for train.max_steps, train.num_threads, eval.* and tracking); auto: resume when the
    # directory has a checkpoint, else start it (a scheduler can re-launch the same command). YAML true/false work.
    resume: str = "false"
    overwrite: bool = False  # clear a previous run's results from the run directory, then start afresh
    # A non-finite gradient: stop (the run is marked "diverged", its checkpoints kept, exit 1) or skip_step (drop
    # that step's update and go on; counted as skipped_steps in the logs). Non-finite weights always stop.
    on_nonfinite: str = "stop"
    # Online objectives only (objective data "groups", e.g. grpo); offline objectives ignore them. Here rather than
    # in the objective's config because they shape the run, not the loss (its schema is its loss signature).
    # batch_size counts completions for them (TRL's GRPO convention): batch_size / num_generations prompts per step.
    # completions sampled per prompt: the group GRPO normalises advantages over
    num_generations: Annotated[int, Positive] = 4
    # (also objective=hypo's k: fresh policy samples per prompt of each step's pairs, the RLOO group of its KL term)
    # divergence=forward_kl/js/alpha: pi_0 samples stored per training prompt before training (with pi_0's
    # per-token log-probs), and how many of them each step's divergence term reads.
    reference_samples_per_prompt: Annotated[int, Positive] = 4
    divergence_batch_size: Annotated[int, Positive] = 16
    # With exact_match: prompts pi_0 solves in every stored sample get the divergence term only, the rest the RL
    # loss only (DPH-RL's D_pef / D_exp split); false: RL on every prompt, divergence on every correct sample.
    split_solved_prompts: bool = True
    num_iterations: Annotated[int, Positive] = 1  # policy updates per generated batch (TRL's num_iterations, GRPO's mu)
    # Upper clip of the GRPO ratio, 1 + clip_high (DAPO's clip-higher, DPH-RL's setting); the ratio is 1 at the
    # first update on a batch, so clipping acts only with num_iterations > 1.
    clip_high: Annotated[float, Positive] = 0.28
    # Iterative DPO (pairwise objectives): rounds of sample -> score -> train. Round 1 trains on the dataset's pairs
    # as a one-round run does; each later round samples pairs from the policy the round before ended with (scored by
    # the reward, built as sampled pairs are) and trains max_steps more steps from it, with a fresh optimizer.
    rounds: Annotated[int, Positive] = 1
    # The reference of rounds 2..N: start (the run's reference, as in round 1) | round (the policy the round starts
    # from, as iterative DPO papers that re-anchor do).
    reference_update: str = "start"
    # Pairwise objectives: batches of pairs of similar length (transformers' LengthGroupedSampler: megabatches of up
    # to 50 batches of shuffled rows, each sorted by prompt + longer completion), so less compute goes to padding;
    # deterministic per seed. false: uniformly shuffled rows (the published tables' setting).
    group_by_length: bool = False

    def __post_init__(self) -> None:
        self.resume = str(self.resume).lower()  # true/false from the command line or a saved YAML are booleans
        if self.resume not in RESUME_MODES:
            raise ConfigError(f"train.resume={self.resume!r} is not valid; choose one of: {', '.join(RESUME_MODES)}")
        if self.on_nonfinite not in ON_NONFINITE:
            raise ConfigError(f"train.on_nonfinite={self.on_nonfinite!r} is not valid; choose one of: "
                              f"{', '.join(ON_NONFINITE)}")  # fmt: skip
        if self.reference_update not in REFERENCE_UPDATES:
            raise ConfigError(f"train.reference_update={self.reference_update!r} is not valid; choose one of: "
                              f"{', '.join(REFERENCE_UPDATES)}")  # fmt: skip
        if self.overwrite and self.resume != "false":
            raise ConfigError(
                f"train.overwrite=true and train.resume={self.resume} contradict each other: overwrite clears the run "
                "directory, resume continues it; set only one"
            )


ON_NONFINITE = ("stop", "skip_step")  # what a non-finite gradient does (alignctl.trainers.nonfinite)
REFERENCE_UPDATES = ("start", "round")  # train.reference_update
RESUME_MODES = ("false", "true", "auto")


JUDGE_KINDS = ("reward", "hf", "openai")
EXPORT_FORMATS = ("alpaca_eval", "arena_hard")


@dataclass
class JudgeConfig:
    """Who decides the pairwise win rate of the policy's samples against the reference's (alignctl.eval.judges)."""

    # reward: the run's reward scores both sides (win_rate_vs_reference); hf: a local causal LM picks the better
    # response, asked in both orders; openai: any OpenAI-compatible chat endpoint (a local vLLM or SGLang server, or
    # a hosted judge), both orders, verdicts cached on disk.
    kind: str = "reward"
    path: str | None = None  # kind=hf: the judge model's dir or hub id
    base_url: str | None = None  # kind=openai: e.g. http://127.0.0.1:8000/v1
    model: str | None = None  # kind=openai: the model name the endpoint serves
    api_key_env: str = "OPENAI_API_KEY"  # kind=openai: the NAME of the environment variable holding the key
    template: str | None = None  # a file or the template text ({prompt}, {output_a}, {output_b}); null: the default
    batch_size: Annotated[int, Positive] = 8  # kind=hf: comparisons per forward pass
    max_concurrency: Annotated[int, Positive] = 8  # kind=openai: requests in flight
    max_retries: Annotated[int, NonNegative] = 4  # kind=openai: retries of a failed request, with backoff
    timeout_s: Annotated[float, Positive] = 60.0  # kind=openai: per request

    def __post_init__(self) -> None:
        ranged("eval.judge", {"kind": JUDGE_KINDS})(self)
        needs = {"hf": ("path",), "openai": ("base_url", "model")}.get(self.kind, ())
        for name in needs:
            if getattr(self, name) is None:
                raise ConfigError(f"eval.judge.kind={self.kind} needs eval.judge.{name}=<"
                                  f"{'model dir or hub id' if name == 'path' else name}>")  # fmt: skip
        if self.kind == "openai" and not self.api_key_env:
            raise ConfigError("eval.judge.api_key_env is empty; name the environment variable holding the API key")


@dataclass
class LmEvalConfig:
    """lm-evaluation-harness tasks run on the policy and on the reference (alignctl.eval.benchmarks)."""

    tasks: list[str] = field(default_factory=list)  # lm-eval task names; [] = none
    include_path: str | None = None  # a folder of task YAMLs (local tasks, which need no network)
    limit: Annotated[int | None, Positive] = None  # documents per task (null: all)
    num_fewshot: Annotated[int | None, NonNegative] = None  # null: each task's own default
    batch_size: Annotated[int, Positive] = 8

    __post_init__ = ranged("eval.lm_eval")


@dataclass
class ExportConfig:
    """The policy's completions written for external judges (alignctl.eval.export)."""

    formats: list[str] = field(default_factory=list)  # alpaca_eval (model_outputs.json), arena_hard (answers .jsonl)
    prompts: str | None = None  # a prompt file in AlpacaEval's or Arena-Hard's layout; null: the eval prompts
    max_new_tokens: Annotated[int, Positive] = 512  # completions for external judges are full answers

    def __post_init__(self) -> None:
        check_ranges("eval.export", self)
        for name in self.formats:
            if name not in EXPORT_FORMATS:
                raise ConfigError(f"eval.export.formats has {name!r}; choose from: {', '.join(EXPORT_FORMATS)}")


@dataclass
class EvalConfig:
    enabled: bool = True
    num_prompts: Annotated[int, Positive] = 64  # held-out prompts sampled from
    # also n of pass@k (k = 1..n) with a correct/incorrect reward (exact_match)
    samples_per_prompt: Annotated[int, Positive] = 4
    # with exact_match, dataset.max_new_tokens instead (a worked answer must fit)
    max_new_tokens: Annotated[int, Positive] = 24
    temperature: Annotated[float, Positive] = 1.0
    batch_size: Annotated[int, Positive] = 64
    seed: Annotated[int, NonNegative] = 0
    # What draws the eval samples: transformers' generate (row-seeded, any machine) or vLLM (CUDA and
    # `pip install "vllm>=0.22,<=0.31"`; its own random numbers, so other samples than transformers' for one seed).
    rollout: str = "transformers"
    reference: str | None = None  # reference model dir for `alignctl eval model_dir=...`
    # The reward-KL trajectory: every N training steps (0: never), reward and KL to the reference on the first
    # curve_prompts held-out prompts (curve_samples_per_prompt each, eval.seed) -> curve.jsonl in the run dir.
    every_steps: Annotated[int, NonNegative] = 0
    curve_prompts: Annotated[int, Positive] = 16
    curve_samples_per_prompt: Annotated[int, Positive] = 2
    # InfAlign's metric: per held-out prompt, the best of N policy samples vs the best of N reference samples (by the
    # raw reward), (wins + ties/2) / prompts -> best_of_{N}_win_rate_vs_reference in eval.json; 0: off.
    best_of_n: Annotated[int, NonNegative] = 0
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    lm_eval: LmEvalConfig = field(default_factory=LmEvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    # A reward benchmark in RewardBench's layout (prompt, chosen, rejected, optional subset; .jsonl/.json/.parquet/
    # .csv): each pair scored by the policy's implicit reward against the reference, accuracy per subset and overall.
    preference_data: str | None = None

    __post_init__ = ranged("eval", {"rollout": ROLLOUTS})


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
    n_jobs: Annotated[int, Positive] = 2  # local: jobs at once (each job trains on train.num_threads torch threads)
    partition: str | None = None  # slurm: null = the cluster's default partition
    account: str | None = None  # slurm: the account charged, where the cluster asks for one
    qos: str | None = None  # slurm: quality of service
    gpus_per_node: Annotated[int, NonNegative] = 1  # slurm/submitit_local: GPUs per job (0: a CPU job)
    cpus_per_task: Annotated[int, Positive] = 4  # slurm: CPUs per job
    mem_gb: Annotated[int | None, Positive] = None  # slurm: memory per job; null = the partition's default
    timeout_min: Annotated[int, Positive] = 60  # slurm/submitit_local: a job's time limit in minutes
    array_parallelism: Annotated[int, Positive] = 256  # slurm: jobs of the sweep's array running at once
    nodes: Annotated[int, Positive] = 1  # slurm: nodes per job (> 1: one accelerate launch per node, num_machines)

    def __post_init__(self) -> None:
        if self.name not in LAUNCHERS:
            raise ConfigError(f"launcher.name={self.name!r} is not valid; choose one of: {', '.join(LAUNCHERS)}")
        check_ranges("launcher", self)
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
    # ranks PER MACHINE (its GPUs; on a CPU-only machine, processes with the gloo backend); the run has
    # num_processes * num_machines ranks (accelerate's --num_processes, which counts them all, is computed at launch)
    num_processes: Annotated[int, Positive] = 1
    config_file: str | None = None  # a user's own accelerate config (`accelerate config`); null: the shipped one
    # rendezvous port on machine 0; null: a free one (one machine), or from SLURM_JOB_ID (launcher=slurm)
    main_process_port: Annotated[int | None, Positive] = None
    # Several machines: run the same `alignctl train ...` on each with its machine_rank (0 on the machine at
    # main_process_ip, where global rank 0 writes the run directory: a filesystem all of them share). Under
    # launcher=slurm with launcher.nodes=num_machines, null machine_rank / main_process_ip come from SLURM's variables.
    num_machines: Annotated[int, Positive] = 1
    machine_rank: Annotated[int | None, NonNegative] = None
    main_process_ip: str | None = None

    def __post_init__(self) -> None:
        if self.name not in DISTRIBUTED:
            raise ConfigError(f"distributed.name={self.name!r} is not valid; choose one of: {', '.join(DISTRIBUTED)}")
        check_ranges("distributed", self)
        if self.name == "none" and (self.num_processes != 1 or self.num_machines != 1):
            field = "num_processes" if self.num_processes != 1 else "num_machines"
            raise ConfigError(
                f"distributed.{field}={getattr(self, field)} needs a distributed option; use distributed=ddp "
                f"(or {', '.join(DISTRIBUTED[2:])})"
            )
        if self.machine_rank is not None and self.machine_rank >= self.num_machines:
            raise ConfigError(f"distributed.machine_rank={self.machine_rank} is out of range for "
                              f"distributed.num_machines={self.num_machines}; use 0..{self.num_machines - 1}")  # fmt: skip


@dataclass
class ComparisonConfig:
    """What a sweep is run to test, written in its preset before it runs (alignctl/conf/experiment/*.yaml) and read
    by `alignctl report`: the claim, where it comes from, the eval.json metrics whose verdict it rests on, and the KL
    values the groups are compared at (report's kl_grid= when the command line gives none). The groups and seeds are
    the sweep's own parameters. Never distinguishes runs: it describes the sweep, not a run."""

    claim: str | None = None  # the paper's claim as this sweep tests it
    source: str | None = None  # the paper: authors, year, arXiv id, the figure or table
    metrics: list[str] = field(default_factory=lambda: ["reward_mean"])  # higher is better in each
    kl_grid: list[float] = field(default_factory=list)  # []: report's kl_points= evenly spaced values

    def __post_init__(self) -> None:
        bad = [x for x in self.kl_grid if not x > 0]
        if bad or list(self.kl_grid) != sorted(set(self.kl_grid)):
            raise ConfigError(f"comparison.kl_grid={list(self.kl_grid)} is not valid; give increasing KL values > 0, "
                              "e.g. [1, 2, 4]")  # fmt: skip
        if not self.metrics:
            raise ConfigError("comparison.metrics=[] names no metric; give eval.json metrics, e.g. [reward_mean]")


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
    comparison: ComparisonConfig = field(default_factory=ComparisonConfig)  # a preset's declared comparison

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

    def _check_data_and_reward(self, entry: objectives.Objective) -> None:
        """The dataset must provide the objective's data kind, the reward must be one the dataset can use, and the
        model option must be one the dataset can run with."""
        dataset = data_registry.get(self.dataset.name)
        provided = data_registry.data_kinds(dataset)
        if entry.data not in provided:
            fits = [name for name, d in data_registry.REGISTRY.items() if entry.data in data_registry.data_kinds(d)]
            usable = [name for name, e in objectives.REGISTRY.items() if e.data in provided]
            raise ConfigError(
                f"dataset={self.dataset.name} provides no {DATA_KIND_NAMES[entry.data]}, which objective={entry.name}"
                f" needs; choose dataset from: {', '.join(fits)}, or objective from: {', '.join(usable)}"
            )
        noise = getattr(self.dataset, "label_noise", 0.0)
        if noise and entry.data not in NOISY_LABEL_KINDS:
            noisy = [name for name, e in objectives.REGISTRY.items() if e.data in NOISY_LABEL_KINDS]
            raise ConfigError(
                f"dataset.label_noise={noise} reverses the labels of preference pairs or ranked candidates, and "
                f"objective={entry.name} trains on {DATA_KIND_NAMES[entry.data]}; set dataset.label_noise=0, or "
                f"objective from: {', '.join(noisy)}"
            )
        if entry.reward_threshold_only and self.reward.transform != "identity":
            raise ConfigError(
                f"reward.transform={self.reward.transform} changes nothing for objective={entry.name}, which only splits "
                "samples at reward > objective.positive_threshold (a monotone transform just moves the threshold); use "
                "reward.transform=identity (threshold 0.5: better than the reference's median sample)"
            )
        if self.reward.name not in dataset.accepted_rewards():
            raise ConfigError(
                f"reward={self.reward.name} does not fit dataset={self.dataset.name}; "
                f"choose one of: {', '.join(dataset.accepted_rewards())}"
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
        self._check_rounds(entry)
        if self.train.group_by_length and entry.data != "pairs":
            raise ConfigError(
                f"train.group_by_length=true groups preference pairs by length; objective={entry.name} trains on "
                f"{DATA_KIND_NAMES[entry.data]}: leave it false"
            )
        if self.launcher.name in ("slurm", "submitit_local") and self.launcher.nodes != self.distributed.num_machines:
            raise ConfigError(
                f"launcher.nodes={self.launcher.nodes} must equal distributed.num_machines="
                f"{self.distributed.num_machines}: a job's ranks span its nodes, one accelerate launch per node"
            )
        if entry.data == "binary" and self.train.batch_size < 2:
            raise ConfigError(
                f"train.batch_size={self.train.batch_size} is too small for objective={entry.name}: its KL reference "
                "point pairs each prompt with another row's completion of the batch; use 2 or more"
            )
        if entry.data == "groups" and self.train.batch_size % self.train.num_generations:
            raise ConfigError(
                f"train.batch_size={self.train.batch_size} is not a multiple of train.num_generations="
                f"{self.train.num_generations} (online objectives count completions per step)"
            )

    def _check_rounds(self, entry: objectives.Objective) -> None:
        """train.rounds > 1 samples new pairs each round: a pairwise objective trained by the pairs trainer (not a
        distillation from teachers); train.reference_update=round needs a reference to update and rounds to update
        it in."""
        t = self.train
        def iterative(e: objectives.Objective) -> bool:  # a policy trained on pairs, not a teacher's student or an RM
            return e.data == "pairs" and not e.model_options and not e.trains_reward_model

        if t.rounds > 1 and not iterative(entry):
            pairwise = [n for n, e in objectives.REGISTRY.items() if iterative(e)]
            raise ConfigError(
                f"train.rounds={t.rounds} is not supported by objective={entry.name}: rounds sample new preference "
                f"pairs from the policy, which only pairwise objectives train on; use train.rounds=1, or objective "
                f"from: {', '.join(pairwise)}"
            )
        if t.rounds > 1 and self.distributed.num_processes > 1:
            raise ConfigError(
                f"train.rounds={t.rounds} trains in one process: each round samples its pairs from the policy the round "
                f"before ended with, which the ranks of a multi-process run cannot build (distributed.num_processes="
                f"{self.distributed.num_processes}); use distributed=none, or train.rounds=1"
            )
        if t.reference_update == "round" and t.rounds == 1:
            raise ConfigError("train.reference_update=round changes nothing with train.rounds=1 (it sets the "
                              "reference of rounds 2 and later); set train.rounds>=2 or leave it at start")  # fmt: skip
        if t.reference_update == "round" and not entry.needs_reference:
            raise ConfigError(f"train.reference_update=round: objective={entry.name} uses no reference model; leave "
                              "train.reference_update=start")  # fmt: skip


def resolve_divergence(objective: str, divergence: str) -> str:
    """The divergence a run uses: `auto` means the objective's own default."""
    return objectives.REGISTRY[objective].default_divergence if divergence == "auto" else divergence


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
    # models the objective reads besides the policy (a distillation teacher): paths, not loss hyperparameters
    fields += [(name, str | None, field(default=None)) for name in entry.model_options]
    return dataclasses.make_dataclass(
        f"{entry.name.capitalize()}ObjectiveConfig", fields,
        namespace={"__post_init__": ranged("objective", choices)},
    )  # fmt: skip


def hyperparameter_rules(entry: objectives.Objective) -> list[tuple[str, Any, Rule | None]]:
    """(name, default, value rule) of an objective's options (its loss hyperparameters), as its
    module declares them: what `alignctl ls objective` and docs/objectives.md show."""
    schema = objective_schema(entry)
    rules = field_rules(schema)
    skip = {"name", *entry.model_options}
    return [(f.name, f.default, rules.get(f.name)) for f in dataclasses.fields(schema) if f.name not in skip]


def hyperparameters(objective_cfg: Any) -> dict[str, Any]:
    """The loss keyword arguments of a composed objective config (everything but its name and model options)."""
    entry = objectives.get(objective_cfg.name)
    not_loss = {"name", *entry.model_options}
    return {f.name: getattr(objective_cfg, f.name) for f in dataclasses.fields(objective_cfg) if f.name not in not_loss}


# The data kinds whose training rows dataset.label_noise flips (alignctl.run.build.training_data): pairs swap chosen
# and rejected, ranked candidates reverse their ranking. Every other kind refuses a nonzero label_noise.
NOISY_LABEL_KINDS = ("pairs", "candidates")

DATA_KIND_NAMES = {
    "pairs": "preference pairs", "binary": "binary feedback (completions labelled desirable or not)",
    "candidates": "ranked candidates", "negatives": "negatives with self-samples",
    "groups": "prompts with a reward", "sft": "completions to imitate",
}


def register() -> None:
    """Put every schema in Hydra's ConfigStore; group YAMLs extend them via `/schema/<group>@_here_`."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    for name, entry in objectives.REGISTRY.items():
        cs.store(group="schema/objective", name=name, node=objective_schema(entry))

    for name, entry in data_registry.REGISTRY.items():
        cs.store(group="schema/dataset", name=name, node=entry.schema)
    for name, schema in (*EMBEDDED_MODELS.items(), ("hf", HFModelConfig)):
        cs.store(group="schema/model", name=name, node=schema)
    for name, entry in reward_registry.REGISTRY.items():
        cs.store(group="schema/reward", name=name, node=entry.schema)
    cs.store(group="schema/divergence", name="divergence", node=DivergenceConfig)
