"""alignctl.eval.benchmarks: lm-eval's accuracy on a tiny local task against an independent scoring of the same
docs with plain torch, and the task checks (one line each, before any model or data loads). Offline throughout."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from alignctl.data.tasks import tiny_lm
from alignctl.errors import UsageError
from alignctl.eval import benchmarks
from alignctl.models.schema import TinyModelConfig

TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"
REPO = Path(__file__).resolve().parents[2]
TASK = "alignctl_toy_mc"
LIMIT = 6  # of the file's 8 docs: lm-eval takes the first ones
TEXTS = ["Q: 12+34=? A: 2+4=6; 1+3=4. The answer is 46.", "Q: 55+17=? A: 5+7=12, carry 1. The answer is 72."] * 8


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No hub: the offline switches on (the variables alignctl reads, and the flags datasets and huggingface_hub
    read at import, which may have happened before this module), and the HF caches empty folders of this test."""
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))


@pytest.fixture(scope="module")
def tiny():
    tokenizer = tiny_lm.train_bpe_tokenizer(TEXTS, vocab_size=300, model_max_length=64, individual_digits=True)
    cfg = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64)
    return tiny_lm.build_llama(cfg, tokenizer).eval(), tokenizer


def _docs() -> list[dict]:
    return [json.loads(line) for line in (TASKS_DIR / f"{TASK}.jsonl").read_text().splitlines()]


