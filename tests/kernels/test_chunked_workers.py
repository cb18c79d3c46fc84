"""impl="chunked" with several CPU workers (one per intra-op thread, each folding whole vocabulary chunks): values and
gradients against the reference, results independent of the schedule, errors, inference mode, and no tile-sized
allocation inside the tile loop (the profiler behind the memory figures only sees the calling thread)."""

from __future__ import annotations

import pytest
import torch

from alignctl.kernels import chunked, token_logprobs_and_divergence

from ._helpers import (
    DIV_IDS,
    DIVERGENCES,
    assert_grads_close,
    assert_outputs_close,
    make_case,
    run_map,
    stable_seed,
)

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# 37 rows x 301 columns in 16 x 64 tiles: 5 vocabulary chunks (the last one ragged) for 3 workers
AWKWARD = dict(row_chunk=16, vocab_chunk=64)
WORKERS = 3


@pytest.fixture
def workers():
    """Several workers (the conftest default is one intra-op thread, which runs the chunks inline)."""
    torch.set_num_threads(WORKERS)
    yield WORKERS
    torch.set_num_threads(1)


def _compare(case, dtype, **kw):
    got = run_map(case, "chunked", **AWKWARD, **kw)
    want = run_map(case, "reference", **kw)
    assert_outputs_close(got[0], want[0], dtype)
    assert_grads_close(got[1], want[1], dtype, "grad hidden")
    assert_grads_close(got[2], want[2], dtype, "grad weight")
    if want[3] is not None:
        assert_grads_close(got[3], want[3], dtype, "grad bias")
    return got


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).split(".")[-1])
@pytest.mark.parametrize(("name", "alpha"), DIVERGENCES, ids=DIV_IDS)
def test_workers_match_reference(workers, name, alpha, dtype):
    case = make_case(dtype=dtype, seed=stable_seed(name, alpha, "workers"))
    _compare(case, dtype, divergence=name, alpha=alpha, temperature=0.8)
    assert torch.get_num_threads() == workers  # restored after each pass


@pytest.mark.parametrize(("name", "alpha"), [("forward_kl", 0.5), ("js", 0.5), ("alpha", 0.3)], ids=str)
def test_workers_with_head_maps_and_wide_logits(workers, name, alpha):
    """Bias, logit scales and softcaps (the factor tile per worker), and logits past float32's exp range."""
    case = make_case(seed=21, bias=True)
    _compare(case, torch.float32, divergence=name, alpha=alpha, logit_scale=1.7, ref_logit_scale=0.8, softcap=5.0,
             ref_softcap=3.0)  # fmt: skip
    _compare(make_case(seed=22, logit_scale=150.0), torch.float32, divergence=name, alpha=alpha)


@pytest.mark.parametrize(("name", "alpha"), DIVERGENCES, ids=DIV_IDS)
def test_forward_does_not_depend_on_workers(name, alpha):
    """Per-chunk statistics merged in chunk order: one worker and three give bitwise the same outputs."""
    case = make_case(seed=3)
    one = run_map(case, "chunked", divergence=name, alpha=alpha, **AWKWARD)[0]
    torch.set_num_threads(WORKERS)
    several = run_map(case, "chunked", divergence=name, alpha=alpha, **AWKWARD)[0]
    for a, b in zip(one, several):
        assert (a is None and b is None) or torch.equal(a, b)


