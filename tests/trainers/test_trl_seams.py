"""Library seams under test: every private member of TRL, transformers, accelerate, Hydra/OmegaConf (and datasets)
that alignctl overrides, calls or reads, checked against the pinned versions.

A private method or attribute can change in any release without notice. Each row of SEAMS names one: the library
object that has it, the private name, and why alignctl needs it; then the parameter names alignctl relies on and
the code of the library that still calls or sets it where alignctl relies on that (a snippet that must stay in the
source of a library function). When a row fails after an upgrade, read the library's new code and adapt the alignctl
code its `why` names, then the row.

`test_every_private_use_has_a_seam` keeps the table complete: it reads alignctl's source with `ast` (the whole
package, found through `alignctl.__file__`, so modules may move) and fails on any override of a library's private
method, `super()._x` call, read of a library's private attribute, or import from a private library module that
SEAMS does not list.

Nothing here trains or loads a model: signatures and sources are read with `inspect`.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import io
import json
import re
import textwrap
import tokenize
from pathlib import Path
from typing import NamedTuple

import pytest
from omegaconf import MISSING, DictConfig, OmegaConf

import alignctl


class Seam(NamedTuple):
    owner: str  # the library class that defines or sets the private name (dotted path)
    name: str  # the private name alignctl overrides, calls or reads
    why: str  # why alignctl needs it
    # Methods: the parameters, in order from the first, that alignctl's override accepts or its call passes
    # positionally, and those it passes by keyword. None: an attribute.
    params: tuple[str, ...] | None = None
    keywords: tuple[str, ...] = ()
    # alignctl's override takes exactly `params` (no *args/**kwargs), and the library calls it with its own
    # arguments: the library's parameters must be exactly these.
    exact: bool = False
    # (library function, code it must still contain): where the library calls or sets the private name, and what
    # around it alignctl relies on. A function path starting with "." is one of `owner`'s. Compared without
    # whitespace or comments.
    evidence: tuple[tuple[str, str], ...] = ()


GRPO = "trl.GRPOTrainer"
RLOO = "trl.RLOOTrainer"
DPO = "trl.DPOTrainer"
TRAINER = "transformers.Trainer"
WANDB = "transformers.integrations.WandbCallback"
SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"

SEAMS: list[Seam] = [
    # ---- trl.GRPOTrainer: GroupObjectiveTrainer, FdpgTrainer, OnlineTrainer, RowSeededGeneration -----------------
    Seam(GRPO, "_generate_and_score_completions",
         "GroupObjectiveTrainer adds each completion's reward and prompt id to the generated batch its loss reads",
         params=("self", "inputs"), exact=True,
         evidence=(("._prepare_inputs", "generation_batch = self._generate_and_score_completions(generation_batch)"),
                   # the tensors alignctl adds are split into micro-batches with TRL's own
                   ("._prepare_inputs", "split_tensor_dict(generation_batch, self.args.steps_per_generation)"),
                   # alignctl slices the gathered rewards as TRL slices its advantages: contiguous per process
                   ("._generate_and_score_completions", "self.accelerator.process_index * len(prompts)"),
                   # the batch keys GroupObjectiveTrainer.compute_loss reads
                   ("._generate_and_score_completions", '"prompt_ids": prompt_ids, "prompt_mask": prompt_mask,'),
                   ("._generate_and_score_completions", '"completion_ids": completion_ids,'),
                   ("._generate_and_score_completions", '"completion_mask": completion_mask,'),
                   ("._generate_and_score_completions", 'output["old_per_token_logps"] = old_per_token_logps'),
                   ("._generate_and_score_completions", 'output["ref_per_token_logps"] = ref_per_token_logps'),
                   ("._generate_and_score_completions", 'output["tool_mask"] = tool_mask'),
                   # vLLM's rollouts: the truncated IS ratio, only when TRL corrects for the sampler, which its own
                   # GRPO loss multiplies in per token and the group objectives take as GroupLogps.sampling_weights
                   ("._generate_and_score_completions",
                    'output["importance_sampling_ratio"] = vllm_importance_sampling_ratio'),
                   ("._compute_loss", 'per_token_loss = per_token_loss * inputs["importance_sampling_ratio"]'))),
    Seam(GRPO, "_calculate_rewards",
         "GroupObjectiveTrainer keeps the [completions of all processes, reward functions] matrix it returns",
         params=("self", "inputs", "prompts", "completions", "completion_ids_list"), exact=True,
         evidence=(("._generate_and_score_completions",
                    "rewards_per_func = self._calculate_rewards(inputs, prompts, completions, completion_ids_list)"),
                   ("._calculate_rewards", "rewards_per_func = gather(rewards_per_func)"),
                   # alignctl's `rewards` repeat TRL's weighted sum over reward functions
                   ("._generate_and_score_completions",
                    "(rewards_per_func * self.reward_weights.to(device).unsqueeze(0)).nansum(dim=1)"))),
    Seam(GRPO, "_get_per_token_logps_and_entropies",
         "GroupObjectiveTrainer.compute_loss (in place of TRL's _compute_loss) calls it for per-token log-probs and "
         "entropies; OnlineTrainer overrides it to keep the policy log-probs TRL's _compute_loss computes (low_var_kl)",
         params=("self", "model", "input_ids", "attention_mask", "logits_to_keep"), keywords=("compute_entropy",),
         evidence=((".compute_loss", "return self._compute_loss(model, inputs)"),
                   ("._compute_loss",
                    "per_token_logps, entropies, aux_loss = self._get_per_token_logps_and_entropies("),
                   ("._get_per_token_logps_and_entropies", "return logps, entropies, aux_loss"),
                   # OnlineTrainer sets beta to 0 for one compute_loss to drop TRL's k3 term
                   ("._compute_loss", "if self.beta != 0.0:"),
                   # GroupObjectiveTrainer.compute_loss normalises its loss as TRL's _compute_loss does
                   ("._compute_loss",
                    'normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0'))),
    Seam(GRPO, "_generate_single_turn",
         "RowSeededGeneration hands generate() its row-seeded sampler here: no public hook passes a logits processor",
         params=("self", "prompt_ids"),
         evidence=(("._generate", "completion_ids, logprobs = self._generate_single_turn(prompt_ids,"),
                   ("._generate_and_score_completions", "= self._generate(prompts)"),
                   ("._generate_single_turn", "if self.use_vllm:"),
                   ("._generate_single_turn", "unwrap_model_for_generation(self.model_wrapped,"),
                   ("._generate_single_turn",
                    "unwrapped_model.generate(**generate_inputs, generation_config=self.generation_config)"),
                   # the model whose generate RowSeededGeneration wraps: accelerator.unwrap_model(model_wrapped)
                   ("trl.models.utils._unwrap_model_for_generation",
                    "unwrapped_model = accelerator.unwrap_model(model)"))),
    Seam(GRPO, "_metrics",
         "the group and online trainers append their metrics to the lists TRL averages and logs",
         evidence=((".__init__", 'self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}'),
                   (".log", "for key, val in self._metrics[mode].items():"))),
    Seam(GRPO, "_save_checkpoint",
         "CheckpointState, mixed into GRPOTrainer subclasses, writes its state file, then hands over to TRL's",
         params=("self", "model", "trial"), exact=True,
         evidence=(("._save_checkpoint", "super()._save_checkpoint(model, trial)"),)),
    Seam(GRPO, "_load_optimizer_and_scheduler",
         "CheckpointState, mixed into GRPOTrainer subclasses, reads its state file back on resume",
         params=("self", "checkpoint"), exact=True,
         evidence=(("._load_optimizer_and_scheduler", "super()._load_optimizer_and_scheduler(checkpoint)"),)),
    # ---- trl.RLOOTrainer: RlooTrainer (with RowSeededGeneration and StoredSampleDivergence's CheckpointState) -----
    Seam(RLOO, "_generate_and_score_completions",
         "RlooTrainer adds each completion's reward, group and per-token pi_old/pi_0 log-probs to the generated batch "
         "its loss (objectives.rloo) reads",
         params=("self", "inputs"), exact=True,
         evidence=(("._prepare_inputs", "generation_batch = self._generate_and_score_completions(generation_batch)"),
                   # the tensors alignctl adds are shuffled and split with TRL's own (whole batch: accumulation 1)
                   ("._prepare_inputs", "generation_batch = shuffle_sequence_dict(generation_batch)"),
                   ("._prepare_inputs", "split_tensor_dict(generation_batch, self.args.steps_per_generation)"),
                   # alignctl slices the gathered rewards as TRL slices its advantages: contiguous per process
                   ("._generate_and_score_completions", "self.accelerator.process_index * len(prompts)"),
                   # TRL's groups, which RlooTrainer's group_ids repeat: num_generations consecutive rows
                   ("._generate_and_score_completions", "grouped_rewards = rewards.view(-1, num_generations)"),
                   # the batch keys RlooTrainer.compute_loss reads
                   ("._generate_and_score_completions", '"prompt_ids": prompt_ids, "prompt_mask": prompt_mask,'),
                   ("._generate_and_score_completions", '"completion_ids": completion_ids,'),
                   ("._generate_and_score_completions", '"completion_mask": completion_mask,'),
                   # what objectives.rloo re-computes (tests/objectives/test_rloo.py, tests/trainers/test_rloo.py)
                   ("._generate_and_score_completions", "rewards[unscorable_mask] = torch.nan"),
                   ("._generate_and_score_completions", "per_token_kl = old_per_token_logps - ref_per_token_logps"),
                   ("._generate_and_score_completions", "kl = (per_token_kl * completion_mask).sum(-1)"),
                   ("._generate_and_score_completions", "rewards = rewards - self.beta * kl"),
                   ("._generate_and_score_completions",
                    "baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)"),
                   ("._generate_and_score_completions",
                    "advantages = (advantages - torch.nanmean(advantages)) / (nanstd(advantages) + 1e-4)"),
                   ("._generate_and_score_completions", "advantages = torch.nan_to_num(advantages, nan=0.0)"))),
    Seam(RLOO, "_calculate_rewards",
         "RlooTrainer keeps the [completions of all processes, reward functions] matrix it returns",
         params=("self", "inputs", "prompts", "completions", "completion_ids_list"), exact=True,
         evidence=(("._generate_and_score_completions",
                    "rewards_per_func = self._calculate_rewards(inputs, prompts, completions, completion_ids_list)"),
                   ("._calculate_rewards", "rewards_per_func = gather(rewards_per_func)"),
                   ("._generate_and_score_completions", "unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)"),
                   ("._generate_and_score_completions",
                    "(rewards_per_func * self.reward_weights.to(device).unsqueeze(0)).nansum(dim=1)"))),
    Seam(RLOO, "_get_per_token_logps_and_entropies",
         "RlooTrainer.compute_loss (in place of TRL's _compute_loss) calls it for per-token log-probs and entropies, "
         "and keeps the per-token pi_old and pi_0 log-probs TRL's _generate_and_score_completions computes with it",
         params=("self", "model", "input_ids", "attention_mask", "logits_to_keep"), keywords=("compute_entropy",),
         evidence=((".compute_loss", "return self._compute_loss(model, inputs)"),
                   ("._generate_and_score_completions",
                    "old_per_token_logps, _, _ = self._get_per_token_logps_and_entropies("),
                   ("._generate_and_score_completions",
                    "ref_per_token_logps, _, _ = self._get_per_token_logps_and_entropies("),
                   ("._get_per_token_logps_and_entropies", "return logps, entropies, aux_loss"),
                   # RlooTrainer returns its loss unscaled, as TRL's RLOO
                   ("._compute_loss", "loss = per_sequence_loss.mean()"),
                   ("._compute_loss", "coef_2 = torch.clamp(coef_1, 1 - self.epsilon_low, 1 + self.epsilon_high)"))),
    Seam(RLOO, "_generate_single_turn",
         "RowSeededGeneration hands generate() its row-seeded sampler here: no public hook passes a logits processor",
         params=("self", "prompt_ids"),
         evidence=(("._generate", "completion_ids = self._generate_single_turn(prompt_ids, images, multimodal_fields)"),
                   ("._generate_and_score_completions", "= self._generate(prompts)"),
                   ("._generate_single_turn", "if self.use_vllm:"),
                   ("._generate_single_turn", "unwrap_model_for_generation(self.model_wrapped,"),
                   ("._generate_single_turn",
                    "unwrapped_model.generate(**generate_inputs, generation_config=self.generation_config)"))),
    Seam(RLOO, "_metrics",
         "RlooTrainer appends its loss's statistics and the stored-sample penalty to the lists TRL averages and logs",
         evidence=((".__init__", 'self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}'),
                   (".log", "for key, val in self._metrics[mode].items():"))),
    Seam(RLOO, "_save_checkpoint",
         "CheckpointState, mixed into RlooTrainer, writes its state file, then hands over to TRL's",
         params=("self", "model", "trial"), exact=True,
         evidence=(("._save_checkpoint", "super()._save_checkpoint(model, trial)"),)),
    # ---- transformers.Trainer, under TRL's trainers -------------------------------------------------------------
    Seam(TRAINER, "_save_checkpoint",
         "CheckpointState: no public hook writes into a checkpoint's folder before trainer_state.json",
         params=("self", "model", "trial"), exact=True,
         evidence=(("._maybe_log_save_evaluate", "self._save_checkpoint(model, trial)"),
                   ("._save_checkpoint", 'checkpoint_folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"'),
                   ("._save_checkpoint", "run_dir = self._get_output_dir(trial=trial)"),
                   ("._save_checkpoint", "self.state.save_to_json(os.path.join(output_dir, TRAINER_STATE_NAME))"))),
    Seam(TRAINER, "_load_optimizer_and_scheduler",
         "CheckpointState: no public hook runs with the checkpoint's folder when a run resumes",
         params=("self", "checkpoint"), exact=True,
         evidence=(("._inner_training_loop",
                    "self._prepare_for_training(max_steps, train_dataloader, resume_from_checkpoint)"),
                   ("._prepare_for_training",
                    "if resume_from_checkpoint is not None:"),
                   ("._prepare_for_training", "self._load_optimizer_and_scheduler(resume_from_checkpoint)"))),
    Seam(TRAINER, "_get_output_dir",
         "CheckpointState names the checkpoint's folder as Trainer._save_checkpoint does",
         params=("self", "trial"), keywords=("trial",),
         evidence=(("._save_checkpoint", "self._get_output_dir(trial=trial)"),)),
    Seam(TRAINER, "_signature_columns",
         "CandidateTrainer names the dataset columns Trainer keeps (candidates' columns, not pairs')",
         evidence=((".__init__", "self._signature_columns = None"),
                   ("._remove_unused_columns", "signature_columns = self._signature_columns"),
                   ("._get_collator_with_removed_columns", "signature_columns = self._signature_columns"))),
    Seam(TRAINER, "_get_train_sampler",
         "PreferenceTrainer (train.group_by_length) swaps Trainer's LengthGroupedSampler, which draws its order from "
         "the global RNG, for one seeded by (data_seed, epoch), so a resumed run trains on the same batches",
         params=("self", "train_dataset"), exact=True,
         evidence=(("._get_train_sampler", 'if self.args.train_sampling_strategy == "group_by_length":'),
                   ("._get_train_sampler", "return LengthGroupedSampler("),
                   ("._get_dataloader", "sampler = sampler_fn(dataset) if sampler_fn is not None else None"),
                   (".get_train_dataloader", "sampler_fn=self._get_train_sampler"))),
    # ---- trl.DPOTrainer: PreferenceTrainer, CandidateTrainer, HybridTrainer, AdvantageTrainer --------------------
    Seam(DPO, "_precompute_ref_logps",
         "PreferenceTrainer scores the reference through alignctl's kernels and shares the log-probs across jobs",
         params=("self", "dataset", "name", "batch_size"), exact=True,
         evidence=((".__init__",
                    "if args.precompute_ref_log_probs: self.train_dataset = self._precompute_ref_logps("),
                   (".evaluate", "eval_dataset = self._precompute_ref_logps(eval_dataset,"),
                   # the columns it returns are kept by Trainer and copied into every batch
                   ("._set_signature_columns_if_needed", '"ref_chosen_logps", "ref_rejected_logps",'),
                   ("trl.trainer.dpo_trainer.DataCollatorForPreference.torch_call",
                    'output["ref_chosen_logps"] = ref_chosen_logps'),
                   ("trl.trainer.dpo_trainer.DataCollatorForPreference.torch_call",
                    'output["ref_rejected_logps"] = ref_rejected_logps'))),
    Seam(DPO, "_prepare_dataset",
         "CandidateTrainer tokenizes K completions per prompt, BinaryTrainer one labelled completion per row, instead "
         "of chosen/rejected pairs",
         params=("self", "dataset", "processing_class", "args", "dataset_name"), exact=True,
         evidence=((".__init__",
                    'train_dataset = self._prepare_dataset(train_dataset, processing_class, args, "train")'),
                   (".evaluate",
                    'eval_dataset = self._prepare_dataset(eval_dataset, self.processing_class, self.args, "eval")'))),
    Seam(DPO, "_set_signature_columns_if_needed",
         "CandidateTrainer, BinaryTrainer: Trainer drops the dataset columns not named here, and DPOTrainer names "
         "pairs'",
         params=("self",), exact=True,
         evidence=((f"{TRAINER}._remove_unused_columns", "self._set_signature_columns_if_needed()"),
                   (f"{TRAINER}._get_collator_with_removed_columns", "self._set_signature_columns_if_needed()"),
                   (f"{TRAINER}._get_dataloader",
                    "dataset = self._remove_unused_columns(dataset, description=description)"),
                   (f"{TRAINER}._get_dataloader",
                    "self._get_collator_with_removed_columns(self.data_collator, description=description)"))),
    Seam(DPO, "_metrics",
         "PreferenceTrainer logs its objective's rewards and statistics through TRL's metric lists",
         evidence=((".__init__", 'self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}'),
                   (".log", "self._metrics[mode].items()"))),
    Seam(DPO, "_tokenizer",
         "the preference trainers tokenize and sample with the tokenizer TRL takes out of processing_class",
         evidence=((".__init__", "self._tokenizer = processing_class"),)),
    # ---- accelerate ---------------------------------------------------------------------------------------------
    Seam("accelerate.Accelerator", "_original_forward",
         "PreferenceTrainer adds autocast to a reference accelerate has not wrapped yet (naive kernel, mixed precision)",
         evidence=((".prepare_model", "if self.native_amp: model._original_forward = model.forward"),)),
    # ---- transformers, outside the Trainer ----------------------------------------------------------------------
    Seam(WANDB, "_wandb",
         "StepWandbCallback re-implements WandbCallback.on_log with the trainer's global step as W&B's step",
         evidence=((".__init__", "self._wandb = wandb"),
                   (".on_log", "if self._wandb is None: return"))),
    Seam(WANDB, "_initialized",
         "StepWandbCallback sets W&B up on first use, as WandbCallback.on_log does",
         evidence=((".__init__", "self._initialized = False"),
                   (".setup", "self._initialized = True"),
                   (".on_log", "if not self._initialized: self.setup(args, state, model)"))),
    Seam("transformers.PreTrainedConfig", "_attn_implementation",
         "reference_cache.config_hash keys cached reference log-probs by the attention kernel too",
         # the class's source: huggingface_hub's strict dataclasses generate its __init__
         evidence=(("", 'self._attn_implementation: str | None = kwargs.pop("attn_implementation", None)'),)),
    # ---- Hydra / OmegaConf --------------------------------------------------------------------------------------
    Seam(SWEEPER, "split_arguments",
         "compose_jobs checks every job of a sweep before any runs, split as Hydra's basic sweeper splits them "
         "(a public method of a class in the private hydra._internal)",
         params=("overrides", "max_batch_size"), keywords=("max_batch_size",),
         evidence=((".sweep", "params_conf = self._parse_config() params_conf.extend(arguments)"),
                   (".sweep", "self.overrides = self.split_arguments(overrides, self.max_batch_size)"),
                   ("._parse_config", 'params_conf.append(f"{k}={v}")'))),
    Seam("omegaconf.DictConfig", "_get_node",
         "compose._check_declared walks the config's nodes without resolving interpolations or missing values",
         params=("self", "key"),
         evidence=(("._get_node", "throw_on_missing_value: bool = False"),)),
    # ---- datasets -----------------------------------------------------------------------------------------------
    Seam("datasets.Dataset", "_data_files",
         "cache._stray_map_caches tells a saved split's own data files (state.json) from datasets' map caches",
         evidence=((".save_to_disk", 'state["_data_files"] = [{"filename": f"data-'),)),
]  # fmt: skip

# Private-looking names alignctl uses that are no library seam.
NOT_SEAMS = {
    "os._exit": "documented, public API of the standard library despite its underscore",
}


def _id(seam: Seam) -> str:
    return f"{seam.owner.rsplit('.', 1)[-1]}.{seam.name}"


def _function(seam: Seam, path: str) -> str:
    return seam.owner + path if path.startswith(".") or not path else path


@functools.cache
def _resolve(path: str):
    """The object at a dotted path: its longest importable module prefix, then attributes."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