def _write_task(folder: Path, docs: list[dict]) -> Path:
    """The example task's YAML with its data file in ``folder`` (absolute data_files path; datasets' Arrow cache
    in the folder too)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{TASK}.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    cfg = yaml.safe_load((TASKS_DIR / f"{TASK}.yaml").read_text())
    cfg["dataset_kwargs"] = {"data_files": {"test": str(data)}, "cache_dir": str(folder / "arrow")}
    (folder / f"{TASK}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return folder


def _choice_logps(model, tokenizer, doc: dict) -> np.ndarray:
    """Summed log-prob of " <choice>" after "Q: <question> A:", plain full-sequence log_softmax in float64; the
    continuation is the tokens of the whole text past those of the context (lm-eval's split for causal models)."""
    context = f"Q: {doc['question']} A:"
    context_ids = tokenizer(context)["input_ids"]
    out = []
    for choice in doc["choices"]:
        ids = tokenizer(context + " " + choice)["input_ids"]
        assert ids[: len(context_ids)] == context_ids  # the context's tokens are a prefix: the split is clean
        with torch.no_grad():
            logps = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        out.append(sum(logps[t - 1, ids[t]].item() for t in range(len(context_ids), len(ids))))
    return np.array(out)


def test_accuracy_matches_an_independent_scoring(tiny, tmp_path):
    """Golds are set from the independent scores (doc i's gold is its (i % 4)-th most likely choice), so the
    expected accuracy is known and strictly between 0 and 1; every other choice gets a trailing "0", so acc_norm
    (log-prob per character) differs from acc. lm-eval must agree on acc, acc_norm and their stderrs over the
    first LIMIT docs only."""
    model, tokenizer = tiny
    docs = _docs()
    for doc in docs:
        doc["choices"] = [c + "0" * (k % 2) for k, c in enumerate(doc["choices"])]
    scores = [_choice_logps(model, tokenizer, d) for d in docs]
    lengths = [np.array([len(c) for c in d["choices"]], dtype=float) for d in docs]
    for s, n in zip(scores, lengths, strict=True):
        for v in (s, s / n):
            top = np.sort(v)
            assert top[-1] - top[-2] > 1e-4  # no near-ties: float32 vs float64 cannot flip an argmax
    for i, (doc, s) in enumerate(zip(docs, scores, strict=True)):
        doc["answer"] = int(np.argsort(-s)[i % 4])
    golds = np.array([d["answer"] for d in docs[:LIMIT]])
    correct = np.array([s.argmax() for s in scores[:LIMIT]]) == golds
    correct_norm = np.array([(s / n).argmax() for s, n in zip(scores[:LIMIT], lengths, strict=False)]) == golds
    assert correct.mean() == pytest.approx(2 / 6)  # docs 0 and 4 of 6
    assert 0 < correct_norm.mean() < 1 and correct_norm.mean() != correct.mean()

    folder = _write_task(tmp_path / "tasks", docs)
    model.train()  # run_lm_eval evaluates in eval mode and gives the mode back
    rng_before = torch.get_rng_state()
    result = benchmarks.run_lm_eval(model, tokenizer, [TASK], str(folder), limit=LIMIT, batch_size=3, device="cpu")
    assert model.training
    model.eval()
    assert torch.equal(torch.get_rng_state(), rng_before)  # seeding inside does not leak out

    n = LIMIT
    expected = {
        "acc": correct.mean(),
        "acc_stderr": correct.std(ddof=1) / np.sqrt(n),
        "acc_norm": correct_norm.mean(),
        "acc_norm_stderr": correct_norm.std(ddof=1) / np.sqrt(n),
    }
    assert set(result) == {TASK}
    assert set(result[TASK]) == set(expected)
    for key, value in expected.items():
        assert result[TASK][key] == pytest.approx(value, rel=1e-9), key

    again = benchmarks.run_lm_eval(model, tokenizer, [TASK], str(folder), limit=LIMIT, batch_size=1)
    assert again == result  # batch size and a second run change nothing


def test_a_local_task_sends_no_download_count(tiny, tmp_path, monkeypatch):
    """Online, datasets would ping its S3 bucket to count a `json` load of local files: run_lm_eval turns that
    off (the ping is recorded here instead of sent)."""
    import datasets

    pings = []

    class Session:
        def head(self, url, **kwargs):
            pings.append(url)
            raise ConnectionError("no network in tests")

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", True)
    monkeypatch.setattr(datasets.load, "get_session", Session)
    folder = _write_task(tmp_path / "tasks", _docs())
    model, tokenizer = tiny
    result = benchmarks.run_lm_eval(model, tokenizer, [TASK], str(folder), limit=2)
    assert set(result[TASK]) >= {"acc", "acc_norm"}
    assert pings == []
    assert datasets.config.HF_UPDATE_DOWNLOAD_COUNTS is True  # given back


def test_a_stale_cache_entry_fails_in_one_line(tiny, tmp_path):
    """An (empty) cache folder lets hellaswag pass the check offline; loading it then fails, as one line."""
    (Path(os.environ["HF_DATASETS_CACHE"]) / "Rowan___hellaswag").mkdir(parents=True)
    model, tokenizer = tiny
    with pytest.raises(UsageError) as e:
        benchmarks.run_lm_eval(model, tokenizer, ["hellaswag"], None, limit=2)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("eval.lm_eval.tasks=[hellaswag]: lm-eval could not load a task's data (ConnectionError")
    assert "Rowan/hellaswag" in message and "eval.lm_eval.include_path=<folder of task YAMLs>" in message


def test_readable_metric_names():
    raw = {
        "gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.1,
                  "exact_match,flexible-extract": 0.5, "exact_match_stderr,flexible-extract": "N/A"},
        "arc_easy": {"alias": "arc_easy", "acc,none": 0.5, "acc_stderr,none": 0.05, "sample_len": 10},
    }  # fmt: skip
    assert benchmarks.readable_results(raw) == {
        "gsm8k": {"exact_match/strict-match": 0.25, "exact_match_stderr/strict-match": 0.1,
                  "exact_match/flexible-extract": 0.5},
        "arc_easy": {"acc": 0.5, "acc_stderr": 0.05},
    }  # fmt: skip


@pytest.fixture
def no_loading(monkeypatch):
    """Fails a check that builds an lm-eval model or task, or loads a model or dataset."""
    import datasets
    import transformers
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.models.huggingface import HFLM

    def forbidden(*a, **k):
        raise AssertionError("a model, task or dataset was loaded by a check")

    monkeypatch.setattr(HFLM, "__init__", forbidden)
    monkeypatch.setattr(ConfigurableTask, "__init__", forbidden)
    monkeypatch.setattr(datasets, "load_dataset", forbidden)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", forbidden)
    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", forbidden)


