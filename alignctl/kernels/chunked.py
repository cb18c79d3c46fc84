"""Chunked implementation: never holds a full [N, V] tensor; the backward recomputes each tile.

Both models' logits are produced tile by tile, `[row_chunk, vocab_chunk]` at a time, by a GEMM into a reused fp32
buffer. The vocabulary is the outer loop (one chunk of the LM head stays in cache while the token blocks stream past)
and every tile is reduced to per-token statistics with an online log-sum-exp. The final per-token state (`RowStats`):

* `lz`, `lr`: log-sum-exp of the policy / reference logits (log-normalisers);
* `hz`: policy entropy;
* `acc`: the divergence (reverse_kl, forward_kl), the mixture's log-sum-exp (alpha) or, for js, the first half of a
  second pass that needs the final `lz` and `lr`;
* `zt`, `rt`: the target's logit, written by the tile that holds it.

Tiles are combined exactly: with tile weights w_t = exp(lse_t - L), H = sum_t w_t (H_t - log w_t) and
KL = sum_t w_t (KL_t + log w_t - log w'_t), every term computed on logits centred by their tile maximum, so precision
does not degrade with the size of the logits.

Each model's head map is applied to its tiles as they come out of the GEMM (`_Side`): u = m (h W^T + b) with
m = logit_scale / T folded into the GEMM operands (the bias through addmm), or, with a softcap c, m = logit_scale and
z = c tanh(u / c) / T elementwise on the tile. The backward recomputes the tiles, turns the policy tile into
dLoss/dlogits in place (times the cap's chain-rule factor (1 - tanh^2) / T, recomputed with the tile) and accumulates
the two gradient GEMMs and the bias gradient (a column sum of the tile); the reference side gets no gradient.
The per-tile work is delegated to a "tile backend": `TorchTiles` below (plain PyTorch, any device) or
`alignctl.kernels.triton.TritonTiles` (the same folds as Triton kernels). Both see only final logits, so every head
map works with both.

On CPU, `TorchTiles` runs the vocabulary chunks on `torch.get_num_threads()` worker threads, each with one intra-op
thread (`_for_each_chunk`): a worker takes the next chunk when it is free, and no op opens a parallel region. With
intra-op threads instead, every GEMM and elementwise op of every tile is a parallel region that ends in a barrier;
when another process holds a core, each barrier waits for the descheduled thread, and the thousands of short regions
of a tiled pass made it several times slower (docs/BENCHMARKS.md, "Kernels"). Results do not depend on which worker
ran which chunk: the forward writes per-chunk statistics that are merged in chunk order, and the backward's
hidden-state gradient adds per-chunk partial products in chunk order (`_OrderedSum`). Every buffer is allocated by
the calling thread (the torch profiler, which the memory benchmark and tests use, only sees that thread's
allocations); the per-tile ops write into them and allocate only per-token vectors.
"""

from __future__ import annotations

import copy
import itertools
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from alignctl.divergences import Divergence

from .reference import compute_dtype

# Tuned on a 2-core AMD EPYC (AVX-512, 1 MiB L2 per core, 32 MiB L3) at N=4096, d=256, V=32768, forward + backward,
# one worker per core: 256-512 rows x 1024-2048 columns ran within noise of each other; 512 x 2048 fp32 tiles (4 MiB)
# took the least CPU time single-threaded (0.95 x the six flat GEMMs; see docs/BENCHMARKS.md, "Kernels").
ROW_CHUNK = 512
VOCAB_CHUNK = 2048

_LOW_PRECISION = (torch.float16, torch.bfloat16)
# torch.mm(..., out_dtype=torch.float32) from fp16/bf16 operands (CUDA only, torch >= 2.8)
_MM_OUT_DTYPE = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 8)


@dataclass(frozen=True)
class Spec:
    """Static description of one call; `scale`/`softcap` (and `ref_*`) describe each model's head map."""

    kind: str  # "none", "reverse_kl", "forward_kl", "js" or "alpha"
    alpha: float
    has_ref: bool
    temperature: float
    row_chunk: int
    vocab_chunk: int
    scale: float = 1.0
    softcap: float | None = None
    ref_scale: float = 1.0
    ref_softcap: float | None = None

    @staticmethod
    def make(
        divergence: Divergence | None,
        has_ref: bool,
        temperature: float,
        row_chunk: int,
        vocab_chunk: int,
        scale: float = 1.0,
        softcap: float | None = None,
        ref_scale: float = 1.0,
        ref_softcap: float | None = None,
    ) -> Spec:
        kind = divergence.name if (divergence is not None and has_ref) else "none"
        alpha = float(divergence.alpha) if kind == "alpha" else 0.0
        return Spec(
            kind, alpha, has_ref, float(temperature), int(row_chunk), int(vocab_chunk), float(scale),
            None if softcap is None else float(softcap), float(ref_scale),
            None if ref_softcap is None else float(ref_softcap),
        )  # fmt: skip

    def pre_scale(self, ref: bool = False) -> float:
        """The linear factor m of u = m (h W^T + b): logit_scale / temperature, or logit_scale alone when a softcap
        follows (the temperature then divides the capped logits)."""
        scale, cap = (self.ref_scale, self.ref_softcap) if ref else (self.scale, self.softcap)
        return scale if cap is not None else scale / self.temperature