@functools.cache
def _code(path: str) -> str:
    """The source of a library function (or class) without comments or whitespace: formatting does not matter."""
    tokens = tokenize.generate_tokens(io.StringIO(inspect.getsource(_resolve(path))).readline)
    return _squash("".join(t.string for t in tokens if t.type != tokenize.COMMENT))


def _before(function: str, first: str, then: str) -> bool:
    code = _code(function)
    return -1 < code.find(_squash(first)) < code.find(_squash(then))


METHODS = [s for s in SEAMS if s.params is not None]
EVIDENCE = [
    pytest.param(seam, _function(seam, path), snippet, id=f"{_id(seam)}@{_function(seam, path).rsplit('.', 1)[-1]}:{i}")
    for seam in SEAMS
    for i, (path, snippet) in enumerate(seam.evidence)
]


def test_every_seam_is_checked():
    unchecked = [_id(s) for s in SEAMS if s.params is None and not s.evidence]
    assert not unchecked, f"seams with neither a signature nor library code to check: {unchecked}"
    assert all(s.why.strip() for s in SEAMS), "every seam says why alignctl needs it"


@pytest.mark.parametrize("seam", METHODS, ids=_id)
def test_the_library_still_defines_the_method(seam: Seam):
    owner = _resolve(seam.owner)
    assert seam.name in vars(owner), f"{seam.owner} no longer defines {seam.name} ({seam.why})"
    assert callable(getattr(owner, seam.name))


