"""One run: build what the config names, train with TRL, save, evaluate; everything lands in the run directory."""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import dataclasses
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback
from trl import DPOConfig, GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer, SFTConfig, SFTTrainer

from alignctl import jsonl, ranks
from alignctl.config import compose
from alignctl.config import schema as config
from alignctl.errors import RunFailed, UsageError, UserCodeError
from alignctl.eval.curve import CURVE_FILE, RewardKLCurve, curve_point
from alignctl.models import loading, scoring
from alignctl.models.sampling import tokenize_rows
from alignctl.run import build, progress, rundir, runtime, sources, tracking
from alignctl.run import evaluate as eval_run
from alignctl.trainers import distill, hybrid
from alignctl.trainers.binary import BinaryTrainer
from alignctl.trainers.candidates import CandidateTrainer
from alignctl.trainers.groups import GROUP_TRAINERS
from alignctl.trainers.nonfinite import Diverged, NonFiniteGuard
from alignctl.trainers.online import OnlineTrainer, dph_reference_store, trl_reward
from alignctl.trainers.preference import PreferenceTrainer
from alignctl.trainers.reward_model import reward_model_trainer
from alignctl.trainers.rloo import RlooTrainer

try:
    import resource
except ImportError:  # not POSIX: no file size limits to report
    resource = None

console = Console(stderr=True)
ERROR_LOG = "error.log"  # the traceback of a run that failed in alignctl's or a library's code

TRACKED_LIBRARIES = (
    "alignctl", "torch", "transformers", "trl", "accelerate", "datasets", "tokenizers", "peft", "hydra-core",
)


def _offset_and_final(round: Round | None) -> tuple[int, bool]:
    """The run's step before a round's first (0 without rounds) and whether it is the run's last round."""
    return (round.offset, round.final) if round else (0, True)


class MetricsFile(TrainerCallback):
    """metrics.jsonl: one JSON object per logged step, every step once (a resumed run first drops the rows after its
    checkpoint), then Trainer's end-of-training summary once, as {"summary": true, "final_step": N, ...} (no "step":
    it is not a step; not written when a signal stops the run early). Its train_loss is the whole run's mean, also
    when resumed: Trainer's own value covers the steps this process trained, so the steps before its checkpoint come
    from their logged rows, each row's loss weighted by its step window. Every checkpoint's step is logged, so the
    rows cover exactly the steps up to the checkpoint; recomputing from them (rather than carrying a running total
    in the checkpoint) needs no second copy of Trainer's private loss accumulator and no extra checkpoint file, and
    the rows are already cut at the checkpoint. The summary's speed metrics (train_runtime, ...) are this process's.
    train.rounds > 1: a round's Trainer counts from 0; its rows carry the run's step (`round.offset` + its own) and the
    round, and only the last round writes the summary.
    """

    def __init__(self, path: Path, round: Round | None = None) -> None:
        self.path = path
        self.offset, self.final = _offset_and_final(round)
        self.tags = {"round": round.number} if round else {}
        self.session_start = 0  # the run's step this process started training from (a resumed checkpoint's)

    def on_train_begin(self, args, state, control, **kwargs):
        self.session_start = self.offset + state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save or state.global_step >= state.max_steps:
            control.should_log = True  # a checkpoint's step (and the last) is logged: a resume loses no step's loss

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not (state.is_world_process_zero and logs):
            return
        step = self.offset + state.global_step
        if not tracking.is_final_summary(logs):
            self._append({"step": step, **self.tags, "epoch": state.epoch, **logs})
        elif state.global_step >= state.max_steps and self.final:
            # in place: later callbacks (W&B, the progress display) report the whole run's value too
            logs["train_loss"] = self.whole_run_loss(logs["train_loss"], step)
            self._append({"summary": True, "final_step": step, **logs})

    def write_summary(self, state) -> dict[str, Any]:
        """The summary of a run resumed from its last step's checkpoint (Trainer trains nothing, logs nothing); none
        for a round before the last."""
        if not self.final:
            return {}
        step = self.offset + state.global_step
        row = {"train_loss": self.whole_run_loss(0.0, step)}
        self._append({"summary": True, "final_step": step, "epoch": state.epoch, **row})
        return row

    def whole_run_loss(self, session_loss: float, final_step: int) -> float:
        """Mean loss over steps 1..final_step: the logged rows up to session_start, then `session_loss` (Trainer's
        mean over the steps after it)."""
        start = self.session_start
        if start == 0:
            return session_loss
        total = last = 0
        for row in sorted(read_rows(self.path), key=lambda r: r["step"]):
            if "loss" in row and last < row["step"] <= start:
                total += row["loss"] * (row["step"] - last)
                last = row["step"]
        if 0 < last < start:  # a checkpoint from before checkpoints were always logged: its unlogged steps
            total *= start / last  # are given the mean of the logged ones
        return (total + session_loss * (final_step - start)) / final_step

    def _append(self, row: dict[str, Any]) -> None:
        jsonl.append(self.path, row)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's step rows (not the summary); a line cut short by a killed process is skipped."""
    rows = []
    for row in jsonl.read(path):
        if row.get("summary") or tracking.is_final_summary(row):
            continue  # (runs before {"summary": true} wrote it as one more row for the last step)
        if isinstance(row.get("step"), int):
            rows.append(row)
    return rows