def _error(tasks, include_path) -> str:
    with pytest.raises(UsageError) as e:
        benchmarks.check_tasks(tasks, include_path)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_check_tasks_errors_before_anything_loads(no_loading, tmp_path, monkeypatch):
    folder = _write_task(tmp_path / "tasks", _docs())
    benchmarks.check_tasks([TASK], str(folder))  # a good local task passes offline

    message = _error([TASK + "x"], str(folder))
    assert message.startswith("eval.lm_eval.tasks:") and f"'{TASK}x'" in message
    assert f"close matches: {TASK}" in message
    message = _error(["helaswag"], None)
    assert "'helaswag'" in message and "close matches: hellaswag" in message

    message = _error(["hellaswag"], None)
    assert message.startswith("eval.lm_eval.tasks: task 'hellaswag' needs the network")
    assert "Rowan/hellaswag" in message and "eval.lm_eval.include_path=<folder of task YAMLs>" in message
    message = _error([TASK, "hellaswag"], str(folder))  # the local one is fine, the hub one is not
    assert "task 'hellaswag' needs the network" in message

    missing = tmp_path / "no_such_folder"
    message = _error([TASK], str(missing))
    assert message == f"eval.lm_eval.include_path={missing} does not exist; give a folder of lm-eval task YAMLs"
    assert "is a file" in _error([TASK], str(folder / f"{TASK}.yaml"))
    assert "non-empty list" in _error([], None)


def test_check_tasks_follows_groups_and_the_cache(no_loading, tmp_path, monkeypatch):
    """A group of the user's folder listing a local task and a hub task fails on the hub one; the hub task passes
    once `datasets` has it cached, or when the hub is on."""
    folder = _write_task(tmp_path / "tasks", _docs())
    (folder / "group.yaml").write_text(yaml.safe_dump({"group": "my_group", "task": [TASK, "hellaswag"]}))
    message = _error(["my_group"], str(folder))
    assert message.startswith("eval.lm_eval.tasks: task 'hellaswag' (of 'my_group') needs the network")

    (Path(os.environ["HF_DATASETS_CACHE"]) / "Rowan___hellaswag").mkdir(parents=True)
    benchmarks.check_tasks(["my_group"], str(folder))
    (Path(os.environ["HF_DATASETS_CACHE"]) / "Rowan___hellaswag").rmdir()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    with socket.socket() as hub:  # the hub's endpoint: a listening port on this machine (nothing is downloaded)
        hub.bind(("127.0.0.1", 0))
        hub.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{hub.getsockname()[1]}")
        benchmarks.check_tasks(["my_group", "hellaswag"], str(folder))


def test_a_hub_task_on_a_machine_without_network_fails_before_training(no_loading, tmp_path, monkeypatch):
    """No offline switch set, but the hub's endpoint refuses connections: a task that would download fails the
    check in one line (before any model trains), and a local task never asks the endpoint."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    message = _error(["hellaswag"], None)
    assert message.startswith(f"eval.lm_eval.tasks: task 'hellaswag' needs the network (dataset_path=Rowan/hellaswag "
                              f"is a hub dataset, not in the local HF cache) and the hub cannot be reached "
                              f"(http://127.0.0.1:{port}: ")  # fmt: skip
    folder = _write_task(tmp_path / "tasks", _docs())
    monkeypatch.setattr(benchmarks.socket, "create_connection", None)  # asking would raise TypeError
    benchmarks.check_tasks([TASK], str(folder))


def test_relative_data_files_resolve_against_the_working_directory(no_loading, tmp_path, monkeypatch):
    """The example folder's YAML names its data file relative to the repository root: it passes from there, and
    elsewhere the error says which file and where it looked."""
    monkeypatch.chdir(REPO)
    benchmarks.check_tasks([TASK], str(TASKS_DIR))
    monkeypatch.chdir(tmp_path)
    message = _error([TASK], str(TASKS_DIR))
    assert message == (
        f"eval.lm_eval.tasks: task '{TASK}' cannot load its data: data_files test=tests/eval/lm_eval_tasks/"
        f"{TASK}.jsonl does not exist (datasets resolves a relative path against the working directory "
        f"{tmp_path}, not the YAML's folder)"
    )
