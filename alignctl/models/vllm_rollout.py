"""Sampling through vLLM (model.rollout=vllm for the online trainers, through TRL; eval.rollout=vllm for eval's
samples, here): what it needs, checked before anything loads, and row-seeded sampling of a saved model directory.

vLLM draws with its own random numbers, so its completions differ from the transformers sampler's for the same
eval.seed; each completion still has its own seed (one SamplingParams per row, seeded from (eval.seed, row)), so the
samples do not depend on how vLLM batches them. Only eval's main samples (reward, win rates, KL, the judges) come
from vLLM; best-of-n, pass@k on extra splits, the curve and the export keep the transformers sampler. The run's
config.yaml records which sampler drew them (eval.rollout).
"""

from __future__ import annotations

import gc
import importlib.util
from pathlib import Path
from typing import Any

from alignctl.errors import UsageError
from alignctl.lazy import torch

# TRL 1.16's accepted vLLM versions (trl/import_utils.py)
VLLM_REQUIREMENT = "vllm>=0.22,<=0.31"
# eval shares the GPU with nothing else, but two models load one after another: leave room for the second
EVAL_GPU_MEMORY_UTILIZATION = 0.45


def check_vllm(field: str) -> None:
    """`field`=vllm needs a CUDA GPU and the vllm package: one UsageError line naming the field otherwise."""
    if not torch.cuda.is_available():
        raise UsageError(f"{field}=vllm needs a CUDA GPU and there is none; use {field}=transformers")
    if importlib.util.find_spec("vllm") is None:
        raise UsageError(f'{field}=vllm needs the vllm package (pip install "{VLLM_REQUIREMENT}", the versions TRL '
                         f"1.16 accepts); or use {field}=transformers")  # fmt: skip


def row_seed(seed: int, row: int) -> int:
    """The seed of completion `row` (prompt i, sample j: row i * n + j): distinct per row, in vLLM's int range."""
    return (seed * 1_000_003 + row) % (2**31 - 1)


def rows_to_samples(
    prompt_ids: list[list[int]], completions: list[list[list[int]]], finished: list[list[bool]], eos: int
) -> list[tuple[list[int], list[int]]]:
    """vLLM's outputs as sampling's (prompt ids, completion ids up to and including EOS) rows, prompt by prompt.
    A completion vLLM ended on EOS keeps it (it is scored, as the transformers sampler keeps it)."""
    rows = []
    for ids, outs, ends in zip(prompt_ids, completions, finished):
        for out, ended in zip(outs, ends):
            out = list(out)
            if eos in out:
                out = out[: out.index(eos) + 1]
            elif ended:
                out.append(eos)
            rows.append((list(ids), out))
    return rows


def generate_rows(
    model_dir: str | Path,
    tokenizer: Any,
    prompts: list[str],
    n: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    dtype: str = "auto",
    vllm: Any = None,
) -> list[tuple[list[int], list[int]]]:
    """n completions per prompt of the model saved in model_dir, one vLLM request per completion with its own seed
    (ancestral: top_k=0, top_p=1, temperature applied); rows in the prompts' order. `vllm`: the vllm module
    (imported here when None; tests of the plumbing hand in a stand-in with its LLM and SamplingParams)."""
    if vllm is None:
        import vllm  # only where eval.rollout=vllm (checked first: installed, CUDA)

    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    requests = [{"prompt_token_ids": ids} for ids in prompt_ids for _ in range(n)]
    ancestral = dict(n=1, temperature=temperature, top_p=1.0, top_k=0, max_tokens=max_new_tokens)
    params = [vllm.SamplingParams(**ancestral, seed=row_seed(seed, row)) for row in range(len(requests))]
    llm = vllm.LLM(model=str(model_dir), dtype=dtype, seed=seed, gpu_memory_utilization=EVAL_GPU_MEMORY_UTILIZATION)
    try:
        outputs = llm.generate(requests, sampling_params=params, use_tqdm=False)
    finally:
        del llm  # the next model needs the memory
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    completions = [[list(o.outputs[0].token_ids)] for o in outputs]
    finished = [[o.outputs[0].finish_reason == "stop"] for o in outputs]
    per_row_prompts = [ids for ids in prompt_ids for _ in range(n)]
    return rows_to_samples(per_row_prompts, completions, finished, tokenizer.eos_token_id)


def sample_rows_vllm(model_dir: str | Path, tokenizer: Any, prompts: list[str], n: int, max_new_tokens: int,
                     temperature: float, seed: int, dtype: str = "auto", vllm: Any = None) -> Any:
    """sampling.sample_rows' result (prompts repeated n times, decoded completions, the padded batch to score),
    drawn by vLLM from the model saved in model_dir."""
    # deferred: sampling imports transformers, and check_vllm runs in the config checks, before any heavy import
    from alignctl.models.sampling import samples_from_rows

    rows = generate_rows(model_dir, tokenizer, prompts, n, max_new_tokens, temperature, seed, dtype, vllm)
    return samples_from_rows(tokenizer, prompts, n, rows)