@dataclasses.dataclass(frozen=True)
class Round:
    """Round `number` of `of` of a train.rounds > 1 run (iterative DPO). Its Trainer starts from `policy_dir` with a
    fresh optimizer and schedule, trains train.max_steps steps on pairs sampled from that policy (round 1: the
    dataset's own, as a one-round run), against `reference_dir`, keeps its checkpoints in `folder` and counts its
    steps after `offset`, the steps of the rounds before it. Its model goes to `folder`/model, the last round's to the
    run's model/."""

    number: int
    of: int
    offset: int
    folder: Path
    policy_dir: str
    reference_dir: str

    @property
    def final(self) -> bool:
        return self.number == self.of


class StopOnSignal(TrainerCallback):
    """SIGINT/SIGTERM (Ctrl-C, a scheduler's pre-emption): inside the training loop the current step finishes, is
    checkpointed and logged, and training stops; outside it (loading, evaluating) rundir.Interrupted is raised at once.
    A second signal exits at once (exit 128 + signal number). install()/restore() put the handlers in place and
    back (main thread only: elsewhere signals are not Python's to handle)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.in_training = False
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            os.write(2, f"alignctl: second {signal.Signals(signum).name}: exiting now, nothing saved\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        if not self.in_training:
            raise rundir.Interrupted(signum)

    def on_train_begin(self, args, state, control, **kwargs):
        self.in_training = True

    def on_step_end(self, args, state, control, **kwargs):
        stop = self.signum is not None
        if ranks.in_ranks():  # all ranks stop after the same step (one training on would wait for the rest)
            stop = ranks.any_rank(stop)
            self.signum = self.signum or (signal.SIGTERM if stop else None)
        if stop:
            control.should_save = control.should_log = control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.in_training = False


class _AlreadyTrained(Exception):
    """The checkpoint a run resumes from is at max_steps: nothing is left to train."""


class NoStepPastEnd(TrainerCallback):
    """Trainer resumed from a checkpoint at max_steps trains one more step when max_steps falls inside an epoch (it
    re-enters the epoch and checks max_steps only after a step), else logs train_loss 0. When training begins it
    has loaded the checkpoint's weights: stop there."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            raise _AlreadyTrained


