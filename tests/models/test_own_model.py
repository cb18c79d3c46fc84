"""Your own model and data, end to end in-process: every architecture family loads, trains a few steps (dpo, tdpo2)
and evaluates; LoRA trains only its adapter against the base; SFT -> pairs -> DPO; conversational data through a
chat template; bad model input ends in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignctl.config import compose
from alignctl.errors import UsageError
from alignctl.run import sources
from tests import forked

from .conftest import FAMILIES

PAIRS = [
    {"prompt": "the film was", "chosen": " a quiet delight.", "rejected": " dull and wooden."},
    {"prompt": "she said the ending", "chosen": " was brilliant.", "rejected": " made it hard to watch."},
    {"prompt": "an honest, warm", "chosen": " story with a great cast.", "rejected": " plot, loud and flat."},
    {"prompt": "nothing in this movie", "chosen": " is dull; a delight.", "rejected": " works; the jokes fall flat."},
    {"prompt": "a dull plot", "chosen": " but a great cast.", "rejected": " and wooden acting."},
    {"prompt": "the score is", "chosen": " warm and brilliant.", "rejected": " loud and the jokes flat."},
]
FAST = [
    "train.max_steps=2", "train.batch_size=2", "train.logging_steps=1", "train.save_steps=0", "train.max_length=32",
    "eval.num_prompts=2", "eval.samples_per_prompt=2", "eval.max_new_tokens=4", "tracking=none",
    "dataset.test_size=2",
]  # fmt: skip


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", PAIRS)


def train(tmp_path: Path, *overrides: str) -> tuple[Path, dict]:
    from alignctl.run.train import train_and_evaluate

    run_dir = tmp_path / "run"
    metrics = train_and_evaluate(compose.compose_one(list(overrides)), run_dir)
    return run_dir, metrics


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["dpo", "tdpo2"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_trains_and_evaluates(family, objective, family_model_dirs, pairs_file, tmp_path):
    run_dir, metrics = train(
        tmp_path, "model=hf", f"model.path={family_model_dirs[family]}", "dataset=preference_file",
        f"dataset.path={pairs_file}", f"objective={objective}", *FAST,
    )  # fmt: skip
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if "loss" in row] == [1, 2]
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in logged if "loss" in row)
    assert json.loads((run_dir / "eval.json").read_text()) == metrics
    assert metrics["num_pairs"] == 2 and metrics["preference_accuracy"] is not None
    assert metrics["reference_dir"] == str(family_model_dirs[family])
    trained = load_file(run_dir / "model" / "model.safetensors")
    base = load_file(family_model_dirs[family] / "model.safetensors")
    assert trained.keys() == base.keys() and any(not torch.equal(trained[k], base[k]) for k in base)


@pytest.mark.slow
def test_lora_trains_only_the_adapter_and_saves_merged_weights(family_model_dirs, pairs_file, tmp_path):
    base_dir = family_model_dirs["llama"]
    run_dir, metrics = train(
        tmp_path, "model=hf", f"model.path={base_dir}", "dataset=preference_file", f"dataset.path={pairs_file}",
        "model.lora.r=4", "model.lora.target_modules=[q_proj,v_proj]", "train.learning_rate=0.01", *FAST,
    )  # fmt: skip
    adapter = load_file(run_dir / "model" / "adapter" / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)
    assert any("lora_B" in name and v.abs().sum() > 0 for name, v in adapter.items())  # B starts at 0: it trained
    merged, base = load_file(run_dir / "model" / "model.safetensors"), load_file(base_dir / "model.safetensors")
    changed = {k for k in base if not torch.equal(merged[k], base[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)  # only LoRA's targets
    assert metrics["kl_to_reference"] is not None


def test_lora_reference_is_the_base_with_the_adapter_off(family_model_dirs):
    """With LoRA and no model.reference, PreferenceTrainer's reference log-probs are the base model's, whatever
    the adapter holds (no second copy is loaded)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    from alignctl import objectives
    from alignctl.models.scoring import sequence_stats
    from alignctl.trainers.preference import PreferenceTrainer

    base_dir = family_model_dirs["llama"]
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    args = DPOConfig(output_dir="unused", per_device_train_batch_size=2, report_to=[], use_cpu=True, max_length=32)
    trainer = PreferenceTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(PAIRS[:2]), processing_class=tokenizer,
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),  # B != 0
        objective=objectives.get("dpo"), hyperparameters={"beta": 0.1}, divergence=None,
    )  # fmt: skip
    assert trainer.ref_model is None
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    with torch.no_grad():
        stats = trainer.sequence_stats(trainer.model, batch)
        fresh = AutoModelForCausalLM.from_pretrained(base_dir).eval()
        base = sequence_stats(fresh, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    torch.testing.assert_close(stats.ref_logps, base.logps)
    assert not torch.allclose(stats.logps, base.logps)  # the policy (adapter on) differs from the base


@pytest.mark.slow
def test_sft_then_dpo_on_the_sft_model(family_model_dirs, pairs_file, tmp_path):
    """The paper pipeline with alignctl alone: SFT on the chosen completions, then DPO from the SFT model."""
    sft_dir, _ = train(
        tmp_path / "sft", "objective=sft", "model=hf", f"model.path={family_model_dirs['gpt2']}",
        "dataset=preference_file", f"dataset.path={pairs_file}", "train.learning_rate=0.01", *FAST,
    )  # fmt: skip
    assert (sft_dir / "model" / "config.json").is_file()
    dpo_dir, metrics = train(
        tmp_path / "dpo", "model=hf", f"model.path={sft_dir / 'model'}", "dataset=preference_file",
        f"dataset.path={pairs_file}", *FAST,
    )  # fmt: skip
    assert metrics["reference_dir"] == str(sft_dir / "model")  # the SFT model is the reference


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_conversational_data_renders_through_the_chat_template(family_model_dirs, tmp_path):
    from alignctl.models import loading
    from alignctl.run import build

    rows = [
        {"prompt": [{"role": "user", "content": "how was the film?"}],
         "chosen": [{"role": "assistant", "content": "a quiet delight"}],
         "rejected": [{"role": "assistant", "content": "dull"}]},
    ] * 4  # fmt: skip
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    overrides = ["model=hf", f"model.path={family_model_dirs['llama']}", "dataset=preference_file",
                 f"dataset.path={path}", "dataset.test_size=1"]  # fmt: skip
    cfg = compose.compose_one(overrides)
    tokenizer = loading.load_tokenizer(cfg, cfg.model.path)
    with pytest.raises(UsageError, match="model.chat_template"):
        build.rows(cfg, tokenizer)
    (tmp_path / "chat.jinja").write_text(CHAT_TEMPLATE)
    cfg = compose.compose_one([*overrides, f"model.chat_template={tmp_path / 'chat.jinja'}"])
    tokenizer = loading.load_tokenizer(cfg, cfg.model.path)
    row = build.rows(cfg, tokenizer)["train"][0]
    eos = tokenizer.eos_token
    assert row["prompt"] == f"<|user|>how was the film?{eos}<|assistant|>"
    assert (row["chosen"], row["rejected"]) == (f"a quiet delight{eos}", f"dull{eos}")


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        (["model.path=/nonexistent/model"], ["model.path=/nonexistent/model", "no config.json"]),
        (["model.path=nobody/no-such-model"], ["model.path=nobody/no-such-model", "offline"]),
        (["model.path={tmp}"], ["no config.json"]),
        (["model.path={llama}", "model.reference=/nope"], ["model.reference=/nope"]),
        (["model.path={llama}", "model.chat_template=plain words"], ["model.chat_template", "Jinja"]),
    ],
)
def test_bad_model_input_is_one_line(overrides, fragments, family_model_dirs, pairs_file, tmp_path, monkeypatch):
    from alignctl.models import loading

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    filled = [o.format(tmp=tmp_path, llama=family_model_dirs["llama"]) for o in overrides]
    cfg = compose.compose_one(["model=hf", "dataset=preference_file", f"dataset.path={pairs_file}", *filled])
    with pytest.raises(UsageError) as e:
        source = sources.policy_source(cfg)
        sources.reference_source(cfg)
        loading.load_tokenizer(cfg, source)
    message = str(e.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_a_hub_model_with_an_embedded_task_needs_model_hf(pairs_file):
    with pytest.raises(UsageError, match="model=tiny.*model=hf"):
        compose.compose_one(["dataset=preference_file", f"dataset.path={pairs_file}"])


@pytest.fixture(scope="module")
def classifier_dir(family_model_dirs, tmp_path_factory) -> Path:
    """A tiny random 2-label sentiment classifier sharing the llama family's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(family_model_dirs["llama"])
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1}, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.normal_(0, 1.0)  # spread the random scores so samples differ
    path = tmp_path_factory.mktemp("classifier")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def sft_llama_dir(family_model_dirs, tmp_path_factory) -> Path:
    """The llama family model after a few steps of language modelling on review-like text: it writes words (a
    random model writes random bytes, which no pair builder keeps)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignctl.data.tasks import tiny_lm
    from alignctl.models import files
    from alignctl.models.schema import TinyModelConfig

    from .conftest import FAMILY_TEXTS

    model = AutoModelForCausalLM.from_pretrained(family_model_dirs["llama"])
    tokenizer = AutoTokenizer.from_pretrained(family_model_dirs["llama"])
    steps = TinyModelConfig(pretrain_steps=60, pretrain_batch_size=8, pretrain_lr=1e-2, max_position_embeddings=64)
    tiny_lm.pretrain(model, tokenizer, FAMILY_TEXTS, steps, desc="test: SFT of the llama fixture")
    path = tmp_path_factory.mktemp("sft-llama")
    files.save_hf_dir(model, tokenizer, path)
    return path


@pytest.mark.slow
def test_imdb_pairs_sampled_from_the_sft_model_and_scored_by_a_classifier(sft_llama_dir, classifier_dir, tmp_path):
    """The DPO/f-DPO IMDB setup on a local file of IMDB's schema: prompts are review openings, the SFT model samples
    completions, the classifier's P(positive) - P(negative) ranks them, best vs worst is a pair."""
    from alignctl.models import loading
    from alignctl.rewards import registry as rewards
    from alignctl.rewards.base import RewardContext
    from alignctl.run import build

    words = ["warm", "dull", "loud", "quiet", "great", "flat", "honest", "wooden"]
    reviews = [{"text": f"a {w} film<br /><br />was {i}", "label": i % 2} for i, w in enumerate(words * 2)]
    path = write_jsonl(tmp_path / "imdb.jsonl", reviews)
    overrides = [
        "model=hf", f"model.path={sft_llama_dir}", "dataset=imdb", f"dataset.path={path}",
        "dataset.prompt_words=2", "dataset.test_size=4", "dataset.max_new_tokens=6", "reward=classifier",
        f"reward.path={classifier_dir}",
    ]  # fmt: skip
    cfg = compose.compose_one(overrides)
    tokenizer = loading.load_tokenizer(cfg, cfg.model.path)
    pairs = build.preference_pairs(cfg, tokenizer, cfg.model.path)
    assert len(pairs["train"]) > 0 and set(pairs["train"]["prompt"]) <= {f"a {w}" for w in words}
    score = rewards.build(cfg.reward, RewardContext())
    for row in pairs["train"]:
        chosen, rejected = score([row["prompt"]] * 2, [row["chosen"], row["rejected"]])
        assert chosen == pytest.approx(row["chosen_reward"], abs=1e-5) and chosen > rejected
        assert rejected == pytest.approx(row["rejected_reward"], abs=1e-5)
    again = build.sampled_source(cfg, tokenizer, cfg.model.path)
    from alignctl.data import sampled

    assert sampled.artifact_path(again, "pairs").is_dir()  # cached: a second run reuses it
    run_dir, metrics = train(tmp_path, *overrides, *FAST[:-1])
    assert metrics["num_pairs"] > 0 and -1.0 <= metrics["reward_mean"] <= 1.0


@pytest.mark.slow
def test_grpo_on_gsm8k_schema_with_exact_match(sft_llama_dir, tmp_path):
    """Online RL on a local file of GSM8K's schema: exact_match reads the reference answers the loader keeps."""
    rows = [{"question": f"What is {a} plus {b}?", "answer": f"{a} + {b} = {a + b}\n#### {a + b:,}"}
            for a, b in [(1, 2), (30, 4), (500, 600), (7, 8), (1000, 2000), (3, 3)]]  # fmt: skip
    path = write_jsonl(tmp_path / "gsm8k.jsonl", rows)
    run_dir, metrics = train(
        tmp_path, "objective=grpo", "model=hf", f"model.path={sft_llama_dir}", "dataset=gsm8k",
        f"dataset.path={path}", "dataset.max_new_tokens=8", "reward=exact_match", "train.num_generations=2",
        "train.split_solved_prompts=false", "train.reference_samples_per_prompt=2", *FAST,
    )  # fmt: skip
    assert {"pass@1", "pass@2", "reference_pass@1"} <= metrics.keys()
    assert metrics["preference_accuracy"] is None


def test_exact_match_scores_gsm8k_answers_from_the_loader(tmp_path):
    from alignctl.run import build

    rows = [{"question": "What is 1000 plus 2000?", "answer": "1000 + 2000 = 3000\n#### 3,000"}] * 3
    path = write_jsonl(tmp_path / "gsm8k.jsonl", rows)
    cfg = compose.compose_one(["objective=grpo", "model=hf", "model.path=unused", "dataset=gsm8k",
                               f"dataset.path={path}", "dataset.test_size=1", "reward=exact_match"])  # fmt: skip
    reward = build.reward(cfg)
    prompt = "Question: What is 1000 plus 2000?\nAnswer:"
    assert reward([prompt] * 3, [" 1000 + 2000 = 3000\n#### 3000", " #### 3,000", " The answer is 2999."]) == [
        1.0, 1.0, 0.0,
    ]  # fmt: skip


@pytest.mark.slow
def test_dtype_checkpointing_and_attention_options_reach_the_model(family_model_dirs, pairs_file, tmp_path):
    run_dir, metrics = train(
        tmp_path, "model=hf", f"model.path={family_model_dirs['gpt2']}", "dataset=preference_file",
        f"dataset.path={pairs_file}", "model.dtype=bfloat16", "model.gradient_checkpointing=true",
        "model.attn_implementation=eager", *FAST,
    )  # fmt: skip
    saved = load_file(run_dir / "model" / "model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in logged if "loss" in row)
    assert torch.isfinite(torch.tensor(metrics["kl_to_reference"]))


@pytest.mark.slow
def test_cli_trains_and_re_evaluates_a_hub_format_model(family_model_dirs, pairs_file, tmp_path):
    """The same through the command line (Hydra composes the paths as given), then `alignctl eval run_dir=`."""
    import os
    import subprocess
    import sys

    def alignctl(*args: str) -> subprocess.CompletedProcess:
        return forked.run([sys.executable, "-m", "alignctl.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, "WANDB_MODE": "offline"}, timeout=600)  # fmt: skip

    run_dir = tmp_path / "run"
    out = alignctl("train", "model=hf", f"model.path={family_model_dirs['qwen2']}", "dataset=preference_file",
                   f"dataset.path={pairs_file}", "train.num_threads=1", *FAST, f"hydra.run.dir={run_dir}")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    first = json.loads((run_dir / "eval.json").read_text())
    again = alignctl("eval", f"run_dir={run_dir}", f"out_dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "again" / "eval.json").read_text()) == first


def test_eval_against_a_reference_with_another_tokenizer_is_one_line(family_model_dirs, pairs_file, capsys, tmp_path):
    from alignctl.cli import main as cli

    with pytest.raises(SystemExit) as e:
        cli.main(["eval", f"model_dir={family_model_dirs['qwen2']}", f"eval.reference={family_model_dirs['llama']}",
                  "model=hf", f"model.path={family_model_dirs['qwen2']}", "dataset=preference_file",
                  f"dataset.path={pairs_file}", f"out_dir={tmp_path}"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "different tokenizers" in err


def test_bad_data_found_at_load_leaves_no_run_directory(family_model_dirs, tmp_path, monkeypatch, capsys):
    from alignctl.cli import main as cli

    bad = write_jsonl(tmp_path / "bad.jsonl", [*PAIRS[:3], {"prompt": "x", "chosen": "", "rejected": " y"}, *PAIRS])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "model=hf", f"model.path={family_model_dirs['gpt2']}", "dataset=preference_file",
                  f"dataset.path={bad}", "tracking=none"])  # fmt: skip
    err = capsys.readouterr().err
    assert e.value.code == 2 and "column 'chosen', row 3" in err
    assert not any((tmp_path / "runs").iterdir())  # the claimed directory is gone: nothing ran in it