@pytest.mark.parametrize("seam", METHODS, ids=_id)
def test_the_method_keeps_the_parameters_alignctl_relies_on(seam: Seam):
    params = inspect.signature(getattr(_resolve(seam.owner), seam.name)).parameters
    names = list(params)
    if seam.exact:
        assert names == list(seam.params), f"{seam.owner}.{seam.name}{tuple(names)}; alignctl's override: {seam.params}"
    else:
        assert names[: len(seam.params)] == list(seam.params), f"{seam.owner}.{seam.name}{tuple(names)}"
    for name in seam.params:
        assert params[name].kind in (params[name].POSITIONAL_ONLY, params[name].POSITIONAL_OR_KEYWORD), name
    for name in seam.keywords:
        assert name in params, f"{seam.owner}.{seam.name} no longer takes {name}="
        assert params[name].kind in (params[name].POSITIONAL_OR_KEYWORD, params[name].KEYWORD_ONLY), name


@pytest.mark.parametrize(("seam", "function", "snippet"), EVIDENCE)
def test_the_library_still_calls_or_sets_it_where_relied_on(seam: Seam, function: str, snippet: str):
    assert _squash(snippet) in _code(function), f"{function} no longer has: {snippet}  ({seam.why})"


# ---- what a row cannot say ------------------------------------------------------------------------------------


