"""The forward kernel: one pass over K with an online softmax; the blend, or |target - blend|
reduced to one partial per program (fabnet.kernels.warp_blend explains the layout)."""

from __future__ import annotations

import triton
import triton.language as tl

from fabnet.kernels.sampling import _acc, _gather, _pixel_block, _taps


@triton.jit
def warp_blend_forward_kernel(
    src_ptr,
    flow_ptr,
    logit_ptr,
    tgt_ptr,
    out_ptr,
    idx_ptr,
    idy_ptr,
    K,
    C,
    Hs,
    Ws,
    H,
    W,
    programs,
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
    HAS_LOGITS: tl.constexpr,
    RESIDUAL: tl.constexpr,
    ALIGN: tl.constexpr,
    BORDER: tl.constexpr,
    LOSS: tl.constexpr,
    F64: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_C: tl.constexpr,
    IDX64: tl.constexpr,
):
    """Blend (out: (B, C, H, W) contiguous) or, with LOSS, per-program sums of |target - blend|
    (out: (B, programs) in the accumulation type; ``programs`` per sample)."""
    program, b, p, hw, pm, h, w, c, cm, m2, f_off, l_off = _pixel_block(
        programs, C, H, W, s_fy, s_fx, s_ly, s_lx, BLOCK, BLOCK_C, IDX64
    )

    zero = _acc(tl.zeros([BLOCK], tl.float32), F64)
    run_max = zero - float("inf")
    denom = zero
    acc = _acc(tl.zeros([BLOCK, BLOCK_C], tl.float32), F64)
    for k in range(K):
        if HAS_LOGITS:
            lk = _acc(tl.load(logit_ptr + b * s_lb + k * s_lk + l_off, mask=pm, other=0), F64)
            new_max = tl.maximum(run_max, lk)
            alpha = tl.exp(run_max - new_max)  # 0 on the first source (run_max = -inf)
            e = tl.exp(lk - new_max)
            run_max = new_max
        else:
            alpha = zero + 1
            e = zero + 1
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
            pm,
            RESIDUAL,
            ALIGN,
            BORDER,
            F64,
            IDX64,
        )
        v00, v01, v10, v11 = _gather(src_ptr + b * s_sb + k * s_sk, c * s_sc, x0, y0, s_sy, s_sx, Hs, Ws, m2, F64)
        # Written out rather than _bilinear(...): as a call, ptxas gave this kernel 61-75 registers
        # on sm_90 instead of 58-64.
        ux = (1 - tx)[:, None]
        uy = (1 - ty)[:, None]
        txx = tx[:, None]
        tyy = ty[:, None]
        val = uy * (ux * v00 + txx * v01) + tyy * (ux * v10 + txx * v11)
        acc = acc * alpha[:, None] + e[:, None] * val
        denom = denom * alpha + e
    blend = acc / tl.where(pm, denom, 1)[:, None]

    if LOSS:
        t = _acc(
            tl.load(tgt_ptr + b * s_tb + c[None, :] * s_tc + (h * s_ty + w * s_tx)[:, None], mask=m2, other=0), F64
        )
        diff = tl.where(m2, tl.abs(t - blend), 0)
        partial = tl.sum(tl.sum(diff, axis=1), axis=0)
        tl.store(out_ptr + program, partial)  # = out[b, program % programs]
    else:
        tl.store(out_ptr + (b * C + c[None, :]) * hw + p[:, None], blend.to(out_ptr.dtype.element_ty), mask=m2)