class RunRecord:
    """run.json: the provenance of the run's first start, one entry per resume, the W&B run id, and where the run
    stands: status running | interrupted | trained (final model saved) | finished | failed | diverged (with `reason`),
    at `step`."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / rundir.RUN_RECORD
        self.data = rundir.read_run_record(run_dir)

    @classmethod
    def open(cls, cfg: config.RunConfig, run_dir: Path, plan: rundir.RunPlan) -> RunRecord:
        record = cls(run_dir)
        entry = provenance(cfg)
        if plan.action == "fresh" or not record.data:
            record.data = {**entry, "status": "running", "step": 0, "wandb_run_id": None, "resumes": []}
        else:
            resumed = {"command": entry["command"], "git_commit": entry["git_commit"], "from_step": plan.step,
                       "time": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
            record.data.setdefault("resumes", []).append(resumed)
        record.update(status="running" if plan.action != "evaluate" else "trained")
        return record

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        if not ranks.is_main():  # rank 0 keeps the record of a multi-process run
            return
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(partial, self.path)  # never a half-written run.json


def provenance(cfg: config.RunConfig) -> dict[str, Any]:
    """What a reader needs to reproduce a number: seed, code version, libraries, machine."""
    return {
        "seed": cfg.train.seed,
        # as the user typed it: without the overrides alignctl adds for Hydra (its output dir, a sweep's job names)
        "command": [a for a in sys.argv if a != compose.NO_HYDRA_SUBDIR
                    and not a.startswith("hydra.job.config.override_dirname.exclude_keys=")],  # fmt: skip
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


def _shared_args(cfg: config.RunConfig, run_dir: Path, report_to: list[str], round: Round | None = None) -> dict[str, Any]:
    """TrainingArguments both trainers take from TrainConfig (a round of train.rounds > 1 checkpoints in its folder)."""
    t = cfg.train
    return dict(
        output_dir=str((round.folder if round else run_dir) / rundir.CHECKPOINTS),
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size // ranks.world_size(),  # batch_size is the global batch
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
        ddp_find_unused_parameters=False,  # every trainable parameter gets a gradient; an extra graph walk otherwise
        disable_tqdm=False,
        # Trainer logs a non-finite step loss as the window's mean of the others; only skipped steps may be hidden so
        logging_nan_inf_filter=t.on_nonfinite == "skip_step",
    )


def training_args(cfg: config.RunConfig, run_dir: Path, report_to: list[str], round: Round | None = None) -> DPOConfig:
    """TRL's DPOConfig of the offline trainers; train.group_by_length: transformers' length-grouped sampler, reading
    the `length` column PreferenceTrainer adds (kept through Trainer's column pruning, which would drop it)."""
    grouped = cfg.train.group_by_length
    return DPOConfig(**_shared_args(cfg, run_dir, report_to, round), max_length=cfg.train.max_length,
                     dataset_num_proc=None, train_sampling_strategy="group_by_length" if grouped else "random",
                     remove_unused_columns=not grouped)  # fmt: skip


def sft_args(cfg: config.RunConfig, run_dir: Path, report_to: list[str]) -> SFTConfig:
    """TRL's SFTConfig: loss on completion tokens only (prompt-completion rows), sequences cut at train.max_length."""
    return SFTConfig(**_shared_args(cfg, run_dir, report_to), max_length=cfg.train.max_length,
                     completion_only_loss=True, dataset_num_proc=None)  # fmt: skip


def online_args(cfg: config.RunConfig, run_dir: Path, report_to: list[str]) -> GRPOConfig | RLOOConfig:
    """TRL's GRPOConfig from TrainConfig: batch_size counts completions (batch_size / num_generations prompts per
    step), temperature 1, completions up to dataset.max_new_tokens, train.num_iterations policy updates per
    generated batch, ratio clipped to [1 - 0.2, 1 + train.clip_high]; TRL's defaults otherwise (loss_type "dapo").
    beta is set by the trainer. objective=rloo gets TRL's RLOOConfig with the same fields (TRL's defaults otherwise;
    beta and normalize_advantages set by its trainer)."""
    make = RLOOConfig if cfg.objective.name == "rloo" else GRPOConfig
    return make(
        **_shared_args(cfg, run_dir, report_to),
        num_generations=cfg.train.num_generations,
        num_iterations=cfg.train.num_iterations,
        epsilon_high=cfg.train.clip_high,
        max_completion_length=cfg.dataset.max_new_tokens,
        temperature=1.0,
        use_vllm=cfg.model.rollout == "vllm",
        vllm_mode="colocate",  # vLLM shares the training GPU: no separate server to start
    )


def online_trainer(
    cfg, run_dir, report_to, model, tokenizer, train_data, objective, divergence, kernel
) -> GRPOTrainer | RLOOTrainer:
    """The online trainer for `objective`: GRPO (OnlineTrainer) or RLOO (RlooTrainer; both with, for the generator
    divergences, pi_0's stored samples, taken from the model before training) or an objective with its own loss
    (disco, fdpg)."""
    reward = build.reward(cfg)
    verifiable = build.is_binary_reward(cfg)
    common = dict(
        model=model,
        peft_config=loading.lora_config(cfg),
        # InfAlign/CTRL with reward.calibrate=true; the DPH-RL store below keeps pi_0's solves by the raw reward
        reward_funcs=trl_reward(build.training_reward(cfg), cfg.reward.name),
        args=online_args(cfg, run_dir, report_to),
        processing_class=tokenizer,
        callbacks=run_callbacks(cfg, run_dir),
        objective=objective,
        hyperparameters=config.hyperparameters(cfg.objective),
        divergence=divergence,
    )
    if objective.reads_groups and objective.name in GROUP_TRAINERS:
        return GROUP_TRAINERS[objective.name](train_dataset=train_data, **common)
    store = None
    if divergence is not None and divergence.name != "reverse_kl":
        store, train_data = dph_reference_store(
            model, tokenizer, train_data, reward, divergence,
            samples_per_prompt=cfg.train.reference_samples_per_prompt, max_new_tokens=cfg.dataset.max_new_tokens,
            seed=cfg.train.seed, verifiable=verifiable, split_solved=verifiable and cfg.train.split_solved_prompts,
            kernel=kernel,
        )  # fmt: skip
    return (RlooTrainer if objective.name == "rloo" else OnlineTrainer)(
        train_dataset=train_data,
        reference_store=store,
        divergence_batch_size=cfg.train.divergence_batch_size,
        kernel=kernel,
        **common,
    )


def resume_point(cfg: config.RunConfig, run_dir: Path, resume: bool, round: Round | None = None) -> str | None:
    """The checkpoint to resume from (the newest complete one) or None for a fresh start (of the run, or of a round
    of train.rounds > 1, which keeps the rounds before it); metrics logged after the checkpoint (and an earlier
    summary row) are dropped, so metrics.jsonl holds every step once."""
    metrics = run_dir / "metrics.jsonl"
    if not resume:
        if round is None or round.offset == 0:
            metrics.unlink(missing_ok=True)
        else:
            _keep_rows_up_to(metrics, round.offset)
        return None
    found = rundir.last_checkpoint(run_dir)
    if found is None:
        raise UsageError(
            f"train.resume={cfg.train.resume} but {run_dir / 'checkpoints'} holds no checkpoint to resume from"
        )
    checkpoint, step = found
    _keep_rows_up_to(metrics, step)
    console.print(f"resumed from {checkpoint.name}")
    return str(checkpoint)


def _keep_rows_up_to(metrics: Path, step: int) -> None:
    """Drop metrics.jsonl's rows after `step` (and the summary row, which has no step)."""
    kept = [row for row in read_rows(metrics) if row["step"] <= step]
    metrics.write_text("".join(json.dumps(row) + "\n" for row in kept))


def run_callbacks(cfg: config.RunConfig, run_dir: Path, round: Round | None = None) -> list[TrainerCallback]:
    """What every trainer of a run reports to: the non-finite guard first (its skipped_steps reaches the logs
    MetricsFile writes), then metrics.jsonl."""
    guard = NonFiniteGuard(skip_steps=cfg.train.on_nonfinite == "skip_step")
    return [guard, MetricsFile(run_dir / "metrics.jsonl", round)]


def offline_trainer(cfg, run_dir, report_to, model, tokenizer, train_data, objective, divergence, kernel, round=None):
    """The trainer of an offline objective: pairs (PreferenceTrainer), binary feedback (BinaryTrainer),
    candidates/negatives (CandidateTrainer), or supervised fine-tuning (TRL's SFTTrainer as it is). round: a round of
    train.rounds > 1 (pairs only), with its own reference and checkpoint folder."""
    callbacks = run_callbacks(cfg, run_dir, round)
    if objective.trains_reward_model:  # a sequence classifier, trained by TRL's RewardTrainer
        return reward_model_trainer(cfg, _shared_args(cfg, run_dir, report_to), train_data, tokenizer, model=model,
                                    callbacks=callbacks, objective=objective,
                                    hyperparameters=config.hyperparameters(cfg.objective), divergence=divergence)
    peft_config = loading.lora_config(cfg)
    if objective.data == "sft":
        return SFTTrainer(model=model, args=sft_args(cfg, run_dir, report_to), train_dataset=train_data,
                          processing_class=tokenizer, callbacks=callbacks, peft_config=peft_config)  # fmt: skip
    if objective.model_options:  # distillation (dckd, adpa): the teachers load instead of a reference
        teacher, teacher_reference, kernel = sources.load_teachers(cfg, model, kernel)
        return distill.distillation_trainer(
            train_data, teacher, teacher_reference, kernel, cfg.dataset.max_new_tokens, cfg.train.seed, model=model, args=training_args(cfg, run_dir, report_to),
            processing_class=tokenizer, callbacks=callbacks, peft_config=peft_config, objective=objective,
            hyperparameters=config.hyperparameters(cfg.objective), divergence=divergence,
        )  # fmt: skip
    reference = None
    reference_dir = round.reference_dir if round else sources.reference_source(cfg)
    # With LoRA the reference is the base with the adapter off (no second copy), unless model.reference names one or
    # a round starts from another model than its reference.
    separate = cfg.model.reference is not None or (round is not None and round.reference_dir != round.policy_dir)
    if objective.needs_reference and (peft_config is None or separate):
        reference = loading.load_causal_lm(cfg, reference_dir, trainable=False)
    trainer_class = {"pairs": PreferenceTrainer, "binary": BinaryTrainer}.get(objective.data, CandidateTrainer)
    extra = {}
    if objective.name in hybrid.TRAINERS:  # pairs plus fresh samples of the current policy at every step (hypo)
        trainer_class, extra = hybrid.TRAINERS[objective.name], hybrid.options(cfg)
    return trainer_class(
        **extra,
        model=model,
        ref_model=reference,
        args=training_args(cfg, run_dir, report_to, round),
        train_dataset=train_data,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=peft_config,
        objective=objective,
        hyperparameters=config.hyperparameters(cfg.objective),
        divergence=divergence,
        kernel=kernel,
    )


def train_and_evaluate(
    cfg: config.RunConfig, run_dir: Path, command: list[str] | None = None, plan: rundir.RunPlan | None = None
) -> dict[str, Any]:
    """Train (or resume, see rundir.plan_run), save the final model, evaluate, all in run_dir (claimed by the
    caller: alignctl.run.launch._job). command: the alignctl command line that started it, for the resume line printed
    when a signal stops it (exit 128 + signal number)."""
    runtime.prepare(cfg)
    main = ranks.is_main()  # one rank of several: rank 0 alone prints, writes files, tracks and evaluates
    console.quiet = not main
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = plan or rundir.plan_run(cfg, run_dir)
    if plan.action == "finished":
        console.print(f"run {run_dir} already finished at step {plan.step}; nothing to do", soft_wrap=True)
        return {}
    stop = StopOnSignal()
    stop.install()
    record = RunRecord(run_dir)
    tracker: tracking.NullTracker = tracking.NullTracker()
    try:
        record = RunRecord.open(cfg, run_dir, plan)
        if main:
            compose.save_resolved(cfg, run_dir)
        console.print(f"[bold]run[/] {run_dir}  objective={cfg.objective.name} divergence={cfg.divergence.name}")
        reference_dir = sources.reference_source(cfg)
        if plan.action == "evaluate":  # trained and saved; stopped before (or while) evaluating
            console.print(f"trained to step {plan.step} already; evaluating")
            if main:
                tracker = _tracker(cfg, run_dir, record, resume_step=None)
        else:
            rounds = _rounds_left(cfg, run_dir, plan)
            loaded = _load(cfg, rounds[0])
            if main:
                tracker = _tracker(cfg, run_dir, record, resume_step=plan.step if plan.action == "resume" else None)
            step = _train_rounds(cfg, run_dir, plan, tracker, stop, rounds, loaded)
            if stop.signum is not None and step < cfg.train.max_steps * cfg.train.rounds:  # stopped at a checkpoint
                record.update(status="interrupted", step=step)
                raise rundir.Interrupted(stop.signum)
            record.update(status="trained", step=step)
            if stop.signum is not None:  # the signal came with the last step
                raise rundir.Interrupted(stop.signum)
        metrics: dict[str, Any] = {}
        if not main:
            return metrics
        if cfg.eval.enabled:
            metrics = eval_run.evaluate_and_report(cfg, run_dir / "model", run_dir, reference_dir=reference_dir)
            tracker.summary(metrics)
        record.update(status="finished")
        tracker.finish()
    except rundir.Interrupted as e:
        if record.data.get("status") == "running":  # stopped outside the training loop
            found = rundir.last_checkpoint(run_dir)
            record.update(status="interrupted", step=max(record.data.get("step", 0), found[1] if found else 0))
        tracker.finish(exit_code=128 + e.signum)
        if main:
            print(_stopped_line(run_dir, record, e.signum, command), file=sys.stderr, flush=True)
        raise SystemExit(128 + e.signum) from None
    except UsageError as e:  # bad input found once the run started (a reward's scores, a resume): exit 2
        if record.data.get("status") in ("running", "trained"):
            record.update(status="failed", reason=str(e))
        tracker.finish(exit_code=2)
        raise
    except Diverged as e:
        found = rundir.last_checkpoint(run_dir)
        record.update(status="diverged", reason=str(e), step=found[1] if found else 0)
        tracker.finish(exit_code=1)
        where, again = _resume_hint(run_dir, record, command)
        raise RunFailed(f"alignctl: run {run_dir} diverged: {e} ({where}; lower train.learning_rate to retrain, "
                        f"or resume with: {again})") from None
    except Exception as e:
        partial = _remove_partial_checkpoints(run_dir) if main else []
        where, again = _resume_hint(run_dir, record, command)  # before the status changes: "trained" says more
        found = rundir.last_checkpoint(run_dir)
        reached = max(record.data.get("step", 0), found[1] if found else 0)
        record.update(status="failed", reason=e.line if isinstance(e, UserCodeError) else _one_line(e), step=reached)
        tracker.finish(exit_code=1)
        if isinstance(e, UserCodeError):
            details, what = e.details, e.line
        elif partial:  # the write of a checkpoint failed (a full disk, a file size limit): say what space it takes
            details, what = "", f"could not write {partial[0]} ({_one_line(e)}); {_space_note(run_dir)}"
        else:  # alignctl's or a library's fault: the whole traceback is for a bug report, kept beside the run
            if main:
                (run_dir / ERROR_LOG).write_text(traceback.format_exc())
            details, what = "", f"{_one_line(e)} (traceback in {run_dir / ERROR_LOG})"
        raise RunFailed(f"alignctl: run {run_dir} failed: {what} ({where}; resume with: {again})", details) from None
    finally:
        stop.restore()
    console.print(f"[bold green]done[/] {run_dir}")
    return metrics


def _tracker(cfg: config.RunConfig, run_dir: Path, record: RunRecord, resume_step: int | None) -> tracking.NullTracker:
    tracker = tracking.start(
        cfg.tracking,
        run_dir,
        config=asdict(cfg),
        tags=[cfg.objective.name, cfg.divergence.name, cfg.dataset.name, cfg.model.name],
        run_id=record.data.get("wandb_run_id"),
        resume_step=resume_step,
        group=tracking.sweep_group(run_dir),
    )
    if tracker.run_id and not record.data.get("wandb_run_id"):
        record.update(wandb_run_id=tracker.run_id)  # kept from the first start: a resume continues this W&B run
    return tracker


def build_inputs(cfg: config.RunConfig) -> None:
    """Build what the run reads from the cache (an embedded task's base model, sampled training data), in this one
    process: ranks of a multi-process run only read it (alignctl.cache.cached says why)."""
    runtime.prepare(cfg)
    sources.reference_source(cfg)  # where it is an embedded build of its own
    _inputs(cfg)


def _inputs(cfg: config.RunConfig, round: Round | None = None) -> tuple:
    """The policy's model dir, objective, divergence, tokenizer and training data (built into the cache if new): the
    run's, or a round's (rounds after the first sample their pairs from the policy they start from)."""
    model_dir = round.policy_dir if round else sources.policy_source(cfg)
    objective, divergence = build.objective(cfg)
    tokenizer = loading.load_tokenizer(cfg, model_dir)
    if cfg.eval.enabled or objective.data == "groups" or cfg.train.rounds > 1:
        build.reward(cfg)  # a reward that cannot load fails now, not after training
    resample = round is not None and round.number > 1
    return model_dir, objective, divergence, tokenizer, build.training_data(cfg, objective, tokenizer, model_dir,
                                                                            resample=resample)  # fmt: skip


def _load(cfg: config.RunConfig, round: Round | None = None) -> tuple:
    """What the trainer needs, built from the config: objective, divergence, tokenizer, data, model, kernel."""
    model_dir, objective, divergence, tokenizer, train_data = _inputs(cfg, round)
    if objective.trains_reward_model:  # a sequence classifier: no LM head, so no kernel to score with
        model = loading.load_reward_model(cfg, model_dir, tokenizer)
        return objective, divergence, tokenizer, train_data, model, "naive"
    model = loading.load_causal_lm(cfg, model_dir)
    kernel = scoring.resolve_kernel(model, cfg.model.kernel)
    if cfg.model.reference is not None and objective.needs_reference and kernel == "fused":  # its own LM head
        reference = loading.load_causal_lm(cfg, sources.reference_source(cfg), trainable=False)
        kernel = scoring.resolve_kernel(reference, kernel)
    return objective, divergence, tokenizer, train_data, model, kernel


def _rounds_left(cfg: config.RunConfig, run_dir: Path, plan: rundir.RunPlan) -> list[Round | None]:
    """The rounds still to train, from the first whose model is not saved yet; [None] for a one-round run."""
    t = cfg.train
    if t.rounds == 1:
        return [None]
    start, reference = sources.policy_source(cfg), sources.reference_source(cfg)
    left = []
    for number in range(1 + (rundir.rounds_done(run_dir) if plan.action == "resume" else 0), t.rounds + 1):
        previous = str(rundir.round_dir(run_dir, number - 1) / "model") if number > 1 else start
        anchor = previous if t.reference_update == "round" else reference
        left.append(Round(number, t.rounds, (number - 1) * t.max_steps, rundir.round_dir(run_dir, number), previous,
                          anchor))  # fmt: skip
    return left


def _train_rounds(cfg, run_dir, plan, tracker, stop: StopOnSignal, rounds: list[Round | None], loaded: tuple) -> int:
    """Train the run (from the plan's checkpoint) and save its model, unless a signal stopped it early; the run's step
    reached. train.rounds > 1: round after round (`loaded` is the first's inputs); a round's checkpoints go once its
    model is saved."""
    step = 0
    for index, this in enumerate(rounds):
        if this is None:  # a run without rounds
            return _train(cfg, run_dir, plan, tracker, stop, *loaded)
        console.print(f"round {this.number} of {this.of}: from {this.policy_dir}")
        if index > 0:
            loaded = _load(cfg, this)
        step = _train(cfg, run_dir, plan, tracker, stop, *loaded, round=this)
        if step < this.offset + cfg.train.max_steps:  # stopped by a signal
            return step
        if not this.final:  # its model is whole (renamed into place): the next round starts from it
            shutil.rmtree(this.folder / rundir.CHECKPOINTS, ignore_errors=True)
    return step


def _train(cfg, run_dir, plan, tracker, stop, objective, divergence, tokenizer, train_data, model, kernel,
           round: Round | None = None) -> int:  # fmt: skip
    """Train (from the plan's checkpoint) and save the final model, unless a signal stopped training early; the
    run's step reached. round: one round of train.rounds > 1, whose steps come after `round.offset`."""
    if objective.data == "groups":
        trainer = online_trainer(cfg, run_dir, tracker.report_to, model, tokenizer, train_data, objective, divergence,
                                 kernel)  # fmt: skip
    else:
        trainer = offline_trainer(cfg, run_dir, tracker.report_to, model, tokenizer, train_data, objective,
                                  divergence, kernel, round=round)  # fmt: skip
    offset, final = _offset_and_final(round)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(progress.progress_callback())
    tracker.attach(trainer, step_offset=offset, final=final)
    trainer.add_callback(stop)
    if cfg.eval.every_steps:
        trainer.add_callback(_curve(cfg, run_dir, trainer, tokenizer, kernel, round))
    resume = plan.action == "resume" and plan.step > offset  # a round that has a checkpoint of its own
    checkpoint = resume_point(cfg, run_dir, resume=resume, round=round)
    if resume and plan.step >= offset + cfg.train.max_steps:
        trainer.add_callback(NoStepPastEnd)
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    except _AlreadyTrained:  # the checkpoint is the final step: its weights are the final model
        metrics_file = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, MetricsFile))
        tracker.summary(metrics_file.write_summary(trainer.state), prefix="")
    if stop.signum is not None and trainer.state.global_step < cfg.train.max_steps:
        return offset + trainer.state.global_step
    if ranks.is_main():
        if final:
            loading.save_policy(trainer.model, tokenizer, run_dir / "model")
        else:  # whole or absent: rundir.rounds_done counts a round whose model/config.json is there
            partial = round.folder / "model.partial"
            shutil.rmtree(partial, ignore_errors=True)
            loading.save_policy(trainer.model, tokenizer, partial)
            os.replace(partial, round.folder / "model")
    return offset + trainer.state.global_step


