"""vLLM sampling (eval.rollout=vllm, model.rollout=vllm): what it needs, checked before anything loads, and the
plumbing from vLLM's outputs to eval's samples. vLLM itself needs CUDA: here it is a stand-in module that records
what alignctl asks and answers from a seeded generator; the real library is exercised on a GPU machine only."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from alignctl.cli import main as cli
from alignctl.errors import UsageError
from alignctl.models import vllm_rollout
from alignctl.models.vllm_rollout import row_seed, rows_to_samples, sample_rows_vllm

EOS = 2


class FakeTokenizer:
    """Characters as token ids (3 + code point); 2 is EOS, 0 padding."""

    eos_token_id, pad_token_id = EOS, 0

    def __call__(self, text):
        return {"input_ids": [3 + ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i - 3) for i in ids if i > 2 or not skip_special_tokens)


def fake_vllm(calls: list):
    """A stand-in for the vllm module: LLM(...).generate answers each request from random.Random(its seed): a few
    lower-case letters, then EOS (finish_reason "stop") or the token budget ("length")."""

    class SamplingParams(SimpleNamespace):
        pass

    class LLM:
        def __init__(self, **kwargs):
            calls.append(("LLM", kwargs))

        def generate(self, requests, sampling_params, use_tqdm):
            calls.append(("generate", requests, sampling_params))
            outputs = []
            for request, params in zip(requests, sampling_params):
                rng = random.Random(params.seed)
                ids = [3 + ord(rng.choice("abcdef")) for _ in range(rng.randint(1, params.max_tokens + 1))]
                ended = len(ids) <= params.max_tokens
                ids = ids[: params.max_tokens]
                if ended:
                    ids.append(EOS)  # vLLM keeps the EOS it stopped on in token_ids
                out = SimpleNamespace(token_ids=tuple(ids), finish_reason="stop" if ended else "length")
                outputs.append(SimpleNamespace(prompt_token_ids=request["prompt_token_ids"], outputs=[out]))
            return outputs

    return SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams)


def test_each_completion_has_its_own_seed_and_comes_back_in_the_prompts_order(tmp_path):
    calls = []
    prompts = ["hi", "a longer prompt", "x"]
    got = sample_rows_vllm(tmp_path, FakeTokenizer(), prompts, n=2, max_new_tokens=5, temperature=0.7, seed=3,
                           dtype="bfloat16", vllm=fake_vllm(calls))  # fmt: skip
    (_, llm_kwargs), (_, requests, params) = calls
    assert llm_kwargs["model"] == str(tmp_path) and llm_kwargs["dtype"] == "bfloat16" and llm_kwargs["seed"] == 3
    assert [r["prompt_token_ids"] for r in requests] == [FakeTokenizer()(p)["input_ids"] for p in prompts for _ in "ab"]
    seeds = [p.seed for p in params]
    assert seeds == [row_seed(3, row) for row in range(6)] and len(set(seeds)) == 6
    assert all((p.n, p.temperature, p.top_p, p.top_k, p.max_tokens) == (1, 0.7, 1.0, 0, 5) for p in params)
    assert got.prompts == [p for p in prompts for _ in "ab"]
    # completion j of prompt i is what the seed of row i * n + j draws (as eval's transformers sampler keys its noise)
    for row, text in enumerate(got.completions):
        one = fake_vllm([]).LLM().generate([{"prompt_token_ids": []}], [params[row]], use_tqdm=False)[0].outputs[0]
        assert text == FakeTokenizer().decode(one.token_ids, skip_special_tokens=True)
    assert len(set(got.completions)) > 1
    # the padded batch holds prompt + completion ids, the completions cut after EOS where vLLM stopped there
    batch = got.batch
    assert batch.input_ids.shape[0] == 6
    for row, (prompt, text) in enumerate(zip(got.prompts, got.completions)):
        real = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        assert FakeTokenizer().decode(real, skip_special_tokens=True) == prompt + text


def test_rows_keep_the_eos_vllm_stopped_on_and_nothing_after_it():
    rows = rows_to_samples([[5, 6], [7]], [[[9, EOS, 9]], [[8, 8]]], [[True], [True]], EOS)
    assert rows == [([5, 6], [9, EOS]), ([7], [8, 8, EOS])]  # stopped on EOS: kept (and added where vLLM dropped it)
    assert rows_to_samples([[5]], [[[8, 8]]], [[False]], EOS) == [([5], [8, 8])]  # hit max_tokens: no EOS


def test_row_seeds_are_distinct_per_row_and_seed():
    seeds = {row_seed(s, r) for s in range(4) for r in range(1000)}
    assert len(seeds) == 4000 and all(0 <= s < 2**31 - 1 for s in seeds)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
@pytest.mark.parametrize("field", ["model.rollout", "eval.rollout"])
def test_vllm_without_a_gpu_is_one_line_before_anything_loads(field, nothing_loads, capsys):
    with pytest.raises(UsageError, match=rf"^{field}=vllm needs a CUDA GPU and there is none; use {field}=transformers$"):
        vllm_rollout.check_vllm(field)
    argv = ["train", f"{field}=vllm"] + (["objective=grpo"] if field == "model.rollout" else [])
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and f"{field}=vllm needs a CUDA GPU" in err


def test_vllm_not_installed_names_the_versions(monkeypatch):
    monkeypatch.setattr(vllm_rollout.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(vllm_rollout.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match=r'^eval.rollout=vllm needs the vllm package \(pip install "vllm>=0.22,<=0.31"'):
        vllm_rollout.check_vllm("eval.rollout")
