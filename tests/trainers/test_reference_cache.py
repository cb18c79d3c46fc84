"""Shared reference log-probs (alignctl.trainers.reference_cache through PreferenceTrainer): computed once, found by the next
job, equal to the on-the-fly reference, keyed by what changes them; TDPO and reference-free objectives untouched."""

import gc
import weakref

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig

from alignctl import divergences, objectives
from alignctl.models.scoring import sequence_stats
from alignctl.trainers import batches, reference_cache
from alignctl.trainers.preference import PreferenceTrainer

from ._tiny import PROMPTS, plain_token_logps

CHOSEN = [" 46.", " 72.", " 61.", " 66."]
REJECTED = [" The answer is 99, carry 1.", " 5+7=13.", " 40+21=? A: 60.", " 33 A: 6."]
ROWS = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(PROMPTS, CHOSEN, REJECTED)]
MISS, HIT = "reference log-probs: cache miss, computed in ", "reference log-probs: cache hit ("


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """A cache of this test's own: hits and misses do not depend on other tests."""
    monkeypatch.setenv("ALIGNCTL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def load(model_dir, noise: float = 0.0, seed: int = 0):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if noise:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * noise)
    return model


def forward_calls(model) -> list:
    """Grows by one per forward of `model`'s decoder (its input embeddings run on both kernel paths)."""
    calls = []
    model.get_input_embeddings().register_forward_hook(lambda *_: calls.append(1))
    return calls


def make(model_dir, tmp_path, objective="dpo", reference=None, rows=ROWS, max_length=48, kernel="fused",
         seed=42, peft_config=None, bf16=False, **args):  # fmt: skip
    """A PreferenceTrainer as alignctl.run.train builds one on CPU (no bf16 autocast: TRL's default would turn it on);
    the policy is the model slightly perturbed, so it differs from the reference and a step has gradients."""
    entry = objectives.get(objective)
    divergence = divergences.get(entry.default_divergence) if entry.needs_token_divergence else None
    config = DPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, report_to=[], use_cpu=True,
                       max_length=max_length, max_steps=1, save_strategy="no", seed=seed, bf16=bf16,
                       **args)  # fmt: skip
    return PreferenceTrainer(
        model=load(model_dir, noise=0.0 if peft_config else 0.05, seed=1), ref_model=reference, args=config,
        train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(model_dir),
        peft_config=peft_config, objective=entry, hyperparameters={}, divergence=divergence, kernel=kernel,
    )  # fmt: skip


def entries(cache_dir) -> list:
    root = cache_dir / reference_cache.KIND
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []


def whole_batch(trainer, columns=True) -> dict:
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    return batch if columns else {k: v for k, v in batch.items() if k not in reference_cache.COLUMNS}


def test_the_next_job_hits_the_cache_and_runs_no_reference_forward(model_dir, tmp_path, cache_dir, capsys):
    first_reference = load(model_dir)
    first_calls = forward_calls(first_reference)
    first = make(model_dir, tmp_path, reference=first_reference)
    err = capsys.readouterr().err
    [entry] = entries(cache_dir)
    assert f"{MISS}" in err and f"-> {cache_dir / reference_cache.KIND / entry}\n" in err
    assert first_calls  # the miss scored the data with the reference
    assert first.ref_model is None  # every batch carries its reference log-probs: the model is freed

    # Another job of the sweep: another objective, hyperparameters and seed, the same reference, data and settings.
    reference = load(model_dir)
    calls = forward_calls(reference)
    freed = weakref.ref(reference)
    second = make(model_dir, tmp_path, objective="ipo", reference=reference, seed=7)
    assert f"{HIT}{cache_dir / reference_cache.KIND / entry})\n" in capsys.readouterr().err
    assert entries(cache_dir) == [entry]
    assert second.train_dataset["ref_chosen_logps"] == first.train_dataset["ref_chosen_logps"]
    second.train()  # a training step reads the reference log-probs from the batch
    assert calls == [] and second.state.global_step == 1
    del reference
    gc.collect()
    assert freed() is None  # nothing (TRL, accelerate) holds the reference model any more


def test_rows_are_found_by_content(model_dir, tmp_path, capsys):
    """Shuffled rows with one label flipped (chosen and rejected swapped, as label noise does) hit the same entry,
    and every row gets its own sequences' reference log-probs (checked against plain full-logits math)."""
    make(model_dir, tmp_path, reference=load(model_dir))
    flipped = [dict(r) for r in reversed(ROWS)]
    flipped[1]["chosen"], flipped[1]["rejected"] = flipped[1]["rejected"], flipped[1]["chosen"]
    trainer = make(model_dir, tmp_path, reference=load(model_dir), rows=flipped)
    assert HIT in capsys.readouterr().err
    batch, reference = whole_batch(trainer), load(model_dir)
    ids, attention, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    with torch.no_grad():
        token_logps = plain_token_logps(reference, ids, attention, completion)
    expected = (token_logps * completion[:, 1:]).sum(-1)
    got = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]]).double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kernel", ["fused", "naive"])
