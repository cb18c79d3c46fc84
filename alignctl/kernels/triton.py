"""Triton tile backend: the chunked algorithm of `chunked.py` with each per-tile fold in one Triton kernel.

The driver (`chunked.TokenStatsFunction`) is shared: the projections are GEMMs into reused fp32 tiles (cuBLAS on
CUDA, with fp32 output for fp16/bf16 operands), and each tile is then read once by one kernel:

* `_fold_kernel`: folds a policy tile and a reference tile into the per-token running statistics (online
  log-sum-exp within the tile, exact merge with the running state) in a single pass over both tiles;
* `_js_kernel`: the second pass of js, once both log-normalisers are known;
* `_grad_kernel`: overwrites the policy tile with dLoss/dlogits in place, ready for the two gradient GEMMs.

The kernels run on CUDA. With TRITON_INTERPRET=1 set before this module is imported, Triton's interpreter runs them
on CPU tensors (slowly), which is how the tests check them on machines without a GPU.
"""

from __future__ import annotations

import math

import torch

try:
    import triton
    import triton.language as tl

    _IMPORT_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    triton = tl = None
    _IMPORT_ERROR = f"triton is not installed ({exc})"


def _interpreting() -> bool:
    if triton is None:
        return False
    try:
        return bool(triton.knobs.runtime.interpret)
    except AttributeError:  # older Triton
        import os

        return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


# Decided once: the decorators below build interpreted or compiled kernels according to it.
INTERPRET = _interpreting()

_KINDS = {"none": 0, "reverse_kl": 1, "forward_kl": 2, "js": 3, "alpha": 4}
_LOG2 = math.log(2.0)


def unavailable_reason(device: torch.device) -> str | None:
    """None when impl="triton" can run on `device`, else why not."""
    if triton is None:
        return _IMPORT_ERROR
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        if INTERPRET:
            return None
        return "CPU tensors need TRITON_INTERPRET=1 in the environment before alignctl.kernels.triton is imported"
    return f"device type {device.type!r} is not supported"


def available(device: torch.device) -> bool:
    return unavailable_reason(device) is None