def test_compute_loss_gets_the_policy_logps_in_exactly_one_call():
    # OnlineTrainer's low_var_kl unpacks exactly one captured call: `(policy_logps,) = self._captured_logps`
    assert _code(f"{GRPO}._compute_loss").count("self._get_per_token_logps_and_entropies(") == 1


def test_grpo_compute_loss_only_hands_over_to_the_private_one():
    # GroupObjectiveTrainer replaces GRPOTrainer.compute_loss whole: nothing but the hand-over may be lost
    (function,) = ast.parse(textwrap.dedent(inspect.getsource(_resolve(f"{GRPO}.compute_loss")))).body
    body = [ast.unparse(statement) for statement in function.body]
    assert len(body) == 2 and body[0].startswith("if return_outputs:\n    raise ValueError("), body
    assert body[1] == "return self._compute_loss(model, inputs)", body


def test_rloo_compute_loss_only_hands_over_to_the_private_one():
    # RlooTrainer replaces RLOOTrainer.compute_loss whole: nothing but the hand-over may be lost
    (function,) = ast.parse(textwrap.dedent(inspect.getsource(_resolve(f"{RLOO}.compute_loss")))).body
    body = [ast.unparse(statement) for statement in function.body]
    assert len(body) == 2 and body[0].startswith("if return_outputs:\n    raise ValueError("), body
    assert body[1] == "return self._compute_loss(model, inputs)", body


