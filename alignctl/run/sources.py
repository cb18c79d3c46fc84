"""Which weights a run uses: the policy's starting model, the reference, a soup's entries, distillation teachers.
Resolved from the config and the registries (an embedded task builds its model on first use; a teacher given as a
run directory brings its own reference from that run's saved config)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

from alignctl import objectives
from alignctl.config import compose
from alignctl.config.schema import RunConfig
from alignctl.data import registry
from alignctl.errors import UsageError
from alignctl.models import loading, soup
from alignctl.models.schema import EMBEDDED_MODELS, SOUP


def policy_source(cfg: RunConfig) -> str:
    """The policy's starting weights: the embedded task's built model directory, or model.path (checked); with
    model.reference=soup, the soup of model.soup (built into the cache on first use: alignctl.models.soup)."""
    if cfg.model.reference == SOUP:
        return str(build_soup(cfg))
    if cfg.model.name in EMBEDDED_MODELS:
        return str(registry.get(cfg.dataset.name).embedded_model(cfg))
    return loading.check_source("model.path", cfg.model.path)


def reference_source(cfg: RunConfig) -> str:
    """The reference model (KL anchor and eval baseline): model.reference, or the policy's starting weights (which
    a soup is too)."""
    if cfg.model.reference is not None and cfg.model.reference != SOUP:
        return loading.check_source("model.reference", cfg.model.reference)
    return policy_source(cfg)


def build_soup(cfg: RunConfig) -> Path:
    """The soup of model.soup's entries (model.reference=soup): a cached HF model directory (alignctl.models.soup)."""
    return soup.build(soup_entries(cfg), trust_remote_code=cfg.model.trust_remote_code)


def soup_entries(cfg: RunConfig) -> list[str]:
    """model.soup's entries as loadable model sources (directories or cached hub ids), checked one by one."""
    sources = []
    for i, entry in enumerate(cfg.model.soup):
        if isinstance(entry, int):  # the config allows integers only with an embedded model
            if cfg.model.name not in EMBEDDED_MODELS:
                raise UsageError(f"model.soup[{i}]={entry}: integer entries (seeds) need model=tiny")
            sources.append(str(_embedded_base_model(cfg, seed=entry)))
            continue
        sources.append(loading.model_or_run_dir(f"model.soup[{i}]", entry)[0])  # a run directory: its trained model
    return sources


def _embedded_base_model(cfg: RunConfig, seed: int) -> Path:
    """The embedded task's base model built with model.seed=seed (cached like any embedded build)."""
    seeded = copy.copy(cfg)
    seeded.model = dataclasses.replace(cfg.model, seed=seed)
    return Path(registry.get(cfg.dataset.name).embedded_model(seeded))


def check_teachers(cfg: RunConfig) -> None:
    """A distillation objective's teacher models exist, checked when the run is validated, before any model loads;
    their vocabulary is checked against the policy's when they load (load_teachers)."""
    if objectives.get(cfg.objective.name).model_options:
        teacher_sources(cfg)


def teacher_sources(cfg: RunConfig) -> tuple[str, str | None]:
    """(teacher, teacher reference) model dirs of a distillation objective; the reference is None for objectives
    that read only the teacher (dckd).

    `objective.teacher=<run dir>` means <run dir>/model (a trained run's final model). `objective.teacher_reference`
    unset: the teacher run's own reference (its model.reference, else its starting weights, as its saved config.yaml
    says); then the teacher must be a run dir. One line otherwise."""
    options = objectives.get(cfg.objective.name).model_options
    teacher = cfg.objective.teacher
    if teacher is None:
        raise UsageError(f"objective={cfg.objective.name} needs objective.teacher=<model dir or run dir> (a DPO "
                         "run of a larger model, e.g. alignctl train model=tiny-large objective=dpo)")  # fmt: skip
    teacher_dir, teacher_run = loading.model_or_run_dir("objective.teacher", teacher)
    if "teacher_reference" not in options:
        return teacher_dir, None
    reference = cfg.objective.teacher_reference
    if reference is not None:
        return teacher_dir, loading.model_or_run_dir("objective.teacher_reference", reference)[0]
    if teacher_run is None:
        raise UsageError(f"objective.teacher={teacher} is a model dir, not a run dir, so its reference is unknown; "
                         "set objective.teacher_reference=<model dir> (the teacher's SFT model)")  # fmt: skip
    return teacher_dir, reference_source(compose.load_run(teacher_run, []))