def _reverse_schedule(n_chunks, n_workers, work, on_error=None):
    """All chunks on the calling thread with one intra-op thread (as a worker has), last chunk first: partials
    arrive in the worst order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for ci in reversed(range(n_chunks)):
            work(ci % n_workers, ci)
    finally:
        torch.set_num_threads(threads)


def test_gradients_do_not_depend_on_the_schedule(workers, monkeypatch):
    """The hidden-state gradient adds per-chunk partials in chunk order, whichever worker finishes first."""
    case = make_case(seed=8, bias=True)
    kw = dict(divergence="reverse_kl", softcap=4.0, **AWKWARD)
    threaded = run_map(case, "chunked", **kw)
    monkeypatch.setattr(chunked, "_for_each_chunk", _reverse_schedule)
    reordered = run_map(case, "chunked", **kw)
    for a, b in zip(threaded[1:], reordered[1:]):
        assert torch.equal(a, b)
    for a, b in zip(threaded[0], reordered[0]):
        assert (a is None and b is None) or torch.equal(a, b)


def test_ordered_sum_adds_in_chunk_order():
    """Independent check of the reduction: float32 sums whose value depends on the order of the terms."""
    terms = [torch.tensor([1e8]), torch.tensor([1.0]), torch.tensor([-1e8]), torch.tensor([1.0])]
    in_order = torch.zeros(1)
    for t in terms:
        in_order += t
    total = torch.zeros(1)
    summer = chunked._OrderedSum(total, n_buffers=len(terms))
    for ci in (3, 1, 2, 0):  # finished out of order
        buf = summer.take(ci)
        buf.copy_(terms[ci])
        summer.put(ci, buf)
    assert torch.equal(total, in_order) and float(in_order) == 1.0  # any other order gives 0 or 2


def test_ordered_sum_keeps_a_buffer_for_the_oldest_chunk():
    """A worker claims chunk 0 and is descheduled before it takes a buffer; another worker runs ahead. The last free
    buffer stays for chunk 0, so the one ahead waits (rather than holding every buffer while chunk 0 waits on it)."""
    import threading

    total = torch.zeros(1)
    summer = chunked._OrderedSum(total, n_buffers=2)
    summer.put(1, summer.take(1).fill_(2.0))  # chunk 1 done ahead of chunk 0, parked
    ahead = threading.Thread(target=lambda: summer.put(2, summer.take(2).fill_(4.0)))
    ahead.start()
    ahead.join(timeout=0.2)
    assert ahead.is_alive() and float(total) == 0.0  # chunk 2 waits: the free buffer is chunk 0's
    summer.put(0, summer.take(0).fill_(1.0))  # chunk 0 gets it, and adding it frees the parked buffer
    ahead.join(timeout=10)
    assert not ahead.is_alive() and float(total) == 7.0


def test_worker_error_is_raised_and_threads_restored(workers, monkeypatch):
    calls = []
    real = chunked.TorchTiles.grad_tile

    def failing(self, sl, c0, *a, **k):
        calls.append(c0)
        if c0 == 128:
            raise RuntimeError("boom in chunk 2")
        return real(self, sl, c0, *a, **k)

    monkeypatch.setattr(chunked.TorchTiles, "grad_tile", failing)
    with pytest.raises(RuntimeError, match="boom in chunk 2"):
        run_map(make_case(seed=9), "chunked", divergence="forward_kl", **AWKWARD)
    assert torch.get_num_threads() == workers and 128 in calls


def test_workers_under_inference_mode(workers):
    case = make_case(seed=12)
    args = (case.hidden, case.weight, case.targets, case.ref_hidden, case.ref_weight)
    with torch.no_grad():
        want = token_logprobs_and_divergence(*args, divergence="js", impl="chunked", **AWKWARD)
    with torch.inference_mode():
        got = token_logprobs_and_divergence(*args, divergence="js", impl="chunked", **AWKWARD)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def _tile_sized_allocations(vocab: int) -> int:
    from torch.profiler import ProfilerActivity, profile

    case = make_case(n=37, d=24, vocab=vocab, masked=(), seed=vocab, bias=True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run_map(case, "chunked", divergence="alpha", alpha=0.3, softcap=5.0, **AWKWARD)
    tile_bytes = AWKWARD["row_chunk"] * AWKWARD["vocab_chunk"] * 4
    return sum(1 for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.nbytes() >= tile_bytes)


def test_tile_loop_allocates_no_tile_sized_tensors():
    """Tile buffers are allocated once per pass, so 16 vocabulary chunks make as many tile-sized allocations as 5:
    the work a worker thread does (here inline, where the profiler sees it) allocates only per-token vectors.
    (Vectors of size V and the [chunks, N] statistics stay under one tile's bytes at these sizes.)"""
    few, many = _tile_sized_allocations(301), _tile_sized_allocations(1001)
    assert few > 0 and many == few