def test_rloo_scores_pi_old_then_pi_0_once_each_per_generated_batch():
    # RlooTrainer reads its captured calls as [pi_old, pi_0 (beta != 0)]: pi_old's call comes first, and the two
    # reference calls are the branches of one if/else (reference model, or PEFT with the adapter off)
    code = _code(f"{RLOO}._generate_and_score_completions")
    assert code.count("self._get_per_token_logps_and_entropies(") == 3
    assert _before(f"{RLOO}._generate_and_score_completions",
                   "old_per_token_logps, _, _ = self._get_per_token_logps_and_entropies(",
                   "ref_per_token_logps, _, _ = self._get_per_token_logps_and_entropies(")  # fmt: skip
    assert "_get_per_token_logps_and_entropies" not in _code(f"{RLOO}._generate")
    assert "_get_per_token_logps_and_entropies" not in _code(f"{RLOO}._calculate_rewards")


def test_dpo_trainer_sets_what_alignctls_dataset_hooks_read_before_calling_them():
    # _prepare_dataset and _precompute_ref_logps run inside DPOTrainer.__init__ and read self._tokenizer; the
    # latter also self.data_collator and self.accelerator, which Trainer.__init__ sets
    assert _before(f"{DPO}.__init__", "self._tokenizer = processing_class", "self._prepare_dataset(")
    assert _before(f"{DPO}.__init__", "super().__init__(", "self._precompute_ref_logps(")


