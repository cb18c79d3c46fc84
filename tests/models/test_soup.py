"""SALSA's model soup (alignctl.models.soup): the uniform weight average, checked against numpy; the cached build;
entries that cannot be averaged; the config rules of model.reference=soup / model.soup."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from alignctl.errors import ConfigError, UsageError
from alignctl.models import loading, soup
from alignctl.models.schema import HFModelConfig, TinyModelConfig
from alignctl.run import sources

TEXTS = ["the film was a quiet delight.", "a dull plot and wooden acting.", "an honest, warm story."] * 4


def save_model(path: Path, seed: int, hidden_size: int = 32, texts: list[str] = TEXTS) -> Path:
    from alignctl.data.tasks import tiny_lm
    from alignctl.models import files

    tokenizer = tiny_lm.train_bpe_tokenizer(texts, vocab_size=300, model_max_length=32)
    cfg = TinyModelConfig(seed=seed, hidden_size=hidden_size, num_layers=1, num_heads=2, intermediate_size=64,
                          max_position_embeddings=32)  # fmt: skip
    files.save_hf_dir(tiny_lm.build_llama(cfg, tokenizer), tokenizer, path)
    return path


def weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def differs(x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> bool:
    return any(not np.array_equal(x[name], y[name]) for name in x)


def soup_cfg(entries: list, name: str = "hf") -> SimpleNamespace:
    return SimpleNamespace(model=SimpleNamespace(name=name, soup=entries, reference="soup", trust_remote_code=False))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("soup-models")
    return {"a": save_model(root / "a", seed=0), "b": save_model(root / "b", seed=1),
            "wide": save_model(root / "wide", seed=0, hidden_size=48),
            "other_vocab": save_model(root / "other_vocab", seed=0, texts=[t.upper() for t in TEXTS])}  # fmt: skip


# --- the average ---------------------------------------------------------------------------------------------------
def test_average_of_identical_state_dicts_is_bitwise_the_same():
    g = torch.Generator().manual_seed(0)
    state = {"w": torch.randn(5, 3, generator=g), "b": torch.randn(3, generator=g).to(torch.bfloat16)}
    out = soup.average_state_dicts([state, {k: v.clone() for k, v in state.items()}])
    for name, tensor in state.items():
        assert out[name].dtype == tensor.dtype
        assert torch.equal(out[name], tensor)


def test_average_of_three_against_numpy():
    g = torch.Generator().manual_seed(1)
    states = [{"w": torch.randn(4, 4, generator=g) * 10 ** i} for i in range(3)]
    out = soup.average_state_dicts(states)
    want = (sum(s["w"].numpy().astype(np.float64) for s in states) / 3).astype(np.float32)
    np.testing.assert_array_equal(out["w"].numpy(), want)


@pytest.mark.parametrize("other,detail", [
    ({"w": torch.zeros(2, 2)}, "lacks parameter b"),
    ({"w": torch.zeros(2, 2), "b": torch.zeros(2), "c": torch.zeros(1)}, "has an extra parameter c"),
    ({"w": torch.zeros(2, 3), "b": torch.zeros(2)}, "has parameter w of shape [2, 3], not [2, 2]"),
])  # fmt: skip
def test_mismatched_state_dicts_name_the_entry(other, detail):
    first = {"w": torch.zeros(2, 2), "b": torch.zeros(2)}
    with pytest.raises(soup.Mismatch) as e:
        soup.average_state_dicts([first, first, other])
    assert (e.value.index, e.value.detail) == (2, detail)


# --- the cached soup directory -------------------------------------------------------------------------------------
def test_soup_of_identical_models_is_the_model(models):
    path = sources.build_soup(soup_cfg([str(models["a"]), str(models["a"])]))
    a, got = weights(models["a"]), weights(path)
    assert a.keys() == got.keys()
    for name in a:
        np.testing.assert_array_equal(got[name], a[name])


def test_soup_of_two_models_is_their_average_and_is_cached(models, monkeypatch):
    cfg = soup_cfg([str(models["a"]), str(models["b"])])
    path = sources.build_soup(cfg)
    a, b, got = weights(models["a"]), weights(models["b"]), weights(path)
    for name in a:
        want = ((a[name].astype(np.float64) + b[name].astype(np.float64)) / 2).astype(a[name].dtype)
        np.testing.assert_array_equal(got[name], want)
    assert differs(got, a) and differs(got, b)
    # the tokenizer and config travel with it: it loads like any model directory, and it is the run's policy and
    # reference
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    assert sources.policy_source(cfg) == sources.reference_source(cfg) == str(path)

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt a cached soup")

    monkeypatch.setattr(soup, "write_soup", fail)
    assert sources.build_soup(cfg) == path  # second time: from the cache


def test_a_retrained_entry_is_not_a_stale_hit(models, tmp_path):
    b = save_model(tmp_path / "b", seed=1)
    first = sources.build_soup(soup_cfg([str(models["a"]), str(b)]))
    save_model(b, seed=2)  # the same directory, other weights
    second = sources.build_soup(soup_cfg([str(models["a"]), str(b)]))
    assert second != first and differs(weights(second), weights(first))


def test_run_directory_entry_means_its_model(models, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(models["b"], run / "model")
    (run / "config.yaml").write_text("objective:\n  name: dpo\n")  # what makes a directory a run's
    assert sources.soup_entries(soup_cfg([str(models["a"]), str(run)])) == [str(models["a"]), str(run / "model")]


def test_integer_entries_are_the_embedded_base_model_with_that_seed(monkeypatch):
    from alignctl.data import registry

    built = []
    stub = SimpleNamespace(embedded_model=lambda cfg: built.append(cfg.model.seed) or f"/base/seed{cfg.model.seed}")
    monkeypatch.setattr(registry, "get", lambda name: stub)
    monkeypatch.setattr(loading, "check_source", lambda field, value: value)
    model = TinyModelConfig(reference="soup", soup=[3, 1])
    cfg = SimpleNamespace(model=model, dataset=SimpleNamespace(name="toy_sentiment"))
    assert sources.soup_entries(cfg) == ["/base/seed3", "/base/seed1"]
    assert built == [3, 1] and model.seed == 0  # the run's own config is untouched


@pytest.mark.parametrize("bad,message", [
    ("missing", r"model.soup\[1\]=.*missing is not a Hugging Face model directory"),
    ("wide", r"model.soup\[1\]=.*wide does not fit model.soup\[0\]=.*: it has parameter .* of shape \[.*48"),
    ("other_vocab", r"model.soup\[1\]=.*other_vocab has another tokenizer vocabulary than model.soup\[0\]"),
])  # fmt: skip
def test_bad_entries_fail_with_one_line_naming_the_entry(models, tmp_path, bad, message):
    entry = str(tmp_path / "missing") if bad == "missing" else str(models[bad])
    with pytest.raises(UsageError, match=message) as e:
        sources.build_soup(soup_cfg([str(models["a"]), entry]))
    assert "\n" not in str(e.value)


# --- config rules --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,message", [
    (dict(reference="soup"), r"model.reference=soup needs model.soup=\[.*at least 2 entries; got model.soup=\[\]"),
    (dict(reference="soup", soup=[0]), r"at least 2 entries; got model.soup=\[0\]"),
    (dict(soup=[0, 1]), r"model.soup=\[0, 1\] is only read with model.reference=soup, not model.reference=null"),
    (dict(reference="soup", soup=[0, -1]), r"model.soup\[1\]=-1 is out of range"),
    (dict(reference="soup", soup=[0, True]), r"model.soup\[1\]=True is not valid"),
    (dict(reference="soup", soup=[0, ""]), r"model.soup\[1\]='' is not valid"),
])  # fmt: skip
def test_tiny_config_rules(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TinyModelConfig(**kwargs)


def test_hf_config_rules():
    with pytest.raises(ConfigError, match=r"model.soup\[0\]=0 is not valid with model=hf: an integer entry is a seed"):
        HFModelConfig(path="/a", reference="soup", soup=[0, "/b"])
    with pytest.raises(ConfigError, match=r"model.path=/a is not model.soup\[0\]=/b"):
        HFModelConfig(path="/a", reference="soup", soup=["/b", "/a"])
    HFModelConfig(path="/a", reference="soup", soup=["/a", "/b"])
    TinyModelConfig(reference="soup", soup=[0, 1])


def test_online_objectives_take_a_soup_but_no_other_reference(nothing_loads):
    from alignctl.config import compose

    cfg = compose.compose_one(["objective=grpo", "model.reference=soup", "model.soup=[0,1]"])
    assert (cfg.model.reference, cfg.model.soup) == ("soup", [0, 1])
    with pytest.raises(UsageError, match="model.reference=/x is not supported by objective=grpo"):
        compose.compose_one(["objective=grpo", "model.reference=/x"])


def test_alignctl_ls_names_the_soup_reference(capsys):
    from alignctl.cli import listing

    listing.show(None)
    assert "model.soup=" in capsys.readouterr().out.replace("\n", " ")