def _curve(cfg: config.RunConfig, run_dir: Path, trainer, tokenizer, kernel: str, round: Round | None = None
           ) -> RewardKLCurve:  # fmt: skip
    """The reward-KL curve callback: the trainer's reference model where it keeps one (not a distillation
    teacher, nor a round's re-anchored reference: every point of the curve is measured against the run's), else its
    own copy."""
    reference = getattr(trainer, "ref_model", None)
    anchored = round is not None and round.reference_dir != sources.reference_source(cfg)
    if reference is None or build.objective(cfg)[0].model_options or anchored:
        reference = loading.load_causal_lm(cfg, sources.reference_source(cfg), trainable=False)
    prompts = build.eval_prompts(cfg, tokenizer)[: cfg.eval.curve_prompts]
    reward, e = build.reward(cfg), cfg.eval
    max_new_tokens = cfg.dataset.max_new_tokens if build.is_binary_reward(cfg) else e.max_new_tokens  # as eval
    pairs = None
    if build.objective(cfg)[0].data == "pairs":  # the sequential KL of held-out chosen and rejected completions
        held_out = build.preference_pairs(cfg, tokenizer, sources.policy_source(cfg))["test"][: e.curve_prompts]
        sides = [*zip(held_out["prompt"], held_out["chosen"]), *zip(held_out["prompt"], held_out["rejected"])]
        pairs = tokenize_rows(tokenizer, sides) if sides else None

    def point(model) -> dict[str, float]:
        return curve_point(model, reference, tokenizer, prompts, reward, samples_per_prompt=e.curve_samples_per_prompt,
                           max_new_tokens=max_new_tokens, temperature=e.temperature, seed=e.seed,
                           batch_size=e.batch_size, kernel=kernel, pairs=pairs)  # fmt: skip

    return RewardKLCurve(run_dir / CURVE_FILE, cfg.eval.every_steps, point, step_offset=round.offset if round else 0,
                         round_number=round.number if round else None)