def test_trainer_state_json_is_written_last_into_the_folder_checkpoint_state_writes_to():
    trainer = importlib.import_module("transformers.trainer")
    # rundir.last_checkpoint: a checkpoint-<step> folder with trainer_state.json is complete
    assert (trainer.PREFIX_CHECKPOINT_DIR, trainer.TRAINER_STATE_NAME) == ("checkpoint", "trainer_state.json")
    state = "self.state.save_to_json(os.path.join(output_dir, TRAINER_STATE_NAME))"
    for earlier in ("self.save_model(output_dir", "self._save_optimizer_and_scheduler(output_dir)",
                    "self._save_rng_state(output_dir)"):  # fmt: skip
        assert _before(f"{TRAINER}._save_checkpoint", earlier, state), f"{earlier} no longer precedes {state}"
    # ... and alignctl's override writes its own file before it hands over
    (override,) = [f for f in _private_methods() if f.name == "_save_checkpoint"]
    last = override.body[-1]
    assert isinstance(last, ast.Expr) and ast.unparse(last.value) == "super()._save_checkpoint(model, trial)"


def test_basic_sweeper_splits_parsed_overrides_into_jobs_of_key_value_strings():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = _resolve(SWEEPER)
    assert isinstance(inspect.getattr_static(sweeper, "split_arguments"), staticmethod)
    parsed = OverridesParser.create().parse_overrides(["a=1,2", "b=3"])
    # compose.compose_jobs reads [0] (one batch: max_batch_size=None), compose.first_job [0][0]
    assert sweeper.split_arguments(parsed, max_batch_size=None) == [[["a=1", "b=3"], ["a=2", "b=3"]]]


