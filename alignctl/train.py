"""One run: build what the config names, train with TRL, save, evaluate; everything lands in the run directory."""

from __future__ import annotations

import importlib.util
import json
import platform
import subprocess
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import get_last_checkpoint
from trl import DPOConfig, GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer
from trl.trainer.callbacks import RichProgressCallback

from alignctl import build, compose, config, runtime, scoring, tracking
from alignctl.errors import UsageError
from alignctl.models import loading
from alignctl.trainers.candidates import CandidateTrainer
from alignctl.trainers.groups import GROUP_TRAINERS
from alignctl.trainers.online import OnlineTrainer, dph_reference_store, trl_reward
from alignctl.trainers.preference import PreferenceTrainer

console = Console(stderr=True)

TRACKED_LIBRARIES = (
    "alignctl", "torch", "transformers", "trl", "accelerate", "datasets", "tokenizers", "peft", "hydra-core",
)


class MetricsFile(TrainerCallback):
    """Appends every logged step to metrics.jsonl, one JSON object per line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


def provenance(cfg: config.RunConfig) -> dict[str, Any]:
    """What a reader needs to reproduce a number: seed, code version, libraries, machine."""
    return {
        "seed": cfg.train.seed,
        "command": sys.argv,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "libraries": {name: _version(name) for name in TRACKED_LIBRARIES},
    }


def _git_commit() -> str:
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=source, capture_output=True, text=True).stdout
        return commit + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _shared_args(cfg: config.RunConfig, run_dir: Path, report_to: list[str]) -> dict[str, Any]:
    """TrainingArguments both trainers take from TrainConfig."""
    t = cfg.train
    return dict(
        output_dir=str(run_dir / "checkpoints"),
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        warmup_steps=t.warmup_steps,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if t.save_steps else "no",
        save_steps=t.save_steps or 500,
        save_total_limit=1,  # the last checkpoint is what a resumed run needs
        seed=t.seed,
        data_seed=t.seed,
        report_to=report_to,
        run_name=run_dir.name,
        activation_checkpointing=cfg.model.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        # Weights train in model.dtype as loaded; bf16 autocast on CUDA as TRL's examples do. No fp16 flag: its grad
        # scaler refuses float16 weights.
        bf16=cfg.model.dtype == "bfloat16" and torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def training_args(cfg: config.RunConfig, run_dir: Path, report_to: list[str]) -> DPOConfig:
    return DPOConfig(**_shared_args(cfg, run_dir, report_to), max_length=cfg.train.max_length, dataset_num_proc=None)


def sft_args(cfg: config.RunConfig, run_dir: Path, report_to: list[str]) -> SFTConfig:
    """TRL's SFTConfig: loss on completion tokens only (prompt-completion rows), sequences cut at train.max_length."""
    return SFTConfig(**_shared_args(cfg, run_dir, report_to), max_length=cfg.train.max_length,
                     completion_only_loss=True, dataset_num_proc=None)  # fmt: skip


def online_args(cfg: config.RunConfig, run_dir: Path, report_to: list[str]) -> GRPOConfig:
    """TRL's GRPOConfig from TrainConfig: batch_size counts completions (batch_size / num_generations prompts per
    step), temperature 1, completions up to dataset.max_new_tokens, train.num_iterations policy updates per
    generated batch, ratio clipped to [1 - 0.2, 1 + train.clip_high]; TRL's defaults otherwise (loss_type "dapo").
    beta is set by the trainer."""
    return GRPOConfig(
        **_shared_args(cfg, run_dir, report_to),
        num_generations=cfg.train.num_generations,
        num_iterations=cfg.train.num_iterations,
        epsilon_high=cfg.train.clip_high,
        max_completion_length=cfg.dataset.max_new_tokens,
        temperature=1.0,
        use_vllm=cfg.model.rollout == "vllm",
        vllm_mode="colocate",  # vLLM shares the training GPU: no separate server to start
    )


def check_rollout(cfg: config.RunConfig) -> None:
    """model.rollout=vllm needs what TRL's vLLM path needs; say so before any model loads."""
    if cfg.model.rollout != "vllm":
        return
    if not torch.cuda.is_available():
        raise UsageError("model.rollout=vllm needs a CUDA GPU and there is none; use model.rollout=transformers")
    if importlib.util.find_spec("vllm") is None:
        raise UsageError("model.rollout=vllm needs the vllm package (pip install vllm); or use model.rollout=transformers")


def online_trainer(cfg, run_dir, report_to, model, tokenizer, train_data, objective, divergence, kernel) -> GRPOTrainer:
    """The online trainer for `objective`: GRPO (OnlineTrainer; with, for the generator divergences, pi_0's stored
    samples, taken from the model before training) or an objective with its own loss (disco, fdpg)."""
    reward = build.reward(cfg)
    verifiable = build.is_binary_reward(cfg)
    common = dict(
        model=model,
        peft_config=loading.lora_config(cfg),
        reward_funcs=trl_reward(reward, cfg.reward.name),
        args=online_args(cfg, run_dir, report_to),
        processing_class=tokenizer,
        callbacks=[MetricsFile(run_dir / "metrics.jsonl")],
        objective=objective,
        hyperparameters=config.hyperparameters(cfg.objective),
        divergence=divergence,
    )
    if objective.reads_groups:
        return GROUP_TRAINERS[objective.name](train_dataset=train_data, **common)
    store = None
    if divergence is not None and divergence.name != "reverse_kl":
        store, train_data = dph_reference_store(
            model, tokenizer, train_data, reward, divergence,
            samples_per_prompt=cfg.train.reference_samples_per_prompt, max_new_tokens=cfg.dataset.max_new_tokens,
            seed=cfg.train.seed, verifiable=verifiable, split_solved=verifiable and cfg.train.split_solved_prompts,
            kernel=kernel,
        )  # fmt: skip
    return OnlineTrainer(
        train_dataset=train_data,
        reference_store=store,
        divergence_batch_size=cfg.train.divergence_batch_size,
        kernel=kernel,
        **common,
    )