@dataclass
class RowStats:
    """Per-token running statistics, each [N] in the compute dtype (see the module docstring)."""

    lz: torch.Tensor
    hz: torch.Tensor
    lr: torch.Tensor
    mz: torch.Tensor  # running maxima of the policy / reference logits, for backends that fold tile by tile
    mr: torch.Tensor
    acc: torch.Tensor
    acc2: torch.Tensor
    zt: torch.Tensor
    rt: torch.Tensor

    @staticmethod
    def empty(n: int, spec: Spec, dtype: torch.dtype, device: torch.device) -> RowStats:
        def full(value: float) -> torch.Tensor:
            return torch.full((n,), value, dtype=dtype, device=device)

        return RowStats(
            lz=full(-math.inf),
            hz=full(0.0),
            lr=full(-math.inf),
            mz=full(-math.inf),
            mr=full(-math.inf),
            acc=full(-math.inf if spec.kind == "alpha" else 0.0),
            acc2=full(0.0),
            zt=full(0.0),
            rt=full(0.0),
        )


def finalize(st: RowStats, spec: Spec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> logprobs, ref_logprobs, divergence, entropy, aux (the per-token quantity the divergence's gradient needs)."""
    logprobs = st.zt - st.lz
    empty = st.lz.new_zeros(0)
    ref_logprobs = st.rt - st.lr if spec.has_ref else empty
    div = aux = empty
    if spec.kind in ("reverse_kl", "forward_kl"):
        div = aux = st.acc
    elif spec.kind == "alpha":
        a = spec.alpha
        aux = torch.exp(st.acc - (1.0 - a) * st.lz - a * st.lr)  # S = sum_v p^(1-a) q^a
        div = (aux - 1.0) / (a * (a - 1.0))
    elif spec.kind == "js":
        aux = st.acc + math.log(2.0)  # KL(p || m)
        div = aux + st.acc2 + math.log(2.0)
    return logprobs, ref_logprobs, div, st.hz, aux


# --------------------------------------------------------------------------------------------------------------------
# Operands and projections


def _keeps_low_precision(x: torch.Tensor) -> bool:
    """CUDA fp16/bf16 operands stay as they are (GEMM with fp32 output); elsewhere they are widened first."""
    return x.device.type == "cuda" and x.dtype in _LOW_PRECISION and _MM_OUT_DTYPE


def _operand(x: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    """The GEMM operand for `x` (widened to the compute dtype unless kept in low precision), times `scale`."""
    if not _keeps_low_precision(x):
        x = x.to(dtype)
    if scale != 1.0:
        x = x * scale
    return x


def _project(h: torch.Tensor, w: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out[n, c] = h[n, d] @ w[c, d].T, accumulated and stored in out.dtype."""
    if h.dtype == out.dtype:
        return torch.mm(h, w.t(), out=out)
    return torch.mm(h, w.t(), out_dtype=out.dtype, out=out)


def _accumulate(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b with acc in the compute dtype; a is a compute-dtype gradient tile."""
    if b.dtype == acc.dtype:
        acc.addmm_(a, b)
    else:  # CUDA low precision: round the gradient tile to the operands' dtype, accumulate in fp32
        torch.addmm(acc, a.to(b.dtype), b, out_dtype=acc.dtype, out=acc)


def _in_tile(local: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(is the target column in this tile, its clamped local index [n, 1]); no host synchronisation."""
    return (local >= 0) & (local < width), local.clamp(0, width - 1).unsqueeze(1)


def _tile_target(out: torch.Tensor, tile: torch.Tensor, local: torch.Tensor) -> None:
    """out[i] = tile[i, local[i]] where 0 <= local[i] < tile width, else 0 (a target lies in one tile only, so the
    sum over the tiles is exactly its logit)."""
    inside, index = _in_tile(local, tile.shape[1])
    torch.where(inside, tile.gather(1, index).squeeze(1), tile.new_zeros(()), out=out)


class TorchTiles:
    """Per-tile folds in plain PyTorch: fused row-wise softmax plus in-place passes on cache-sized buffers.

    The forward keeps each tile's statistics ([n_vocab_chunks, N] arrays: tile log-sum-exp, tile entropy, tile
    divergence term, target logit) and merges them exactly in one vectorised step at the end of the pass, so a tile
    costs a handful of large ops, no per-token bookkeeping, and chunks can be folded in any order by any worker.
    """

    name = "chunked"
    row_chunk = ROW_CHUNK
    vocab_chunk = VOCAB_CHUNK

    def __init__(self, workers: int | None = None) -> None:
        self._workers = workers  # None: torch.get_num_threads() at call time
        self._bufs: list[torch.Tensor] = []
        self._tile_stats: dict | None = None
        self._coef: dict | None = None

    def workers(self, device: torch.device) -> int:
        """How many threads fold chunks concurrently: the intra-op thread count on CPU, 1 elsewhere."""
        if device.type != "cpu":
            return 1
        return self._workers if self._workers is not None else torch.get_num_threads()

    def for_worker(self, rows: int, cols: int, dtype, device) -> TorchTiles:
        """This backend with its own three [rows, cols] scratch tiles, sharing the statistics and coefficients."""
        view = copy.copy(self)
        view._bufs = [torch.empty((rows, cols), dtype=dtype, device=device) for _ in range(3)]
        return view

    def _buf(self, i: int, n: int, c: int) -> torch.Tensor:
        return self._bufs[i][:n, :c]

    def _rowdot(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """sum_c a[:, c] b[:, c] through the third scratch tile (linalg.vecdot allocates a tile-sized temporary)."""
        n, c = a.shape
        return torch.sum(torch.mul(a, b, out=self._buf(2, n, c)), 1, out=out)

    def end(self) -> None:
        self._bufs = []
        self._tile_stats = self._coef = None

    # ---------------------------------------------------------------------------------------------------- forward
    def start_forward(self, n_rows: int, n_chunks: int, rows: int, cols: int, spec: Spec, dtype, device) -> None:
        names = ["max_z", "ls_z", "h", "zt"]
        if spec.has_ref:
            names += ["max_r", "ls_r", "rt"]
        names += {"reverse_kl": ["kl"], "forward_kl": ["kl"], "alpha": ["lse_x"], "js": ["js_p", "js_q"]}.get(
            spec.kind, []
        )
        self._tile_stats = {k: torch.empty((n_chunks, n_rows), dtype=dtype, device=device) for k in names}

    @staticmethod
    def _softmax_centre(
        x: torch.Tensor, out: torch.Tensor, x_max: torch.Tensor, log_s: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """out = softmax(x) over the tile's columns; x is centred in place (x -= max).

        Writes the tile's log-sum-exp as two parts, x_max (exact) and log S with S = sum exp(x - max) (the largest
        probability is exactly exp(0) / S); returns (out, log S). Centred logits keep the later dot products well
        conditioned however large the logits are, and the split keeps the tile weights accurate (see finish_fold).
        """
        torch.softmax(x, 1, out=out)
        torch.amax(x, 1, out=x_max)
        torch.log(out.amax(1), out=log_s).neg_()
        x.sub_(x_max.unsqueeze(1))
        return out, log_s

    def fold(self, st: RowStats, sl: slice, ci: int, c0: int, z: torch.Tensor, r: torch.Tensor | None, spec: Spec,
             targets: torch.Tensor) -> None:
        n, c = z.shape
        ts = self._tile_stats
        local = targets - c0
        _tile_target(ts["zt"][ci, sl], z, local)
        if r is not None:
            _tile_target(ts["rt"][ci, sl], r, local)
        # pt = softmax of the tile; log pt = z' - log S_z with z' = z - max (z is centred in place)
        p, log_sz = self._softmax_centre(z, self._buf(0, n, c), ts["max_z"][ci, sl], ts["ls_z"][ci, sl])
        h = ts["h"][ci, sl]
        torch.sub(log_sz, self._rowdot(p, z), out=h)  # tile entropy -sum pt log pt
        if r is None:
            return
        q, log_sr = self._softmax_centre(r, self._buf(1, n, c), ts["max_r"][ci, sl], ts["ls_r"][ci, sl])
        if spec.kind == "reverse_kl":  # KL(pt || qt) = E_pt[z' - r'] + log S_r - log S_z
            kl = self._rowdot(p, r).neg_().add_(log_sr).sub_(h)  # E_pt[z'] - log S_z = -h
            ts["kl"][ci, sl] = kl
        elif spec.kind == "forward_kl":  # KL(qt || pt) = E_qt[r' - z'] - log S_r + log S_z
            self._rowdot(q, r.sub_(z), out=ts["kl"][ci, sl])
            ts["kl"][ci, sl] += log_sz - log_sr
        elif spec.kind == "alpha":  # log-sum-exp of the mixture (1 - a) z + a r, computed on the centred tiles
            mix = torch.lerp(z, r, spec.alpha, out=q)
            lse_x = ts["lse_x"][ci, sl]
            _, log_sx = self._softmax_centre(mix, p, lse_x, torch.empty_like(lse_x))
            lse_x += log_sx + (1.0 - spec.alpha) * ts["max_z"][ci, sl] + spec.alpha * ts["max_r"][ci, sl]

    @staticmethod
    def _log_weights(x_max: torch.Tensor, log_s: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """log w_t = lse_t - L for the tiles [n_chunks, N], with L = logsumexp_t lse_t written to `out` [N].

        Computed relative to the largest tile maximum M (exact differences of logits), never from the rounded
        absolute log-sum-exps: with logits in the hundreds, those carry an absolute error of ~eps |z| that the weights
        would turn into a relative error, which the divergence's merge multiplies by terms as large as the logits.
        """
        big = x_max.amax(0)
        rel = (x_max - big).add_(log_s)  # lse_t - M
        rel_total = torch.logsumexp(rel, 0)
        torch.add(big, rel_total, out=out)
        return rel.sub_(rel_total)

    def finish_fold(self, st: RowStats, spec: Spec) -> None:
        """Exact merge of the per-tile statistics: tile weights w_t = exp(lse_t - L) sum to 1 over the tiles."""
        ts = self._tile_stats
        torch.sum(ts["zt"], 0, out=st.zt)  # one nonzero term per token
        log_wz = self._log_weights(ts["max_z"], ts["ls_z"], st.lz)
        wz = log_wz.exp()
        st.hz.copy_((wz * (ts["h"] - log_wz)).sum(0))  # H = sum_t w_t (H_t - log w_t)
        if not spec.has_ref:
            return
        torch.sum(ts["rt"], 0, out=st.rt)
        log_wr = self._log_weights(ts["max_r"], ts["ls_r"], st.lr)
        # D = sum over tiles of the tile's share of the divergence, in terms of the (small) log tile weights:
        # reverse_kl: sum_t wz_t (KL(pt || qt) + log wz_t - log wr_t); forward_kl: the same with p and q swapped
        if spec.kind == "reverse_kl":
            st.acc.copy_((wz * (ts["kl"] + log_wz - log_wr)).sum(0))
        elif spec.kind == "forward_kl":
            st.acc.copy_((log_wr.exp() * (ts["kl"] + log_wr - log_wz)).sum(0))
        elif spec.kind == "alpha":
            st.acc.copy_(torch.logsumexp(ts["lse_x"], 0))

    def fold_js(self, st: RowStats, sl: slice, ci: int, z: torch.Tensor, r: torch.Tensor) -> None:
        """Second pass for js: sum p (log p - log(p + q)) and sum q (log q - log(p + q)); log 2 is added at the end."""
        n, c = z.shape
        ts = self._tile_stats
        lp = z.sub_(st.lz[sl].unsqueeze(1))
        lq = r.sub_(st.lr[sl].unsqueeze(1))
        lpq, e = self._buf(0, n, c), self._buf(1, n, c)
        torch.logaddexp(lp, lq, out=lpq)
        torch.exp(lp, out=e)
        self._rowdot(e, lp.sub_(lpq), out=ts["js_p"][ci, sl])
        torch.exp(lq, out=e)
        self._rowdot(e, lq.sub_(lpq), out=ts["js_q"][ci, sl])

    def finish_js(self, st: RowStats) -> None:
        st.acc += self._tile_stats["js_p"].sum(0)
        st.acc2 += self._tile_stats["js_q"].sum(0)

    # --------------------------------------------------------------------------------------------------- backward
    def start_backward(self, saved: dict, grads: dict, spec: Spec, rows: int, cols: int, dtype, device) -> None:
        """Per-token coefficients of dLoss/dz = p (c_row + c_lp log p + c_lq log q') + c_extra e + g_lp onehot(t),
        with log q' = log q (reverse_kl) or log(p + q) (js), and e = q (forward_kl) or p^(1-a) q^a (alpha)."""
        g_lp, g_ent, g_div = grads["lp"], grads["ent"], grads["div"]
        n = saved["lz"].shape[0]
        c_row = torch.zeros(n, dtype=dtype, device=device)
        c_lp = c_lq = c_extra = None
        if g_lp is not None:
            c_row -= g_lp
        if g_ent is not None:  # dH/dz = -p (log p + H)
            c_row -= g_ent * saved["ent"]
            c_lp = -g_ent
        if g_div is not None and spec.kind != "none":
            aux = saved["aux"]
            if spec.kind == "reverse_kl":  # p (log p - log q - D)
                c_row -= g_div * aux
                c_lp = g_div if c_lp is None else c_lp + g_div
                c_lq = -g_div
            elif spec.kind == "forward_kl":  # p - q
                c_row += g_div
                c_extra = -g_div
            elif spec.kind == "alpha":  # -(p^(1-a) q^a - p S) / a
                c_row += g_div * aux / spec.alpha
                c_extra = -g_div / spec.alpha
            elif spec.kind == "js":  # p (log p - log m - KL(p || m)), log m = log(p + q) - log 2
                c_row += g_div * (math.log(2.0) - aux)
                c_lp = g_div if c_lp is None else c_lp + g_div
                c_lq = -g_div

        def col(x):
            return None if x is None else x.unsqueeze(1)

        self._coef = {"row": col(c_row), "lp": col(c_lp), "lq": col(c_lq), "extra": col(c_extra), "g_lp": g_lp,
                      "lz": col(saved["lz"]), "lr": col(saved["lr"])}  # fmt: skip

    def grad_tile(self, sl: slice, c0: int, z: torch.Tensor, r: torch.Tensor | None, spec: Spec,
                  targets: torch.Tensor) -> torch.Tensor:
        """dLoss/dz for one tile (z: policy logits, overwritten; r: reference logits, overwritten, or None)."""
        k = self._coef
        n, c = z.shape
        lp = z.sub_(k["lz"][sl])  # log p
        p = torch.exp(lp, out=self._buf(0, n, c))
        lq = e = None
        if r is not None:
            lq = r.sub_(k["lr"][sl])  # log q
            if spec.kind == "js":
                lq = torch.logaddexp(lp, lq, out=lq)  # log(p + q)
            elif spec.kind == "forward_kl":
                e = lq.exp_()
            elif spec.kind == "alpha":
                e = torch.lerp(lp, lq, spec.alpha, out=lq).exp_()
        if k["lp"] is None:
            p.mul_(k["row"][sl])
        else:
            x = torch.addcmul(k["row"][sl], lp, k["lp"][sl], out=lp)
            if k["lq"] is not None:
                x.addcmul_(lq, k["lq"][sl])
            p.mul_(x)
        if e is not None:
            p.addcmul_(e, k["extra"][sl])
        if k["g_lp"] is not None:
            inside, index = _in_tile(targets - c0, c)
            p.scatter_add_(1, index, torch.where(inside, k["g_lp"][sl], 0.0).unsqueeze(1))
        return p


class _Side:
    """One model's GEMM operands and head map for a sweep: u = m (h W^T + b), then z = c tanh(u / c) / T if capped.

    Widened operands get m folded into h (and b); CUDA fp16/bf16 operands (which would round h m) get it on the fp32
    tile instead (`post`).
    """

    def __init__(self, hidden, weight, bias, m: float, softcap: float | None, temperature: float, dtype) -> None:
        self.low = _keeps_low_precision(hidden)
        self.h = _operand(hidden, dtype, 1.0 if self.low else m)
        self.weight, self.dtype = weight, dtype
        self.post = m if self.low else 1.0
        self.bias = None if bias is None else bias.to(dtype) * m  # [V], in the compute dtype, already times m
        self.softcap, self.temperature = softcap, temperature

    def weight_buffer(self, cols: int) -> torch.Tensor | None:
        """Scratch for one widened chunk of the head, or None where chunks are used as they are."""
        if self.low or self.weight.dtype == self.dtype:
            return None
        return torch.empty((cols, self.weight.shape[1]), dtype=self.dtype, device=self.weight.device)

    def chunk(self, c0: int, c1: int, buf: torch.Tensor | None) -> torch.Tensor:
        """The GEMM operand for rows c0:c1 of the head (widened into `buf` when one is given)."""
        w = self.weight[c0:c1]
        return w if buf is None else buf[: c1 - c0].copy_(w)

    def tile(self, sl: slice, c0: int, c1: int, w: torch.Tensor, out: torch.Tensor, factor: torch.Tensor | None):
        """The final logits z[sl, c0:c1] into `out`; with a softcap and `factor`, also dz/du = (1 - tanh^2) / T."""
        if self.bias is not None and not self.low:
            z = torch.addmm(self.bias[c0:c1], self.h[sl], w.t(), out=out)
        else:
            z = _project(self.h[sl], w, out)
            if self.post != 1.0:
                z.mul_(self.post)
            if self.bias is not None:
                z.add_(self.bias[c0:c1])
        if self.softcap is not None:  # the cap, then the temperature, elementwise on the tile
            t = z.mul_(1.0 / self.softcap).tanh_()
            if factor is not None:
                torch.mul(t, t, out=factor).neg_().add_(1.0).mul_(1.0 / self.temperature)
            z = t.mul_(self.softcap / self.temperature)
        return z


class _Sweep:
    """One pass over the tiles: both models' head maps and the tile grid, vocabulary chunks of token blocks.

    `tiles(ci, scratch)` yields the tiles of vocabulary chunk `ci` as (first column, rows, policy head chunk, policy
    tile, reference tile or None, softcap factor tile or None): fp32 (fp64) views of the worker's reused buffers
    holding the final logits (bias, logit scale, softcap and temperature applied), which the caller may overwrite.
    With `factor` and a policy softcap, the factor tile holds dz/du (the cap's chain-rule factor, over T).
    """

    def __init__(self, hidden, weight, bias, ref_hidden, ref_weight, ref_bias, use_ref: bool, spec: Spec,
                 dtype: torch.dtype, factor: bool = False) -> None:  # fmt: skip
        self.n_rows, self.vocab = hidden.shape[0], weight.shape[0]
        self.R, self.C = min(spec.row_chunk, self.n_rows), min(spec.vocab_chunk, self.vocab)
        self.n_chunks = -(-self.vocab // self.C)
        self.side = _Side(hidden, weight, bias, spec.pre_scale(), spec.softcap, spec.temperature, dtype)
        self.ref_side = None
        if use_ref:
            self.ref_side = _Side(ref_hidden, ref_weight, ref_bias, spec.pre_scale(ref=True), spec.ref_softcap,
                                  spec.temperature, dtype)  # fmt: skip
        self.factor = factor and spec.softcap is not None
        self.dtype, self.device = dtype, hidden.device

    def scratch(self) -> dict:
        """One worker's buffers: logit tiles and widened head chunks."""

        def tile() -> torch.Tensor:
            return torch.empty((self.R, self.C), dtype=self.dtype, device=self.device)

        ref = self.ref_side
        return {
            "z": tile(),
            "r": tile() if ref is not None else None,
            "f": tile() if self.factor else None,
            "w": self.side.weight_buffer(self.C),
            "w_ref": ref.weight_buffer(self.C) if ref is not None else None,
        }

    def tiles(self, ci: int, buf: dict):
        c0 = ci * self.C
        c1 = min(c0 + self.C, self.vocab)
        w = self.side.chunk(c0, c1, buf["w"])
        w_ref = self.ref_side.chunk(c0, c1, buf["w_ref"]) if self.ref_side is not None else None
        for r0 in range(0, self.n_rows, self.R):
            sl = slice(r0, min(r0 + self.R, self.n_rows))
            rows, cols = sl.stop - r0, c1 - c0
            f = buf["f"][:rows, :cols] if buf["f"] is not None else None
            z = self.side.tile(sl, c0, c1, w, buf["z"][:rows, :cols], f)
            r = None
            if self.ref_side is not None:
                r = self.ref_side.tile(sl, c0, c1, w_ref, buf["r"][:rows, :cols], None)
            yield c0, sl, w, z, r, f


def _worker_count(tiles, sweep: _Sweep) -> int:
    """Workers for a sweep: the backend's count, at most one per chunk; one for kept low-precision operands (CUDA)."""
    if sweep.side.low:
        return 1
    return max(1, min(tiles.workers(sweep.device), sweep.n_chunks))


def _for_each_chunk(n_chunks: int, n_workers: int, work, on_error=None) -> None:
    """work(worker, chunk) for every chunk: inline with one worker, else on `n_workers` threads (the calling thread
    is worker 0) that take the next chunk as they become free, each with one intra-op thread while they run.

    The global intra-op thread count is 1 for the duration and restored afterwards (torch has no per-thread setting
    that its GEMMs honour; new threads take the global value at their first op). `on_error` is called when a worker
    fails, to wake workers that wait on each other; the first error is re-raised.
    """
    if n_workers <= 1:
        for ci in range(n_chunks):
            work(0, ci)
        return
    counter = itertools.count()
    failed = threading.Event()
    grad_enabled, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def loop(worker: int) -> None:
        try:
            # grad and inference mode are per thread: the workers run in the caller's
            with torch.inference_mode(inference), torch.set_grad_enabled(grad_enabled):
                for ci in iter(counter.__next__, None):
                    if ci >= n_chunks or failed.is_set():
                        return
                    work(worker, ci)
        except BaseException:
            failed.set()
            if on_error is not None:
                on_error()
            raise

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(n_workers - 1, thread_name_prefix="alignctl-chunks") as pool:
            futures = [pool.submit(loop, worker) for worker in range(1, n_workers)]
            try:
                loop(0)
            finally:
                errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error
    finally:
        torch.set_num_threads(threads)


class _OrderedSum:
    """total += partial_c for the chunks c = 0, 1, 2, ... in chunk order, whichever order workers finish them in, so
    that the sum does not depend on the schedule. Partials are [N, d] buffers from a pool (>= 2) allocated up front;
    a worker that runs ahead parks its partial. The last free buffer is kept for the oldest unadded chunk (`next`):
    a worker can claim that chunk and be descheduled before it takes a buffer while the others park theirs, and
    without the reserve they would hold them all, waiting for it. With it, `next` always gets one, and finishing it
    frees the parked ones."""

    def __init__(self, total: torch.Tensor, n_buffers: int) -> None:
        self.total = total
        self.free = [torch.empty_like(total) for _ in range(n_buffers)]
        self.parked: dict[int, torch.Tensor] = {}
        self.next = 0
        self.failed = False
        self.cond = threading.Condition()

    def take(self, chunk: int) -> torch.Tensor:
        with self.cond:
            self.cond.wait_for(lambda: len(self.free) > (chunk != self.next) or self.failed)
            if self.failed:
                raise RuntimeError("another chunk worker failed")
            return self.free.pop()

    def put(self, chunk: int, partial: torch.Tensor) -> None:
        with self.cond:
            self.parked[chunk] = partial
            while self.next in self.parked:
                done = self.parked.pop(self.next)
                self.total += done
                self.free.append(done)
                self.next += 1
            self.cond.notify_all()

    def fail(self) -> None:
        with self.cond:
            self.failed = True
            self.cond.notify_all()


class TokenStatsFunction(torch.autograd.Function):
    """Autograd Function over all-valid rows (masking and compaction happen in `alignctl.kernels`)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, hidden, weight, bias, targets, ref_hidden, ref_weight, ref_bias, spec: Spec, tiles
    ):
        ctx.set_materialize_grads(False)
        dtype = compute_dtype(hidden)
        operands = (hidden, weight, bias, ref_hidden, ref_weight, ref_bias)
        sweep = _Sweep(*operands, spec.has_ref, spec, dtype)
        st = RowStats.empty(sweep.n_rows, spec, dtype, hidden.device)
        workers = _worker_count(tiles, sweep)
        tiles.start_forward(sweep.n_rows, sweep.n_chunks, sweep.R, sweep.C, spec, dtype, hidden.device)
        try:
            scratch = [(tiles.for_worker(sweep.R, sweep.C, dtype, hidden.device), sweep.scratch())
                       for _ in range(workers)]  # fmt: skip

            def fold(worker: int, ci: int) -> None:
                worker_tiles, buf = scratch[worker]
                for c0, sl, _, z, r, _ in sweep.tiles(ci, buf):
                    worker_tiles.fold(st, sl, ci, c0, z, r, spec, targets[sl])

            def fold_js(worker: int, ci: int) -> None:
                worker_tiles, buf = scratch[worker]
                for _, sl, _, z, r, _ in sweep.tiles(ci, buf):
                    worker_tiles.fold_js(st, sl, ci, z, r)

            _for_each_chunk(sweep.n_chunks, workers, fold)
            tiles.finish_fold(st, spec)
            if spec.kind == "js":  # second pass, with the final log-normalisers
                _for_each_chunk(sweep.n_chunks, workers, fold_js)
                tiles.finish_js(st)
        finally:
            tiles.end()

        logprobs, ref_logprobs, div, entropy, aux = finalize(st, spec)
        # clones: the saved per-token values must not alias outputs a caller may modify in place
        ctx.save_for_backward(
            hidden, weight, bias, targets, ref_hidden, ref_weight, ref_bias, st.lz, st.lr, entropy.clone(), aux.clone()
        )
        ctx.spec, ctx.tiles = spec, tiles
        ctx.mark_non_differentiable(ref_logprobs)
        if spec.kind == "none":
            ctx.mark_non_differentiable(div)
        return logprobs, ref_logprobs, div, entropy

    @staticmethod
    def backward(ctx, g_lp, _g_ref_lp, g_div, g_ent):  # type: ignore[override]
        hidden, weight, bias, targets, ref_hidden, ref_weight, ref_bias, lz, lr, entropy, aux = ctx.saved_tensors
        spec: Spec = ctx.spec
        tiles = ctx.tiles
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        if spec.kind == "none":
            g_div = None
        if (g_lp is None and g_div is None and g_ent is None) or not (need_h or need_w or need_b):
            return (None,) * 9

        dtype = compute_dtype(hidden)
        vocab = weight.shape[0]
        grads = {k: g.to(dtype) if g is not None else None for k, g in (("lp", g_lp), ("ent", g_ent), ("div", g_div))}
        saved = {"lz": lz, "lr": lr, "ent": entropy, "aux": aux}
        grad_h = torch.zeros(hidden.shape, dtype=dtype, device=hidden.device) if need_h else None
        # A chunk's rows of dLoss/dW are complete once its token blocks are done: with a head in another dtype
        # they are summed in a per-worker [C, d] buffer in the compute dtype and stored in the head's dtype, so a
        # full-size compute-dtype copy (1 GiB for a 128k x 2048 bf16 head) is never held.
        chunk_grad_w = need_w and weight.dtype != dtype
        grad_w = None
        if need_w:
            grad_w = torch.empty_like(weight) if chunk_grad_w else torch.zeros(weight.shape, dtype=dtype,
                                                                                device=hidden.device)
        # u = m (h W^T + b): du/dW carries m already when h was widened and pre-scaled, else (fp16/bf16 operands kept
        # as they are, so also a head in another dtype) it is applied to each chunk's rows
        m_w = spec.pre_scale() if _keeps_low_precision(hidden) else 1.0
        grad_b = torch.zeros(vocab, dtype=dtype, device=hidden.device) if need_b else None
        use_ref = g_div is not None  # only the divergence's gradient involves the reference
        sweep = _Sweep(hidden, weight, bias, ref_hidden, ref_weight, ref_bias, use_ref, spec, dtype, factor=True)
        workers = _worker_count(tiles, sweep)
        h = sweep.side.h
        tiles.start_backward(saved, grads, spec, sweep.R, sweep.C, dtype, hidden.device)
        try:
            scratch = [(tiles.for_worker(sweep.R, sweep.C, dtype, hidden.device), sweep.scratch())
                       for _ in range(workers)]  # fmt: skip
            w_acc = [torch.empty((sweep.C, weight.shape[1]), dtype=dtype, device=hidden.device) if chunk_grad_w
                     else None for _ in range(workers)]  # fmt: skip
            # several workers: each chunk's dLoss/dh in a partial, added in chunk order; one: accumulated in place
            partials = _OrderedSum(grad_h, 2 * workers) if grad_h is not None and workers > 1 else None

            def backward_chunk(worker: int, ci: int) -> None:
                worker_tiles, buf = scratch[worker]
                partial = partials.take(ci) if partials is not None else None
                c0, c1 = ci * sweep.C, min((ci + 1) * sweep.C, vocab)
                gw = None
                if grad_w is not None:
                    gw = w_acc[worker][: c1 - c0].zero_() if chunk_grad_w else grad_w[c0:c1]
                for _, sl, w, z, r, f in sweep.tiles(ci, buf):
                    g = worker_tiles.grad_tile(sl, c0, z, r, spec, targets[sl])  # dLoss/dz, in place of z
                    if f is not None:  # through the softcap: dLoss/du = dLoss/dz (1 - tanh^2) / T
                        g.mul_(f)
                    if partial is not None:
                        torch.mm(g, w, out=partial[sl])
                    elif grad_h is not None:
                        _accumulate(grad_h[sl], g, w)
                    if gw is not None:
                        _accumulate(gw, g.t(), h[sl])
                    if grad_b is not None:
                        grad_b[c0 : c0 + g.shape[1]] += g.sum(0)
                if chunk_grad_w:
                    grad_w[c0:c1].copy_(gw.mul_(m_w) if m_w != 1.0 else gw)
                if partial is not None:
                    partials.put(ci, partial)

            _for_each_chunk(sweep.n_chunks, workers, backward_chunk, partials.fail if partials is not None else None)
        finally:
            tiles.end()

        # u = m (h W^T + b): du/dh and du/db carry m (du/dW: m_w above)
        m = spec.pre_scale()
        if grad_h is not None:
            grad_h = grad_h.mul_(m).to(hidden.dtype)
        if grad_b is not None:
            grad_b = grad_b.mul_(m).to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, None, None, None, None