def load_teachers(cfg: RunConfig, policy, kernel: str) -> tuple[Any, Any | None, str]:
    """The frozen teacher (and, for adpa, the teacher's reference), each checked against the policy's vocabulary
    before it loads, and the kernel all models can share ("naive" if any of them needs it)."""
    from alignctl.models import scoring  # torch and transformers: the run's validation imports this module
    teacher_dir, reference_dir = teacher_sources(cfg)
    policy_dir = policy_source(cfg)
    models = []
    for field, source in (("objective.teacher", teacher_dir), ("objective.teacher_reference", reference_dir)):
        if source is None:
            models.append(None)
            continue
        check_vocabularies(cfg, (_policy_field(cfg), policy_dir), [(field, source, TEACHER_SHARES)])
        model = loading.load_causal_lm(cfg, source, trainable=False)
        loading.check_same_vocabulary(field, model, source, policy, policy_dir)  # the weights loaded match too
        kernel = scoring.resolve_kernel(model, kernel)
        models.append(model)
    return models[0], models[1], kernel


# --- what the models must agree on, read from their files before any weights load --------------------------------
REFERENCE_SHARES = ("the reference scores the policy's tokens (its KL anchor, eval's baseline): give a reference with "
                    "the policy's tokenizer (e.g. the model the policy was fine-tuned from), or leave model.reference "
                    "unset (the policy's starting weights)")  # fmt: skip
TEACHER_SHARES = ("a teacher scores the student's tokens, so it must share the student's vocabulary: give a teacher "
                  "(and teacher reference) with the policy's tokenizer")  # fmt: skip


def check_models(cfg: RunConfig) -> None:
    """What the run's models must agree on, read from config.json and tokenizer files (no weights), when the run is
    validated (alignctl.run.launch.validate): the policy's tokenizer against its input embedding and the reference's
    vocabulary against the policy's (check_vocabularies), model.lora.target_modules against the policy's modules.
    An embedded policy (model=tiny) is built by its task on first use, so its vocabulary is checked once built
    (check_embedded_policy); the teachers' are checked against the policy's before they load (load_teachers)."""
    if cfg.model.name not in EMBEDDED_MODELS:
        check_vocabularies(cfg, _named_policy(cfg), _reference_named(cfg))
    check_lora_targets(cfg)


def check_embedded_policy(cfg: RunConfig, policy_dir: str) -> None:
    """An embedded policy, just built (policy_dir), against the reference a config names beside it: called before
    training (alignctl.run.build.training_data); for any other policy check_models did it when the run was
    validated."""
    reference = _reference_named(cfg)
    if cfg.model.name in EMBEDDED_MODELS and reference:
        check_vocabularies(cfg, (_policy_field(cfg), policy_dir), reference)


def check_vocabularies(cfg: RunConfig, policy: tuple[str, str], others: list[tuple[str, str, str]]) -> None:
    """The one check of vocabulary sizes (alignctl.models.loading.check_vocabularies): the policy's tokenizer against
    its own input embedding, then each of `others` ((field, model source, why it must share the policy's
    vocabulary)) against the policy (policy: (field, model source)). Reads config.json and the tokenizer files of
    each; one line naming the field, both sizes and what to do."""
    trust = cfg.model.trust_remote_code
    against = [(loading.vocabulary(field, source, trust), why) for field, source, why in others]
    loading.check_vocabularies(loading.vocabulary(*policy, trust), against)


def check_lora_targets(cfg: RunConfig) -> None:
    """model.lora.target_modules against the policy's architecture, built on the meta device from its config.json
    (or, for an embedded model, from the model option): no weights read."""
    if cfg.model.lora.r == 0 or loading.lora_targets(cfg) == "all-linear":
        return
    if cfg.model.name in EMBEDDED_MODELS:
        from alignctl.data.tasks import tiny_lm

        loading.check_lora_targets(cfg, tiny_lm.meta_llama(cfg.model), "model", cfg.model.name)
        return
    field, policy_dir = _named_policy(cfg)
    loading.check_lora_targets(cfg, loading.meta_model(field, policy_dir, cfg.model.trust_remote_code), field,
                               policy_dir)  # fmt: skip


def _policy_field(cfg: RunConfig) -> str:
    """What names policy_source's directory in messages (one alignctl built: Vocabulary.label adds the directory)."""
    if cfg.model.reference == SOUP:
        return "model.reference=soup"
    return f"model={cfg.model.name}" if cfg.model.name in EMBEDDED_MODELS else "model.path"


def _named_policy(cfg: RunConfig) -> tuple[str, str]:
    """(field, model source) of a policy the config names (not an embedded one): model.path, or with
    model.reference=soup the soup's first entry (whose config and tokenizer the soup keeps), without building it."""
    if cfg.model.reference == SOUP:
        return "model.soup[0]", loading.model_or_run_dir("model.soup[0]", cfg.model.soup[0])[0]
    return "model.path", loading.check_source("model.path", cfg.model.path)


def _reference_named(cfg: RunConfig) -> list[tuple[str, str, str]]:
    """model.reference when it names a model of its own (not null, not the soup)."""
    if cfg.model.reference in (None, SOUP):
        return []
    return [("model.reference", loading.check_source("model.reference", cfg.model.reference), REFERENCE_SHARES)]
