"""Sampling that does not depend on how rows are batched: each completion token is drawn by Gumbel-max from
counter-based noise keyed by (seed, step, the completion's row id, its position in the completion), an exact sample
from the same distribution (after temperature), the same on 1 or N processes, in any batch order, with any padding,
on CPU or GPU. The online trainers key rows by their place in the global generation batch
(alignctl.trainers.sampling), eval by (prompt index, sample index) (alignctl.models.sampling.sample_rows).
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


@functools.lru_cache(maxsize=8)
def _columns(n: int, device: torch.device) -> torch.Tensor:
    """j * GOLDEN + GOLDEN for j < n: the column term of `uniforms`' counters plus SplitMix64's first addition
    (int64 addition wraps, so adding it here or in splitmix64 gives the same bits). Built once per vocabulary size."""
    j = torch.arange(n, dtype=torch.int64, device=device)
    return j * _signed(_GOLDEN) + _signed(_GOLDEN)


def _uniform_bits(keys: torch.Tensor, n: int) -> torch.Tensor:
    """[len(keys), n] int64: the top 53 bits of splitmix64(keys[i] + j * GOLDEN), i.e. `splitmix64` and `_shr(., 11)`
    op for op, but in place on one scratch buffer: the sampler runs this over the whole vocabulary for every
    generated token, and the out-of-place chain allocated and wrote ~20 such tensors each time."""
    z = keys[:, None] + _columns(n, keys.device)  # splitmix64's z = x + GOLDEN
    t = torch.empty_like(z)
    for shift, mix in ((30, _MIX1), (27, _MIX2)):  # z = (z ^ (z >>> shift)) * mix
        torch.bitwise_right_shift(z, shift, out=t)
        t &= (1 << (64 - shift)) - 1
        z ^= t
        z *= _signed(mix)
    torch.bitwise_right_shift(z, 31, out=t)  # z ^ (z >>> 31)
    t &= (1 << 33) - 1
    z ^= t
    z >>= 11  # top 53 bits (>>> 11)
    z &= (1 << 53) - 1
    return z


def _uniforms_from_bits(bits: torch.Tensor) -> torch.Tensor:
    u = bits.double()
    u += 0.5
    u *= 2.0**-53
    return u


def uniforms(keys: torch.Tensor, n: int) -> torch.Tensor:
    """[len(keys), n] float64 uniforms in (0, 1), element (i, j) a function of (keys[i], j) alone: the top 53 bits
    of splitmix64(keys[i] + j * GOLDEN), (bits + 0.5) * 2^-53."""
    return _uniforms_from_bits(_uniform_bits(keys, n))


class RowSeededSampler(LogitsProcessor):
    """The last custom logits processor of a sampling generate(): picks each row's next token by Gumbel-max over
    the processed scores / temperature, with noise keyed by (seed, step, first_row + row, position), and leaves only
    that token possible, so generate's own draw takes it whatever its RNG holds. generate applies its temperature
    (and top-k/top-p) after custom processors, where a single possible token stays the only one: the temperature is
    applied here, and top-k/top-p/min-p are refused (RowSeededGeneration)."""

    def __init__(
        self, seed: int, step: int, first_row: int = 0, temperature: float = 1.0, rows: torch.Tensor | None = None
    ) -> None:
        # rows: each batch row's id (a generate call's rows need not be consecutive: eval batches prompts by
        # length); None: first_row, first_row + 1, ... One sampler serves one generate() call.
        self.seed, self.step, self.first_row, self.temperature, self.rows = seed, step, first_row, temperature, rows
        self.start: int | None = None  # prompt length (padding included) when generation began

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        position = input_ids.shape[1] - self.start  # tokens generated so far: the same however prompts are padded
        rows = self.rows if self.rows is not None else torch.arange(scores.shape[0], dtype=torch.int64) + self.first_row
        keys = key(self.seed, self.step, position, rows).to(scores.device)
        # argmax(scores / T + g), g = -log(-log u): computed in place as (scores / T) - log(-log u), which is the same
        # float64 sum bit for bit (x + (-y) == x - y in IEEE arithmetic; x / 1.0 == x), so the same token is drawn
        # as by the out-of-place form, which allocated ~25 [rows, vocab] tensors per generated token
        noise = _uniforms_from_bits(_uniform_bits(keys, scores.shape[1]))
        noise.log_().neg_().log_()  # -g
        total = scores.to(torch.float64, copy=True)  # a copy also of float64 scores: generate may keep them
        if self.temperature != 1.0:
            total /= self.temperature
        choice = total.sub_(noise).argmax(dim=-1)
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
