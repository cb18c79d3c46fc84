"""Reference log-probs computed once per (reference, data, settings) and shared by every job that needs them.

The jobs of a sweep that share the reference model, tokenizer, data and max_length score the same sequences with
the same frozen model; PreferenceTrainer reads the reference's per-sequence log-probs from this cache instead of
running the reference at every step (a cache hit runs no reference forward at all).

An entry is an artifact of :mod:`alignctl.cache` (kind ``reference-logps``): built atomically under its lock,
checked against its manifest, usable from a read-only cache. It holds ``logps.safetensors``: ``digests`` [M, 16]
uint8, the sorted distinct sequences scored, and ``logps`` [M] float32, the reference's summed completion log-prob
of each. A sequence's digest hashes its token ids and completion mask exactly as the collator feeds them (after
truncation, without padding), so rows are found by content: the same data shuffled, or with labels flipped
(chosen and rejected swapped, as label noise does), shares the entry.

The key (the recipe) holds whatever can change the numbers:

* ``reference``: sha256 of the reference's tensors (names, dtypes, shapes, bytes; a LoRA adapter's excluded when
  the reference is the base with its adapter off) and ``config``: its architecture settings and attention kernel;
* ``sequences``: sha256 of the sorted distinct digests (the tokenized data after truncation, so the tokenizer's
  output and max_length); ``tokenizer`` (its vocabulary), ``max_length`` and ``truncation_mode`` besides, which
  the digests already cover: a conservative key;
* ``kernel`` (fused or naive), ``device`` type (the fused path's implementation follows it) and
  ``mixed_precision`` (accelerate autocasts a prepared model's forward, which the naive path calls).

Objective hyperparameters, the divergence, the seed and the data order are not in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ContextManager

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from alignctl import ranks
from alignctl.cache import cached, canonical_json, write_info
from alignctl.models.scoring import sequence_stats

KIND = "reference-logps"
FILE = "logps.safetensors"
FORMAT = 1  # bump when what an entry means changes
COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")  # TRL's names: DataCollatorForPreference copies them


def _sha256(chunks: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def weights_hash(module: torch.nn.Module, skip: Iterable[str] = ()) -> str:
    """sha256 of every tensor of ``module.state_dict()`` (name, dtype, shape, bytes), by name; tensors whose dotted
    name has a component in ``skip`` (a PEFT model's adapter names) are left out."""
    skip = set(skip)

    def chunks():
        for name, tensor in sorted(module.state_dict().items()):
            if skip & set(name.split(".")):
                continue
            yield f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode()
            yield tensor.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy().tobytes()

    return _sha256(chunks())


def config_hash(config: Any) -> str:
    """sha256 of a transformers config's settings and attention kernel; not its path, library version or pad token
    (TRL sets it on the policy's config; a forward does not read it)."""
    ignored = {"transformers_version", "pad_token_id"}
    settings = {k: v for k, v in config.to_dict().items() if not k.startswith("_") and k not in ignored}
    settings["attn_implementation"] = getattr(config, "_attn_implementation", None)
    return _sha256([json.dumps(settings, sort_keys=True, default=str).encode()])


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 of the tokenizer's vocabulary and special tokens."""
    vocab = sorted(tokenizer.get_vocab().items())
    special = [tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id]
    return _sha256([canonical_json({"vocab": vocab, "special": special}).encode()])


def sequence_digests(batch: dict[str, torch.Tensor]) -> list[bytes]:
    """A 16-byte digest of each row of a collated batch: its real tokens and their completion mask."""
    out = []
    for ids, attention, completion in zip(batch["input_ids"], batch["attention_mask"], batch["completion_mask"]):
        keep = attention.bool()
        h = hashlib.blake2b(digest_size=16)
        h.update(ids[keep].to(torch.int64).cpu().numpy().tobytes())
        h.update(completion[keep].to(torch.uint8).cpu().numpy().tobytes())
        out.append(h.digest())
    return out


def with_reference_logps(
    dataset,
    reference: torch.nn.Module,
    *,
    collate: Callable[[list[dict]], dict[str, torch.Tensor]],
    batch_size: int,
    kernel: str,
    device: torch.device,
    tokenizer: Any,
    settings: dict[str, Any],
    context: Callable[[], ContextManager] = contextlib.nullcontext,
    skip: Iterable[str] = (),
    name: str = "train",
):
    """``dataset`` (tokenized pairs) with the float32 columns ref_chosen_logps / ref_rejected_logps: the reference's
    summed completion log-prob of each row's chosen and rejected sequence, from the cache or computed into it.

    ``collate`` turns rows into the batches the trainer feeds (chosen rows, then rejected); ``context()`` is entered
    around the reference's scoring (a PeftModel's disable_adapter, autocast); ``skip`` names the adapters excluded
    from the weights hash; ``settings`` (max_length, truncation, mixed precision...) join the key. One line on
    stderr says whether the entry was found or computed.
    """
    from datasets import Dataset
    from torch.utils.data import DataLoader

    if not isinstance(dataset, Dataset):
        raise ValueError(f"reference log-probs are precomputed for a map-style Dataset, not {type(dataset).__name__}")
    dataset = dataset.remove_columns([c for c in COLUMNS if c in dataset.column_names])

    def loader():
        return DataLoader(dataset, batch_size=batch_size, collate_fn=collate, shuffle=False)

    chosen, rejected = [], []
    for batch in loader():
        digests = sequence_digests(batch)
        half = len(digests) // 2
        chosen += digests[:half]
        rejected += digests[half:]
    distinct = sorted(set(chosen) | set(rejected))
    recipe = {
        "format": FORMAT,
        "reference": weights_hash(reference, skip),
        "config": config_hash(reference.config),
        "tokenizer": tokenizer_hash(tokenizer),
        "sequences": _sha256(distinct),
        "num_sequences": len(distinct),
        "kernel": kernel,
        "device": torch.device(device).type,
        **settings,
    }
    seconds = None

    def build(out: Path) -> None:
        nonlocal seconds
        start = time.perf_counter()
        index = {d: i for i, d in enumerate(distinct)}
        logps = torch.full((len(distinct),), float("nan"), dtype=torch.float32)
        was_training = reference.training
        reference.eval()  # no dropout (nor gradient checkpointing): the numbers of the frozen reference
        try:
            with torch.no_grad(), context():
                for batch in loader():
                    batch = {k: v.to(device) for k, v in batch.items()}
                    stats = sequence_stats(
                        reference, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], kernel=kernel
                    )
                    rows = torch.tensor([index[d] for d in sequence_digests(batch)])
                    logps[rows] = stats.logps.float().cpu()
        finally:
            reference.train(was_training)
        digests = torch.from_numpy(np.frombuffer(b"".join(distinct), dtype=np.uint8).reshape(-1, 16).copy())
        save_file({"digests": digests, "logps": logps}, str(out / FILE))
        seconds = time.perf_counter() - start
        write_info(out, {"split": name, "rows": len(chosen), "sequences": len(distinct), "seconds": seconds})

    path = cached(KIND, recipe, build, ranks_may_build=True)  # a forward pass and save_file: any rank can
    stored = load_file(str(path / FILE))
    index = {bytes(d): i for i, d in enumerate(stored["digests"].numpy())}
    logps = stored["logps"].numpy()
    if ranks.is_main():  # every rank reads the entry (the first to take its lock builds it); rank 0 says so
        if seconds is None:
            print(f"reference log-probs: cache hit ({path})", file=sys.stderr, flush=True)
        else:
            print(f"reference log-probs: cache miss, computed in {seconds:.1f}s -> {path}", file=sys.stderr,
                  flush=True)  # fmt: skip
    for column, digests in zip(COLUMNS, (chosen, rejected)):
        dataset = dataset.add_column(column, logps[[index[d] for d in digests]])
    return dataset