def test_a_step_with_cached_reference_logps_equals_the_on_the_fly_reference(model_dir, tmp_path, kernel):
    """Loss and gradients of a step (max_length 16 truncates some sequences) with the cached reference log-probs
    equal those of the same step scoring the reference on the fly (float32 tolerance)."""
    trainer = make(model_dir, tmp_path, reference=load(model_dir), max_length=16, kernel=kernel)
    policy, objective = trainer.model, trainer.objective
    params = [p for p in policy.parameters() if p.requires_grad]
    batch = whole_batch(trainer)
    cached = trainer.compute_loss(policy, batch)
    cached_grads = torch.autograd.grad(cached, params)

    reference = load(model_dir).eval()
    stats = sequence_stats(policy, batch["input_ids"], batch["attention_mask"], batch["completion_mask"],
                           reference=reference, kernel=kernel)  # fmt: skip
    fresh = objective.loss(batches.pairs(stats, objective), divergence=None).losses.mean()
    torch.testing.assert_close(cached, fresh)
    for got, want in zip(cached_grads, torch.autograd.grad(fresh, params)):
        torch.testing.assert_close(got, want)
    assert cached.item() != pytest.approx(0.6931, abs=1e-3)  # the policy differs from the reference


@pytest.mark.parametrize("change", ["max_length", "data", "reference_weights"])
def test_a_change_that_alters_the_numbers_misses(model_dir, tmp_path, cache_dir, capsys, change):
    make(model_dir, tmp_path, reference=load(model_dir))
    rows = [{**ROWS[0], "rejected": " 47."}, *ROWS[1:]] if change == "data" else ROWS
    reference = load(model_dir, noise=0.01 if change == "reference_weights" else 0.0)
    make(model_dir, tmp_path, reference=reference, rows=rows, max_length=16 if change == "max_length" else 48)
    assert capsys.readouterr().err.count(MISS) == 2
    assert len(entries(cache_dir)) == 2


def test_lora_reference_is_the_base_and_the_adapter_is_not_in_the_key(model_dir, tmp_path, capsys):
    """With LoRA and no ref_model the reference is the base with the adapter off: two jobs whose adapters differ
    (another seed) share the entry, and it holds the base model's log-probs."""
    lora = dict(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # B != 0: the adapter matters
    make(model_dir, tmp_path, peft_config=LoraConfig(**lora), seed=1)
    trainer = make(model_dir, tmp_path, peft_config=LoraConfig(**lora), seed=2)
    assert capsys.readouterr().err.count(HIT) == 1
    batch = whole_batch(trainer)
    with torch.no_grad():
        base = sequence_stats(load(model_dir), batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    torch.testing.assert_close(torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]]), base.logps)


def test_lora_naive_bf16_autocast_matches_the_on_the_fly_reference(model_dir, tmp_path):
    """The naive path calls the model's forward, which accelerate wraps in autocast when train() prepares the policy:
    the precompute (before that) scores under the same autocast."""
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    trainer = make(model_dir, tmp_path, peft_config=lora, kernel="naive", bf16=True)
    assert trainer.accelerator.native_amp
    trainer.accelerator.prepare_model(trainer.model)  # as train() does
    batch = whole_batch(trainer)
    with torch.no_grad():
        on_the_fly = trainer.sequence_stats(trainer.model, whole_batch(trainer, columns=False)).ref_logps
    torch.testing.assert_close(torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]]), on_the_fly)


def test_tdpo_keeps_the_reference_model_and_no_cache(model_dir, tmp_path, cache_dir, capsys):
    reference = load(model_dir)
    calls = forward_calls(reference)
    trainer = make(model_dir, tmp_path, objective="tdpo2", reference=reference)
    assert trainer.ref_model is not None and "ref_chosen_logps" not in trainer.train_dataset.column_names
    assert calls == [] and "reference log-probs" not in capsys.readouterr().err and entries(cache_dir) == []
    trainer.compute_loss(trainer.model, whole_batch(trainer))
    assert calls  # scored on the fly, with its full distributions
    with pytest.raises(ValueError, match="precompute_ref_log_probs=False"):
        make(model_dir, tmp_path, objective="tdpo2", reference=load(model_dir), precompute_ref_log_probs=True)


def test_reference_free_objective_needs_nothing(model_dir, tmp_path, cache_dir, capsys):
    trainer = make(model_dir, tmp_path, objective="simpo")  # alignctl.run.train passes no reference to SimPO, ASFT
    assert trainer.ref_model is None and "ref_chosen_logps" not in trainer.train_dataset.column_names
    assert "reference log-probs" not in capsys.readouterr().err and entries(cache_dir) == []
    trainer.train()
    assert trainer.state.global_step == 1


def test_a_killed_build_leaves_no_entry(model_dir, tmp_path, cache_dir, monkeypatch, capsys):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(reference_cache, "sequence_stats", killed)
        with pytest.raises(KeyboardInterrupt):
            make(model_dir, tmp_path, reference=load(model_dir))
    root = cache_dir / reference_cache.KIND
    assert [p.name for p in root.iterdir() if p.is_dir()] == []  # no entry, no temp dir
    make(model_dir, tmp_path, reference=load(model_dir))
    assert MISS in capsys.readouterr().err and len(entries(cache_dir)) == 1


def test_evaluating_new_data_after_the_reference_is_freed_is_refused(model_dir, tmp_path):
    trainer = make(model_dir, tmp_path, reference=load(model_dir))
    with pytest.raises(ValueError, match="reference model was freed"):
        trainer.evaluate(eval_dataset=Dataset.from_list(ROWS))