@dataclasses.dataclass
class Inner:
    value: int = MISSING


@dataclasses.dataclass
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    ref: str = "${nowhere}"


def test_get_node_returns_child_nodes_unresolved():
    cfg = OmegaConf.structured(Outer)
    child = cfg._get_node("inner")
    assert isinstance(child, DictConfig) and OmegaConf.get_type(child) is Inner
    assert child._get_node("value")._value() == "???"  # a missing value: no error
    assert cfg._get_node("ref")._value() == "${nowhere}"  # an interpolation: not resolved


def test_config_attn_implementation_names_the_attention_kernel():
    config = _resolve("transformers.PreTrainedConfig")(attn_implementation="sdpa")
    assert config._attn_implementation == "sdpa"  # alignctl reads it with getattr(..., None): a rename would hide


def test_saved_dataset_state_lists_its_data_files(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"x": [1, 2, 3]}).save_to_disk(str(tmp_path))
    listed = {f["filename"] for f in json.loads((tmp_path / "state.json").read_text())["_data_files"]}
    assert listed and listed == {p.name for p in tmp_path.glob("*.arrow")}


# ---- the table is complete ------------------------------------------------------------------------------------

PACKAGE = Path(alignctl.__file__).resolve().parent


def _private(name: str) -> bool:
    return name.startswith("_") and name != "_" and not (name.startswith("__") and name.endswith("__"))


@functools.cache
def _trees() -> tuple[tuple[str, ast.Module], ...]:
    """(path, syntax tree) of every module of the package, wherever it lives now."""
    paths = sorted(PACKAGE.rglob("*.py"))
    return tuple((str(p.relative_to(PACKAGE.parent)), ast.parse(p.read_text(encoding="utf-8"))) for p in paths)


