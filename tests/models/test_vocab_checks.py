"""What a run's models must agree on, checked from their config.json and tokenizer files before any weights load
(alignctl.run.sources.check_models, called by alignctl.run.launch.validate): the policy's tokenizer against its input
embedding, the reference's vocabulary against the policy's, model.lora.target_modules against the policy's modules
(and against what peft itself accepts)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from alignctl.config import compose
from alignctl.errors import UsageError
from alignctl.models import loading
from alignctl.run import sources

from .conftest import FAMILY_TEXTS, _config, build_family

# Other texts: a BPE tokenizer trained on them to FAMILY_TEXTS' 320 tokens has as many tokens, but other ones.
OTHER_TEXTS = [
    *["a loud story of wooden plots and quiet jokes, told twice.", "Q: 7+8=? A: 15. the cast was warm."] * 8,
    *(c * 3 + " xyz" for c in "abcdefghijklmnopqrstuvwxyz"),
]
SHORT_BY = 40  # rows the short model's embedding lacks


def _save_llama(path: Path, tokenizer, vocab_size: int) -> Path:
    """A tiny random llama with `vocab_size` embedding rows beside `tokenizer` (any size)."""
    from transformers import AutoModelForCausalLM

    from alignctl.models import files

    files.save_hf_dir(AutoModelForCausalLM.from_config(_config("llama", tokenizer, vocab_size)), tokenizer, path)
    return path


def build_models(root: Path) -> dict[str, Path]:
    """Tiny llama directories: `llama` (tokenizer and embedding agree), `twin` (a copy: the same vocabulary),
    `short` (llama's tokenizer, SHORT_BY fewer embedding rows), `smaller` (another tokenizer of 300 tokens),
    `same_size` (another tokenizer of llama's 320 tokens) and `gpt2` (Conv1D layers)."""
    from transformers import AutoTokenizer

    from alignctl.data.tasks import tiny_lm

    dirs = {"llama": build_family("llama", root / "llama"), "gpt2": build_family("gpt2", root / "gpt2")}
    dirs["twin"] = Path(shutil.copytree(dirs["llama"], root / "twin"))
    tokenizer = AutoTokenizer.from_pretrained(dirs["llama"])
    dirs["short"] = _save_llama(root / "short", tokenizer, len(tokenizer) - SHORT_BY)
    smaller = tiny_lm.train_bpe_tokenizer(FAMILY_TEXTS, vocab_size=300, model_max_length=128)
    dirs["smaller"] = _save_llama(root / "smaller", smaller, len(smaller))
    same_size = tiny_lm.train_bpe_tokenizer(OTHER_TEXTS, vocab_size=len(tokenizer), model_max_length=128)
    assert len(same_size) == len(tokenizer) and same_size.get_vocab() != tokenizer.get_vocab()
    dirs["same_size"] = _save_llama(root / "same_size", same_size, len(same_size))
    return dirs


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return build_models(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    rows = [{"prompt": f"the film {i} was", "chosen": " good.", "rejected": " bad."} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def no_weights(monkeypatch):
    """Fails a test that reads weights: these checks read config.json and tokenizer files only."""
    from transformers import AutoModelForCausalLM

    def forbidden(*a, **k):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(loading, "load_causal_lm", forbidden)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", forbidden)


def hf(models, pairs_file, policy="llama", *overrides):
    return compose.compose_one(["model=hf", f"model.path={models[policy]}", "dataset=preference_file",
                                f"dataset.path={pairs_file}", *overrides])  # fmt: skip


def one_line(fn, *fragments: str) -> str:
    with pytest.raises(UsageError) as e:
        fn()
    message = str(e.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_agreeing_models_pass(models, pairs_file, no_weights):
    sources.check_models(hf(models, pairs_file))
    sources.check_models(hf(models, pairs_file, "llama", f"model.reference={models['twin']}"))
    sources.check_models(hf(models, pairs_file, "smaller", f"model.reference={models['smaller']}"))


def test_a_tokenizer_past_the_policys_embedding(models, pairs_file, no_weights):
    n = loading.vocabulary("model.path", str(models["llama"]), False).tokens
    one_line(
        lambda: sources.check_models(hf(models, pairs_file, "short")),
        f"model.path={models['short']}: its tokenizer has {n} tokens but its input embedding only {n - SHORT_BY} rows",
        "(config.json vocab_size)", f"token ids {n - SHORT_BY}..{n - 1} index past the table",
        "model.resize_token_embeddings(len(tokenizer))",
    )  # fmt: skip


def test_a_reference_with_another_vocabulary(models, pairs_file, no_weights):
    n = loading.vocabulary("model.path", str(models["llama"]), False).tokens
    one_line(
        lambda: sources.check_models(hf(models, pairs_file, "llama", f"model.reference={models['smaller']}")),
        f"model.reference={models['smaller']} has another vocabulary than the policy model.path={models['llama']}",
        f"(300 tokens and 300 embedding rows against {n} and {n})", "leave model.reference unset",
    )  # fmt: skip
    one_line(  # as many tokens, other ones: the same sizes are not the same vocabulary
        lambda: sources.check_models(hf(models, pairs_file, "llama", f"model.reference={models['same_size']}")),
        f"model.reference={models['same_size']} has another vocabulary",
        f"(both {n} tokens and {n} embedding rows, but other tokens)",
    )  # fmt: skip
    one_line(  # the policy's own table is checked first
        lambda: sources.check_models(hf(models, pairs_file, "short", f"model.reference={models['llama']}")),
        f"model.path={models['short']}: its tokenizer has",
    )  # fmt: skip


def test_an_embedded_policy_is_checked_once_built(models):
    """model=tiny builds its policy on first use (at training start): build.training_data checks it then."""
    cfg = compose.compose_one([f"model.reference={models['smaller']}"])
    built = str(models["llama"])  # standing in for the task's built model directory
    one_line(lambda: sources.check_embedded_policy(cfg, built),
             f"has another vocabulary than the policy model=tiny ({built})")  # fmt: skip
    sources.check_embedded_policy(compose.compose_one([f"model.reference={models['twin']}"]), built)
    sources.check_embedded_policy(compose.compose_one([]), built)  # no reference of its own: nothing to compare


def test_teachers_share_the_policys_vocabulary(models, pairs_file):
    """sources.load_teachers runs this check before it loads each teacher."""
    cfg = hf(models, pairs_file)
    policy = ("model.path", str(models["llama"]))
    sources.check_vocabularies(cfg, policy, [("objective.teacher", str(models["twin"]), sources.TEACHER_SHARES)])
    one_line(
        lambda: sources.check_vocabularies(
            cfg, policy, [("objective.teacher_reference", str(models["smaller"]), sources.TEACHER_SHARES)]),
        f"objective.teacher_reference={models['smaller']} has another vocabulary", "share the student's vocabulary",
    )  # fmt: skip


def test_a_changed_directory_is_read_again(models, tmp_path):
    copy = Path(shutil.copytree(models["llama"], tmp_path / "copy"))
    before = loading.vocabulary("model.path", str(copy), False)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "vocab_size": before.rows - 1}))
    assert loading.vocabulary("model.path", str(copy), False).rows == before.rows - 1


LLAMA_LINEAR = "its linear layers are q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head"


@pytest.mark.parametrize(
    "policy, targets, fragments",
    [
        ("llama", "[q_proj,v_proj]", None),
        ("llama", "[self_attn.q_proj]", None),  # the last dotted parts of a module path, as peft matches
        ("llama", "[embed_tokens]", None),  # an embedding: LoRA adapts it too
        ("gpt2", "[c_attn]", None),  # GPT-2's Conv1D
        ("llama", "[nonexistent_proj]", [("model.lora.target_modules=[nonexistent_proj]: 'nonexistent_proj' names no "
                                          "module of model.path="), LLAMA_LINEAR, "[all-linear]"]),
        ("llama", "[q_proj,v_prj]", ["'v_prj' names no module"]),  # one typo beside a good name: not fewer layers
        ("llama", "[mlp]", ["'mlp' names a LlamaMLP of model.path=", "which LoRA cannot adapt", LLAMA_LINEAR]),
        ("gpt2", "[q_proj]", ["'q_proj' names no module", "its linear layers are c_attn, c_proj, c_fc, lm_head"]),
    ],
)  # fmt: skip
def test_lora_targets_against_the_policys_modules(models, pairs_file, no_weights, policy, targets, fragments):
    cfg = hf(models, pairs_file, policy, "model.lora.r=4", f"model.lora.target_modules={targets}")
    if fragments is None:
        sources.check_models(cfg)
    else:
        one_line(lambda: sources.check_models(cfg), *fragments)


def test_lora_targets_of_an_embedded_model_need_no_build(nothing_loads):
    sources.check_lora_targets(compose.compose_one(["model.lora.r=4", "model.lora.target_modules=[q_proj,o_proj]"]))
    one_line(lambda: sources.check_lora_targets(compose.compose_one(["model.lora.r=4",
                                                                     "model.lora.target_modules=[c_attn]"])),
             "'c_attn' names no module of model=tiny", LLAMA_LINEAR)  # fmt: skip
    sources.check_lora_targets(compose.compose_one(["model.lora.target_modules=[c_attn]"]))  # r=0: no LoRA, no check


def test_all_linear_stands_alone():
    one_line(lambda: compose.compose_one(["model.lora.target_modules=[all-linear,q_proj]"]),
             "model.lora.target_modules=[all-linear,q_proj]: all-linear stands alone")  # fmt: skip


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["self_attn.q_proj"], ["nonexistent_proj"], ["mlp"]])
def test_the_lora_check_agrees_with_peft(models, pairs_file, targets):
    """What the check accepts, peft adapts; what it refuses (each name alone), peft refuses too."""
    import peft
    from transformers import AutoModelForCausalLM

    cfg = hf(models, pairs_file, "llama", "model.lora.r=4", f"model.lora.target_modules=[{','.join(targets)}]")
    try:
        sources.check_models(cfg)
        accepted = True
    except UsageError:
        accepted = False
    model = AutoModelForCausalLM.from_pretrained(models["llama"])
    if accepted:
        wrapped = peft.get_peft_model(model, loading.lora_config(cfg))
        assert any("lora_A" in name for name, _ in wrapped.named_parameters())
    else:
        with pytest.raises(ValueError):  # NoMatchingPeftModuleError, or "Target module ... is not supported"
            peft.get_peft_model(model, loading.lora_config(cfg))
