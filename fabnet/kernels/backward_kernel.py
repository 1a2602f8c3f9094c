"""The backward kernel: the blend recomputed, then every gradient asked for; flows, logits and
target gather-only, sources scattered with atomics (fabnet.kernels.warp_blend explains the layout)."""

from __future__ import annotations

import triton
import triton.language as tl

from fabnet.kernels.sampling import (
    _acc,
    _bilinear,
    _gather,
    _pixel_block,
    _scatter,
    _source_weight,
    _taps,
)


@triton.jit
def warp_blend_backward_kernel(
    src_ptr,
    flow_ptr,
    logit_ptr,
    tgt_ptr,
    grad_ptr,
    gsrc_ptr,
    gflow_ptr,
    glogit_ptr,
    gtgt_ptr,
    idx_ptr,
    idy_ptr,
    K,
    C,
    Hs,
    Ws,
    H,
    W,
    programs,
    n_loss,
    s_sb,
    s_sk,
    s_sc,
    s_sy,
    s_sx,
    s_fb,
    s_fk,
    s_fd,
    s_fy,
    s_fx,
    s_lb,
    s_lk,
    s_ly,
    s_lx,
    s_tb,
    s_tc,
    s_ty,
    s_tx,
    s_gb,
    s_gc,
    s_gy,
    s_gx,
    HAS_LOGITS: tl.constexpr,
    RESIDUAL: tl.constexpr,
    ALIGN: tl.constexpr,
    BORDER: tl.constexpr,
    LOSS: tl.constexpr,
    NEED_SRC: tl.constexpr,
    NEED_FLOW: tl.constexpr,
    NEED_LOGIT: tl.constexpr,
    NEED_TGT: tl.constexpr,
    F64: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_C: tl.constexpr,
    IDX64: tl.constexpr,
):
    """Gradients of the blend (grad: (B, C, H, W), strided) or of the loss (LOSS; grad: (B,)).

    NEED_LOGIT implies HAS_LOGITS (the launcher asks for no logit gradient without logits).

    Writes, contiguous and only where asked: gflow (B, K, 2, H, W), glogit (B, K, H, W),
    gtgt (B, C, H, W); adds into gsrc, a zeroed contiguous (B, K, C, Hs, Ws) accumulation buffer.
    """
    program, b, p, hw, pm, h, w, c, cm, m2, f_off, l_off = _pixel_block(
        programs, C, H, W, s_fy, s_fx, s_ly, s_lx, BLOCK, BLOCK_C, IDX64
    )
    zero = _acc(tl.zeros([BLOCK], tl.float32), F64)

    if LOSS:
        # d l1[b] / d blend = grad[b] / (C H W) * sign(blend - target); a zero grad[b] turns the
        # whole program into zero stores.
        scale = _acc(tl.load(grad_ptr + b * s_gb), F64) / n_loss
        active = pm & ((zero + scale) != 0)
    else:
        u = _acc(
            tl.load(grad_ptr + b * s_gb + c[None, :] * s_gc + (h * s_gy + w * s_gx)[:, None], mask=m2, other=0), F64
        )
        # Pixels whose upstream is zero in every channel contribute nothing (NaN != 0 keeps NaNs).
        active = pm & (tl.sum((u != 0).to(tl.int32), axis=1) > 0)
    a2 = active[:, None] & cm[None, :]

    # Softmax statistics from the logits alone (K loads of one value per pixel), so both passes
    # below use final weights.
    run_max = zero - float("inf")
    denom = zero
    if HAS_LOGITS:
        for k in range(K):
            lk = _acc(tl.load(logit_ptr + b * s_lb + k * s_lk + l_off, mask=active, other=0), F64)
            new_max = tl.maximum(run_max, lk)
            denom = denom * tl.exp(run_max - new_max) + tl.exp(lk - new_max)
            run_max = new_max
        denom = tl.where(active, denom, 1)

    blend = _acc(tl.zeros([BLOCK, BLOCK_C], tl.float32), F64)
    if LOSS or NEED_LOGIT:
        # Pass 1: recompute the blend (the L1 sign and the softmax Jacobian need it).
        for k in range(K):
            wk = _source_weight(
                logit_ptr + b * s_lb + k * s_lk, l_off, active, run_max, denom, zero, K, HAS_LOGITS, F64
            )
            x0, y0, tx, ty, dx, dy = _taps(
                flow_ptr + b * s_fb + k * s_fk,
                idx_ptr,
                idy_ptr,
                s_fd,
                f_off,
                h,
                w,
                H,
                W,
                Hs,
                Ws,
                active,
                RESIDUAL,
                ALIGN,
                BORDER,
                F64,
                IDX64,
            )
            v00, v01, v10, v11 = _gather(src_ptr + b * s_sb + k * s_sk, c * s_sc, x0, y0, s_sy, s_sx, Hs, Ws, a2, F64)
            blend += wk[:, None] * _bilinear(v00, v01, v10, v11, tx, ty)

    if LOSS:
        t = _acc(
            tl.load(tgt_ptr + b * s_tb + c[None, :] * s_tc + (h * s_ty + w * s_tx)[:, None], mask=a2, other=0), F64
        )
        diff = blend - t
        u = tl.where(diff > 0, scale, tl.where(diff < 0, -scale, 0))
        u = tl.where(a2, u, 0)
        if NEED_TGT:
            tl.store(gtgt_ptr + (b * C + c[None, :]) * hw + p[:, None], (-u).to(gtgt_ptr.dtype.element_ty), mask=m2)

    # sum_k w_k dL/dw_k = sum_c u_c blend_c: the shared term of the softmax Jacobian.
    weighted = tl.sum(u * blend, axis=1)

    if NEED_FLOW or NEED_LOGIT or NEED_SRC:
        # Pass 2: per source, the sampled values and their derivatives, reduced over channels.
        for k in range(K):
            wk = _source_weight(
                logit_ptr + b * s_lb + k * s_lk, l_off, active, run_max, denom, zero, K, HAS_LOGITS, F64
            )
            x0, y0, tx, ty, dx, dy = _taps(
                flow_ptr + b * s_fb + k * s_fk,
                idx_ptr,
                idy_ptr,
                s_fd,
                f_off,
                h,
                w,
                H,
                W,
                Hs,
                Ws,
                active,
                RESIDUAL,
                ALIGN,
                BORDER,
                F64,
                IDX64,
            )
            if NEED_FLOW or NEED_LOGIT:
                v00, v01, v10, v11 = _gather(
                    src_ptr + b * s_sb + k * s_sk, c * s_sc, x0, y0, s_sy, s_sx, Hs, Ws, a2, F64
                )
                if NEED_LOGIT:
                    dw = tl.sum(u * _bilinear(v00, v01, v10, v11, tx, ty), axis=1)
                    tl.store(
                        glogit_ptr + (b * K + k) * hw + p,
                        (wk * (dw - weighted)).to(glogit_ptr.dtype.element_ty),
                        mask=pm,
                    )
                if NEED_FLOW:
                    ux = (1 - tx)[:, None]
                    uy = (1 - ty)[:, None]
                    txx = tx[:, None]
                    tyy = ty[:, None]
                    d_ix = tl.sum(u * (uy * (v01 - v00) + tyy * (v11 - v10)), axis=1)
                    d_iy = tl.sum(u * (ux * (v10 - v00) + txx * (v11 - v01)), axis=1)
                    g_base = gflow_ptr + (b * K + k) * 2 * hw + p
                    tl.store(g_base, (wk * d_ix * dx).to(gflow_ptr.dtype.element_ty), mask=pm)
                    tl.store(g_base + hw, (wk * d_iy * dy).to(gflow_ptr.dtype.element_ty), mask=pm)
            if NEED_SRC:
                _scatter(gsrc_ptr + (b * K + k) * C * Hs * Ws, c * Hs * Ws, x0, y0, tx, ty, Hs, Ws, wk[:, None] * u, a2)