def resume_point(cfg: config.RunConfig, run_dir: Path) -> str | None:
    """The last checkpoint to resume from (train.resume=true); metrics logged after it are dropped."""
    metrics = run_dir / "metrics.jsonl"
    if not cfg.train.resume:
        metrics.unlink(missing_ok=True)
        return None
    checkpoint = get_last_checkpoint(str(run_dir / "checkpoints"))
    if checkpoint is None:
        raise UsageError(f"train.resume=true but {run_dir / 'checkpoints'} holds no checkpoint to resume from")
    step = int(Path(checkpoint).name.split("-")[-1])
    if metrics.is_file():
        kept = [line for line in metrics.read_text().splitlines() if json.loads(line)["step"] <= step]
        metrics.write_text("".join(line + "\n" for line in kept))
    console.print(f"resumed from {Path(checkpoint).name}")
    return checkpoint


def offline_trainer(cfg, run_dir, report_to, model, tokenizer, train_data, objective, divergence, kernel):
    """The trainer of an offline objective: pairs (PreferenceTrainer), candidates/negatives (CandidateTrainer), or
    supervised fine-tuning (TRL's SFTTrainer as it is)."""
    callbacks = [MetricsFile(run_dir / "metrics.jsonl")]
    peft_config = loading.lora_config(cfg)
    if objective.data == "sft":
        return SFTTrainer(model=model, args=sft_args(cfg, run_dir, report_to), train_dataset=train_data,
                          processing_class=tokenizer, callbacks=callbacks, peft_config=peft_config)  # fmt: skip
    reference = None
    # With LoRA the reference is the base with the adapter off (no second copy), unless model.reference names one.
    if objective.needs_reference and (peft_config is None or cfg.model.reference is not None):
        reference = loading.load_causal_lm(cfg, loading.reference_source(cfg), trainable=False)
    trainer_class = PreferenceTrainer if objective.data == "pairs" else CandidateTrainer
    return trainer_class(
        model=model,
        ref_model=reference,
        args=training_args(cfg, run_dir, report_to),
        train_dataset=train_data,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=peft_config,
        objective=objective,
        hyperparameters=config.hyperparameters(cfg.objective),
        divergence=divergence,
        kernel=kernel,
    )


def train_and_evaluate(cfg: config.RunConfig, run_dir: Path) -> dict[str, Any]:
    from alignctl.eval import run as eval_run

    runtime.prepare(cfg)
    check_rollout(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    compose.save_resolved(cfg, run_dir)
    (run_dir / "run.json").write_text(json.dumps(provenance(cfg), indent=2) + "\n")
    console.print(f"[bold]run[/] {run_dir}  objective={cfg.objective.name} divergence={cfg.divergence.name}")

    model_dir = loading.policy_source(cfg)
    reference_dir = loading.reference_source(cfg)
    objective, divergence = build.objective(cfg)
    tokenizer = loading.load_tokenizer(cfg, model_dir)
    if cfg.eval.enabled or objective.data == "groups":
        build.reward(cfg)  # a reward that cannot load fails now, not after training
    train_data = build.training_data(cfg, objective, tokenizer, model_dir)
    model = loading.load_causal_lm(cfg, model_dir)
    kernel = scoring.resolve_kernel(model, cfg.model.kernel)
    if cfg.model.reference is not None and objective.needs_reference and kernel == "fused":  # its own LM head
        kernel = scoring.resolve_kernel(loading.load_causal_lm(cfg, reference_dir, trainable=False), kernel)
    tracker = tracking.start(
        cfg.tracking,
        run_dir,
        config=asdict(cfg),
        tags=[cfg.objective.name, cfg.divergence.name, cfg.dataset.name, cfg.model.name],
    )
    make = online_trainer if objective.data == "groups" else offline_trainer
    trainer = make(cfg, run_dir, tracker.report_to, model, tokenizer, train_data, objective, divergence, kernel)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(RichProgressCallback)
    checkpoint = resume_point(cfg, run_dir)
    trainer.train(resume_from_checkpoint=checkpoint)
    loading.save_policy(trainer.model, tokenizer, run_dir / "model")

    metrics: dict[str, Any] = {}
    if cfg.eval.enabled:
        metrics = eval_run.evaluate_and_report(cfg, run_dir / "model", run_dir, reference_dir=reference_dir)
        tracker.summary(metrics)
    tracker.finish()
    console.print(f"[bold green]done[/] {run_dir}")
    return metrics
