"""Online sampling that does not depend on how the generation batch is split.

TRL's GRPOTrainer samples each completion with the process's global RNG, so the completions of a step depend on
how many processes share the batch, and on how the rows before it consumed random numbers: 1 process and 2
processes train on different samples. Here each completion token is drawn by Gumbel-max from counter-based noise
keyed by (train.seed, the global step, the completion's row in the global generation batch, its position in the
completion): an exact sample from the same distribution (after temperature and any top-k/top-p), the same on 1 or N
processes, with any padding, on CPU or GPU.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from transformers import LogitsProcessor, LogitsProcessorList

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def _signed(c: int) -> int:
    """A 64-bit constant as the int64 torch stores (two's complement)."""
    return c - (1 << 64) if c >= 1 << 63 else c


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's output function on int64 tensors (multiplication wraps modulo 2^64, as in C on uint64)."""
    z = x + _signed(_GOLDEN)
    z = (z ^ _shr(z, 30)) * _signed(_MIX1)
    z = (z ^ _shr(z, 27)) * _signed(_MIX2)
    return z ^ _shr(z, 31)


def key(*parts: int | torch.Tensor) -> torch.Tensor:
    """One well-mixed int64 key per element from integers (chained SplitMix64)."""
    h = torch.zeros((), dtype=torch.int64)
    for part in parts:
        h = splitmix64(h ^ torch.as_tensor(part, dtype=torch.int64))
    return h


def uniforms(keys: torch.Tensor, n: int) -> torch.Tensor:
    """[len(keys), n] float64 uniforms in (0, 1), element (i, j) a function of (keys[i], j) alone."""
    j = torch.arange(n, dtype=torch.int64, device=keys.device)
    bits = _shr(splitmix64(keys[:, None] + j[None, :] * _signed(_GOLDEN)), 11)  # top 53 bits
    return (bits.double() + 0.5) * 2.0**-53


class RowSeededSampler(LogitsProcessor):
    """The last custom logits processor of a sampling generate(): picks each row's next token by Gumbel-max over
    the processed scores / temperature, with noise keyed by (seed, step, first_row + row, position), and leaves only
    that token possible, so generate's own draw takes it whatever its RNG holds. generate applies its temperature
    (and top-k/top-p) after custom processors, where a single possible token stays the only one: the temperature is
    applied here, and top-k/top-p/min-p are refused (RowSeededGeneration)."""

    def __init__(self, seed: int, step: int, first_row: int, temperature: float = 1.0) -> None:
        self.seed, self.step, self.first_row, self.temperature = seed, step, first_row, temperature
        self.start: int | None = None  # prompt length (padding included) when generation began

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        position = input_ids.shape[1] - self.start  # tokens generated so far: the same however prompts are padded
        rows = torch.arange(scores.shape[0], dtype=torch.int64) + self.first_row
        keys = key(self.seed, self.step, position, rows).to(scores.device)
        gumbel = -torch.log(-torch.log(uniforms(keys, scores.shape[1])))
        choice = (scores.double() / self.temperature + gumbel).argmax(dim=-1)
        only = torch.full_like(scores, float("-inf"))
        return only.scatter_(1, choice[:, None], 0.0)


@contextlib.contextmanager
def row_seeded(model: torch.nn.Module, sampler: RowSeededSampler) -> Iterator[None]:
    """`model.generate` takes `sampler` as its last logits processor while inside."""
    own = model.__dict__.get("generate")  # an instance attribute to put back, if the model had one
    model.generate = functools.partial(model.generate, logits_processor=LogitsProcessorList([sampler]))
    try:
        yield
    finally:
        if own is None:
            del model.generate  # the class's method again
        else:
            model.generate = own


class RowSeededGeneration:
    """Mixin for GRPOTrainer subclasses: completions drawn by RowSeededSampler (see the module docstring)."""

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        # TRL's private per-turn generation step: no public hook hands generate() a logits processor, and this is
        # where the local rows of the global generation batch are known (TRL splits it over processes in contiguous
        # slices, as its own gather in _generate assumes). tests/trainers/test_sampling.py checks TRL still samples
        # through here and that 1 and 2 slices draw the same completions. vLLM samples on its own.
        if self.use_vllm:
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
        g = self.generation_config
        truncated = {"top_k": g.top_k not in (None, 0), "top_p": g.top_p not in (None, 1.0), "min_p": g.min_p is not None}
        if any(truncated.values()):
            raise ValueError(f"row-seeded sampling draws from the full distribution; got {[k for k, v in truncated.items() if v]}")
        first_row = self.accelerator.process_index * len(prompt_ids)
        sampler = RowSeededSampler(self.args.seed, self.state.global_step, first_row, g.temperature or 1.0)
        with row_seeded(self.accelerator.unwrap_model(self.model_wrapped), sampler):
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