if triton is not None:

    @triton.jit
    def _logaddexp(a, b):
        m = tl.maximum(a, b)
        return m + tl.log(tl.exp(a - m) + tl.exp(b - m))

    @triton.jit
    def _fold_kernel(
        z_ptr, r_ptr, stride_z, stride_r, t_ptr,
        mz_ptr, lz_ptr, hz_ptr, mr_ptr, lr_ptr, acc_ptr, zt_ptr, rt_ptr,
        n_rows, n_cols, c0, alpha,
        KIND: tl.constexpr, HAS_REF: tl.constexpr, ACC: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        # BLOCK_R tokens per program; one pass over the tile's columns with an online max per token
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        row_ok = rows < n_rows
        rows_c = tl.minimum(rows, n_rows - 1).to(tl.int64)  # padding rows re-read the last row; never stored
        local = tl.load(t_ptr + rows_c) - c0
        neg_inf = float("-inf")

        # Online per token, all relative to the running maxima so that large logits do not cost precision:
        # s = sum exp(x - m), e_z = sum exp(z - m_z)(z - m_z), d = sum of the divergence's centred log-ratio terms
        m_z = tl.full([BLOCK_R], neg_inf, ACC)
        s_z = tl.zeros([BLOCK_R], ACC)
        e_z = tl.zeros([BLOCK_R], ACC)
        z_t = tl.zeros([BLOCK_R], ACC)
        m_r = tl.full([BLOCK_R], neg_inf, ACC)
        s_r = tl.zeros([BLOCK_R], ACC)
        r_t = tl.zeros([BLOCK_R], ACC)
        d = tl.zeros([BLOCK_R], ACC)  # reverse: exp(z-m_z)((z-m_z)-(r-m_r)); forward: exp(r-m_r)((r-m_r)-(z-m_z))
        m_x = tl.full([BLOCK_R], neg_inf, ACC)  # alpha: mixture (1 - a) z + a r
        s_x = tl.zeros([BLOCK_R], ACC)

        for start in range(0, n_cols, BLOCK_C):
            cols = start + tl.arange(0, BLOCK_C)
            col_ok = (cols < n_cols)[None, :]
            hit = cols[None, :] == local[:, None]
            z = tl.load(z_ptr + rows_c[:, None] * stride_z + cols[None, :], mask=col_ok, other=0.0).to(ACC)
            new_m_z = tl.maximum(m_z, tl.max(tl.where(col_ok, z, neg_inf), axis=1))
            scale_z = tl.exp(m_z - new_m_z)
            shift_z = tl.where(s_z > 0, new_m_z - m_z, 0.0)  # how far the centre moved (0 before any column)
            zc = z - new_m_z[:, None]
            ez = tl.where(col_ok, tl.exp(zc), 0.0)
            e_z = scale_z * (e_z - s_z * shift_z) + tl.sum(ez * zc, axis=1)
            z_t += tl.sum(tl.where(hit, z, 0.0), axis=1)
            if HAS_REF:
                r = tl.load(r_ptr + rows_c[:, None] * stride_r + cols[None, :], mask=col_ok, other=0.0).to(ACC)
                new_m_r = tl.maximum(m_r, tl.max(tl.where(col_ok, r, neg_inf), axis=1))
                scale_r = tl.exp(m_r - new_m_r)
                shift_r = tl.where(s_r > 0, new_m_r - m_r, 0.0)
                rc = r - new_m_r[:, None]
                er = tl.where(col_ok, tl.exp(rc), 0.0)
                r_t += tl.sum(tl.where(hit, r, 0.0), axis=1)
                if KIND == 1:
                    d = scale_z * (d + s_z * (shift_r - shift_z)) + tl.sum(ez * (zc - rc), axis=1)
                if KIND == 2:
                    d = scale_r * (d + s_r * (shift_z - shift_r)) + tl.sum(er * (rc - zc), axis=1)
                if KIND == 4:
                    x = z + alpha * (r - z)
                    new_m_x = tl.maximum(m_x, tl.max(tl.where(col_ok, x, neg_inf), axis=1))
                    s_x = s_x * tl.exp(m_x - new_m_x) + tl.sum(
                        tl.where(col_ok, tl.exp(x - new_m_x[:, None]), 0.0), axis=1
                    )
                    m_x = new_m_x
                s_r = s_r * scale_r + tl.sum(er, axis=1)
                m_r = new_m_r
            s_z = s_z * scale_z + tl.sum(ez, axis=1)
            m_z = new_m_z

        # merge this tile (log-sum-exp, entropy, divergence) into the running per-token state, which describes the
        # columns seen so far renormalised; log-weights of the old part are 0 (not -inf) before the first tile.
        # The running log-sum-exp is kept as a maximum (mz, exact) plus a log-sum relative to it (lz), so that the
        # log-weights are differences of logits and small numbers, not of two rounded log-sum-exps in the hundreds
        # (whose absolute error the divergence's merge would multiply by terms as large as the logits).
        in_tile = (local >= 0) & (local < n_cols)
        log_s_z = tl.log(s_z)
        mz = tl.load(mz_ptr + rows, mask=row_ok, other=0.0)
        new_mz = tl.maximum(mz, m_z)
        old_z = (mz - new_mz) + tl.load(lz_ptr + rows, mask=row_ok, other=0.0)  # -inf before the first tile
        tile_z = (m_z - new_mz) + log_s_z
        new_lz = _logaddexp(old_z, tile_z)
        wa_z = tl.exp(old_z - new_lz)
        la_z = tl.where(old_z > neg_inf, old_z - new_lz, 0.0)
        lb_z = tile_z - new_lz
        wb_z = tl.exp(lb_z)
        hz = tl.load(hz_ptr + rows, mask=row_ok, other=0.0)
        h_t = log_s_z - e_z / s_z  # tile entropy
        tl.store(hz_ptr + rows, wa_z * (hz - la_z) + wb_z * (h_t - lb_z), mask=row_ok)
        tl.store(mz_ptr + rows, new_mz, mask=row_ok)
        tl.store(lz_ptr + rows, new_lz, mask=row_ok)
        tl.store(zt_ptr + rows, z_t, mask=row_ok & in_tile)
        if HAS_REF:
            log_s_r = tl.log(s_r)
            mr = tl.load(mr_ptr + rows, mask=row_ok, other=0.0)
            new_mr = tl.maximum(mr, m_r)
            old_r = (mr - new_mr) + tl.load(lr_ptr + rows, mask=row_ok, other=0.0)
            tile_r = (m_r - new_mr) + log_s_r
            new_lr = _logaddexp(old_r, tile_r)
            la_r = tl.where(old_r > neg_inf, old_r - new_lr, 0.0)
            lb_r = tile_r - new_lr
            tl.store(mr_ptr + rows, new_mr, mask=row_ok)
            tl.store(lr_ptr + rows, new_lr, mask=row_ok)
            tl.store(rt_ptr + rows, r_t, mask=row_ok & in_tile)
            if KIND == 1:  # KL(p || q) of the columns so far: weights of p, plus log-weight differences
                acc = tl.load(acc_ptr + rows, mask=row_ok, other=0.0)
                kl_t = d / s_z - log_s_z + log_s_r
                acc = wa_z * (acc + la_z - la_r) + wb_z * (kl_t + lb_z - lb_r)
                tl.store(acc_ptr + rows, acc, mask=row_ok)
            if KIND == 2:  # KL(q || p), weights of q
                acc = tl.load(acc_ptr + rows, mask=row_ok, other=0.0)
                kl_t = d / s_r - log_s_r + log_s_z
                acc = tl.exp(old_r - new_lr) * (acc + la_r - la_z) + tl.exp(lb_r) * (kl_t + lb_r - lb_z)
                tl.store(acc_ptr + rows, acc, mask=row_ok)
            if KIND == 4:  # log-sum-exp of the mixture
                acc = tl.load(acc_ptr + rows, mask=row_ok, other=0.0)
                tl.store(acc_ptr + rows, _logaddexp(acc, m_x + tl.log(s_x)), mask=row_ok)

    @triton.jit
    def _js_kernel(
        z_ptr, r_ptr, stride_z, stride_r, lz_ptr, lr_ptr, acc_ptr, acc2_ptr, n_rows, n_cols,
        ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        # sum p (log p - log(p + q)) and sum q (log q - log(p + q)) over the tile; log 2 is added by the caller
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        row_ok = rows < n_rows
        rows_c = tl.minimum(rows, n_rows - 1).to(tl.int64)
        lz = tl.load(lz_ptr + rows_c)
        lr = tl.load(lr_ptr + rows_c)
        kp = tl.zeros([BLOCK_R], ACC)
        kq = tl.zeros([BLOCK_R], ACC)
        for start in range(0, n_cols, BLOCK_C):
            cols = start + tl.arange(0, BLOCK_C)
            col_ok = (cols < n_cols)[None, :]
            z = tl.load(z_ptr + rows_c[:, None] * stride_z + cols[None, :], mask=col_ok, other=0.0).to(ACC)
            r = tl.load(r_ptr + rows_c[:, None] * stride_r + cols[None, :], mask=col_ok, other=0.0).to(ACC)
            lp = z - lz[:, None]
            lq = r - lr[:, None]
            lpq = _logaddexp(lp, lq)
            kp += tl.sum(tl.where(col_ok, tl.exp(lp) * (lp - lpq), 0.0), axis=1)
            kq += tl.sum(tl.where(col_ok, tl.exp(lq) * (lq - lpq), 0.0), axis=1)
        tl.store(acc_ptr + rows, tl.load(acc_ptr + rows, mask=row_ok, other=0.0) + kp, mask=row_ok)
        tl.store(acc2_ptr + rows, tl.load(acc2_ptr + rows, mask=row_ok, other=0.0) + kq, mask=row_ok)

    @triton.jit
    def _grad_kernel(
        z_ptr, r_ptr, stride_z, stride_r, t_ptr, lz_ptr, lr_ptr, ent_ptr, aux_ptr,
        g_lp_ptr, g_ent_ptr, g_div_ptr, n_rows, n_cols, c0, alpha, log2,
        KIND: tl.constexpr, HAS_G_LP: tl.constexpr, HAS_G_ENT: tl.constexpr, HAS_G_DIV: tl.constexpr,
        ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        # Overwrites one [BLOCK_R, BLOCK_C] block of the policy tile with dLoss/dz
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        row_ok = rows < n_rows
        rows_c = tl.minimum(rows, n_rows - 1).to(tl.int64)
        ok = row_ok[:, None] & (cols < n_cols)[None, :]
        z_ptrs = z_ptr + rows_c[:, None] * stride_z + cols[None, :]
        z = tl.load(z_ptrs, mask=ok, other=0.0).to(ACC)
        lp = z - tl.load(lz_ptr + rows_c)[:, None]
        p = tl.exp(lp)
        g = tl.zeros([BLOCK_R, BLOCK_C], ACC)
        if HAS_G_LP:  # d log p_t / dz = onehot(t) - p
            local = tl.load(t_ptr + rows_c) - c0
            hit = (cols[None, :] == local[:, None]).to(ACC)
            g += tl.load(g_lp_ptr + rows_c)[:, None] * (hit - p)
        if HAS_G_ENT:  # dH/dz = -p (log p + H)
            g -= tl.load(g_ent_ptr + rows_c)[:, None] * p * (lp + tl.load(ent_ptr + rows_c)[:, None])
        if HAS_G_DIV:
            g_div = tl.load(g_div_ptr + rows_c)[:, None]
            aux = tl.load(aux_ptr + rows_c)[:, None]
            r = tl.load(r_ptr + rows_c[:, None] * stride_r + cols[None, :], mask=ok, other=0.0).to(ACC)
            lq = r - tl.load(lr_ptr + rows_c)[:, None]
            if KIND == 1:  # p (log p - log q - KL)
                g += g_div * p * (lp - lq - aux)
            if KIND == 2:  # p - q
                g += g_div * (p - tl.exp(lq))
            if KIND == 3:  # p (log p - log m - KL(p || m))
                g += g_div * p * (lp - _logaddexp(lp, lq) + log2 - aux)
            if KIND == 4:  # -(p^(1-a) q^a - p S) / a
                g -= (g_div / alpha) * (tl.exp(lp + alpha * (lq - lp)) - p * aux)
        tl.store(z_ptrs, g, mask=ok)


# Tile shapes ([row_chunk, vocab_chunk]) and kernel blocks ([BLOCK_R, BLOCK_C]). On CUDA: large tiles for cuBLAS (two
# fp32 [2048, 8192] tiles are 128 MiB) and small register blocks; not tuned on hardware yet. In the interpreter every
# op is a numpy call, so few, wide programs are fastest.
CUDA_CONFIG = {"row_chunk": 2048, "vocab_chunk": 8192, "fold_block": (4, 1024), "grad_block": (8, 512)}
INTERPRET_CONFIG = {"row_chunk": 256, "vocab_chunk": 1024, "fold_block": (64, 256), "grad_block": (64, 256)}


def _acc_type(t: torch.Tensor):
    return tl.float64 if t.dtype == torch.float64 else tl.float32


class TritonTiles:
    """Tile backend with the folds in Triton kernels (same interface as `chunked.TorchTiles`)."""

    name = "triton"

    def __init__(self, device: torch.device) -> None:
        cfg = CUDA_CONFIG if (device.type == "cuda" and not INTERPRET) else INTERPRET_CONFIG
        self.row_chunk, self.vocab_chunk = cfg["row_chunk"], cfg["vocab_chunk"]
        self.fold_block, self.grad_block = cfg["fold_block"], cfg["grad_block"]

    # The kernels need no scratch tiles and merge each tile into the running statistics themselves, so the chunks are
    # folded in order by one worker (the GPU runs each kernel in parallel).
    def workers(self, device: torch.device) -> int:
        return 1

    def for_worker(self, rows, cols, dtype, device) -> TritonTiles:
        return self

    def start_forward(self, n_rows, n_chunks, rows, cols, spec, dtype, device) -> None:
        pass

    def finish_fold(self, st, spec) -> None:
        """The folds keep each log-normaliser as a running maximum plus a log-sum relative to it: add them up."""
        st.lz += st.mz
        if spec.has_ref:
            st.lr += st.mr

    def start_backward(self, saved: dict, grads: dict, spec, rows, cols, dtype, device) -> None:
        self._saved, self._grads = saved, grads

    def end(self) -> None:
        self._saved = self._grads = None

    def fold(self, st, sl: slice, ci: int, c0: int, z: torch.Tensor, r: torch.Tensor | None, spec, targets) -> None:
        n, c = z.shape
        br, bc = self.fold_block
        has_ref = r is not None
        r_arg = r if has_ref else z
        _fold_kernel[(triton.cdiv(n, br),)](
            z, r_arg, z.stride(0), r_arg.stride(0), targets,
            st.mz[sl], st.lz[sl], st.hz[sl], st.mr[sl], st.lr[sl], st.acc[sl], st.zt[sl], st.rt[sl],
            n, c, c0, spec.alpha,
            KIND=_KINDS[spec.kind], HAS_REF=has_ref, ACC=_acc_type(z), BLOCK_R=br, BLOCK_C=bc,
        )  # fmt: skip

    def fold_js(self, st, sl: slice, ci: int, z: torch.Tensor, r: torch.Tensor) -> None:
        n, c = z.shape
        br, bc = self.fold_block
        _js_kernel[(triton.cdiv(n, br),)](
            z, r, z.stride(0), r.stride(0), st.lz[sl], st.lr[sl], st.acc[sl], st.acc2[sl], n, c,
            ACC=_acc_type(z), BLOCK_R=br, BLOCK_C=bc,
        )  # fmt: skip

    def finish_js(self, st) -> None:
        pass

    def grad_tile(self, sl: slice, c0: int, z: torch.Tensor, r: torch.Tensor | None, spec, targets) -> torch.Tensor:
        saved, grads = self._saved, self._grads
        n, c = z.shape
        br, bc = self.grad_block
        g_lp, g_ent, g_div = (grads[k][sl] if grads[k] is not None else None for k in ("lp", "ent", "div"))
        has_div = g_div is not None and spec.kind != "none" and r is not None
        lz = saved["lz"][sl]
        dummy = lz

        def sliced(key):
            t = saved[key]
            return t[sl] if t.numel() else dummy

        _grad_kernel[(triton.cdiv(n, br), triton.cdiv(c, bc))](
            z, r if r is not None else z, z.stride(0), (r if r is not None else z).stride(0), targets,
            lz, sliced("lr"), saved["ent"][sl], sliced("aux"),
            g_lp if g_lp is not None else dummy, g_ent if g_ent is not None else dummy,
            g_div if has_div else dummy, n, c, c0, spec.alpha, _LOG2,
            KIND=_KINDS[spec.kind], HAS_G_LP=g_lp is not None, HAS_G_ENT=g_ent is not None, HAS_G_DIV=has_div,
            ACC=_acc_type(z), BLOCK_R=br, BLOCK_C=bc,
        )  # fmt: skip
        return z