def _stopped_line(run_dir: Path, record: RunRecord, signum: int, command: list[str] | None) -> str:
    """The one line a signal leaves: what is saved and the exact command that continues the run."""
    where, again = _resume_hint(run_dir, record, command)
    return f"alignctl: stopped by {signal.Signals(signum).name} ({where}); resume with: {again}"


def _resume_hint(run_dir: Path, record: RunRecord, command: list[str] | None) -> tuple[str, str]:
    """What is saved, and the exact command that continues the run from it."""
    found = rundir.last_checkpoint(run_dir)
    if record.data.get("status") == "trained":
        where, resume = f"final model saved at step {record.data['step']}; evaluation left", "true"
    elif found is not None and record.data.get("step") == found[1]:
        where, resume = f"checkpoint-{found[1]} saved", "true"
    elif found is not None:
        where, resume = f"last checkpoint: {found[0].name}", "true"
    else:
        where, resume = "no checkpoint yet", "auto"
    base = command or ["alignctl", "train", "<your overrides>"]
    return where, shlex.join([*base, f"hydra.run.dir={run_dir}", f"train.resume={resume}"])


def _remove_partial_checkpoints(run_dir: Path) -> list[str]:
    """Remove the checkpoint folders a failed write left incomplete (rundir.is_complete_checkpoint): the last
    complete one stays the one to resume from."""
    folder = rundir.checkpoints_dir(run_dir)
    removed = []
    for entry in sorted(folder.glob("checkpoint-*")) if folder.is_dir() else ():
        if not rundir.is_complete_checkpoint(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed


def _space_note(run_dir: Path) -> str:
    """Free space where the checkpoints go, and what the last complete checkpoint took (what the next one needs)."""
    free = shutil.disk_usage(run_dir).free
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0] if resource else -1
    limited = f", and files are limited to {_size(limit)} (ulimit -f)" if limit not in (-1, resource.RLIM_INFINITY) else ""
    found = rundir.last_checkpoint(run_dir)
    if found is None:
        return f"{_size(free)} free on {run_dir}'s disk{limited}"
    taken = sum(f.stat().st_size for f in found[0].rglob("*") if f.is_file())
    return f"a checkpoint takes {_size(taken)} and {run_dir}'s disk has {_size(free)} free{limited}"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