def _imports(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted path it was imported from (absolute imports, anywhere in the module)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
        elif isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
    return names


def _methods(cls: ast.ClassDef) -> list[ast.FunctionDef]:
    return [f for f in cls.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and _private(f.name)]


def _private_methods() -> list[ast.FunctionDef]:
    """Private methods defined in alignctl's classes."""
    return [f for _, tree in _trees() for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for f in _methods(c)]


@functools.cache
def _library_names() -> frozenset[str]:
    """Private names that the library classes alignctl subclasses (and their bases) define or set on self."""
    bases = set()
    for _, tree in _trees():
        imported = _imports(tree)
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for base in cls.bases:
                head, _, rest = ast.unparse(base).partition(".")
                if head in imported and not imported[head].startswith("alignctl"):
                    obj = _resolve(imported[head] + (f".{rest}" if rest else ""))
                    bases.update(obj.__mro__[:-1] if inspect.isclass(obj) else ())  # not object
    names = set()
    for cls in bases:
        names.update(vars(cls))
        try:
            names.update(re.findall(r"self\.(_\w+)", inspect.getsource(cls)))
        except (OSError, TypeError):  # compiled
            pass
    return frozenset(n for n in names if _private(n))


def _own_names() -> set[str]:
    """Private names alignctl defines itself: functions and classes, attributes it assigns, class fields."""
    own = set()
    for _, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                own.add(node.target.id)
    return {n for n in own if _private(n)}


def _private_uses() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The private library names alignctl uses, and the objects it imports from private library modules, each with
    where: overrides of the library's private methods, super()._x, self._x of the library's, other objects' private
    members and getattr/hasattr/subscript strings that alignctl does not define itself."""
    library, own = _library_names(), _own_names()
    names: dict[str, list[str]] = {}
    modules: dict[str, list[str]] = {}
    for path, tree in _trees():
        for node in ast.walk(tree):
            where = f"{path}:{getattr(node, 'lineno', '?')}"
            found = None
            if isinstance(node, ast.ClassDef):
                for f in _methods(node):
                    if f.name in library:
                        names.setdefault(f.name, []).append(f"{path}:{f.lineno}")
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                value = node.value
                if isinstance(value, ast.Call) and ast.unparse(value.func) == "super":
                    found = node.attr
                elif isinstance(value, ast.Name) and value.id in ("self", "cls"):
                    found = node.attr if node.attr in library else None
                elif node.attr not in own and ast.unparse(node) not in NOT_SEAMS:
                    found = node.attr
            elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("getattr", "hasattr", "setattr", "delattr"):
                key = node.args[1] if len(node.args) > 1 else None
                found = key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else None
            elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                found = node.slice.value if isinstance(node.slice.value, str) else None  # data a library wrote
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                if any(_private(part) for part in node.module.split(".")):
                    for alias in node.names:
                        modules.setdefault(f"{node.module}.{alias.name}", []).append(where)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if any(_private(part) for part in alias.name.split(".")):
                        modules.setdefault(alias.name, []).append(where)
            if found and _private(found) and (found in library or found not in own):
                names.setdefault(found, []).append(where)
    return names, modules


def test_every_private_use_has_a_seam():
    names, modules = _private_uses()
    assert names and modules, "the scan found nothing: it is broken"
    missing = {n: where for n, where in names.items() if n not in {s.name for s in SEAMS}}
    assert not missing, f"private library names alignctl uses that SEAMS lacks: {missing}"
    missing = {m: where for m, where in modules.items() if m not in {s.owner for s in SEAMS}}
    assert not missing, f"imports from private library modules that SEAMS lacks: {missing}"


def test_every_seam_is_still_used_by_alignctl():
    names, modules = _private_uses()
    stale = [_id(s) for s in SEAMS if s.name not in names and s.owner not in modules]
    assert not stale, f"SEAMS rows alignctl no longer uses (remove them): {stale}"


@pytest.mark.parametrize("seam", [s for s in METHODS if s.name in {f.name for f in _private_methods()}], ids=_id)
def test_the_table_matches_alignctls_override(seam: Seam):
    """SEAMS' parameters are those of alignctl's override: a change on either side shows up here."""
    for override in (f for f in _private_methods() if f.name == seam.name):
        args, shown = override.args, f"alignctl's {seam.name}({ast.unparse(override.args)})"
        named = [a.arg for a in (*args.posonlyargs, *args.args)]
        passes_through = args.vararg is not None or args.kwarg is not None
        assert seam.exact != passes_through, f"{shown}, but SEAMS has exact={seam.exact}"
        if seam.exact:
            assert named == list(seam.params), f"{shown}, but SEAMS has {seam.params}"
        else:
            assert list(seam.params[: len(named)]) == named, f"{shown}, but SEAMS has {seam.params}"
