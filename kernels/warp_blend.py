"""Triton kernels of the fused warp_blend op, with their launchers.

Semantics (see ``fabnet.ops``): for every output pixel (b, h, w)

    warped_k = bilinear sample of sources[b, k] at grid_k(h, w)        (F.grid_sample)
    blend    = sum_k softmax_k(logits[b, :, h, w]) * warped_k            (equal weights without logits)
    l1[b]    = mean over (c, h, w) of |target - blend|

Shapes: sources (B, K, C, Hs, Ws); flows (B, K, 2, H, W), channel 0 = x, 1 = y; logits
(B, K, H, W); target (B, C, H, W). Every input is read through its own strides (no copies of
permuted inputs); every output is written contiguous.

Layout of the work: one program per block of ``BLOCK`` output pixels of one sample, on a 1-D
grid of ``B * cdiv(H * W, BLOCK)`` programs (sample-major; a 2-D grid would cap B at 65535). A
program holds a (BLOCK, BLOCK_C) tile, all C channels of its pixels, so each source's bilinear
taps and weights are computed once per pixel and reused for every channel. Accumulation is
float32 (float64 for float64 inputs); offsets are int32 when every tensor's fit (``IDX64`` off:
32-bit multiplies, and divisions by W in 32 bits), int64 otherwise. The sampling math follows
csrc/warp_blend_math.h step by step (Axis::to_pixel, clamp_to_border, border_derivative,
keep_near, BilinearWeights); tests/ops/test_pixel_centres.py holds the three kernels to it.

- forward: one pass over K with an online softmax (running max and denominator), so the logits
  are read once; ``warp_blend_l1`` reduces |target - blend| to one partial sum per program,
  written to a (B, programs-per-sample) buffer that the launcher sums in a fixed order: the loss
  is deterministic and the blend never reaches memory.
- backward: recomputes the blend instead of reading a stored one (FlashAttention's
  recompute-instead-of-store). Flows, logits and target gradients are gather-only: each program
  writes only its own pixels. Only when sources require grad are the source gradients scattered,
  with atomics, into a float32 (float64) buffer that the launcher casts once. A sample whose
  upstream gradient is zero (the curriculum back-propagates half of each batch) masks every load
  and atomic off: its programs only write zeros.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Pixels per program and warps. The forward holds a BLOCK x BLOCK_C float32 accumulator plus the
# four tap tiles of one source: 256 x 4 over 8 warps is 4 elements per thread and tile. With 4
# warps (8 per thread) ptxas spilled the float32 blend kernel on sm_80 (96 registers, 16 bytes of
# spill stores, Triton 3.9); with 8 it takes 64 registers and no spills on sm_80 and sm_90
# (test_triton_compile.py compiles and checks every launch). The backward keeps the upstream
# tile and the blend alive across its second pass over K, so it takes 128 pixels over 4 warps
# (80-121 registers for 16/32-bit types, 146-157 for float64; no spills).
FORWARD_BLOCK = 256
FORWARD_WARPS = 8
BACKWARD_BLOCK = 128
BACKWARD_WARPS = 4
# Programs per SM below which a launch takes smaller programs: at (8, 3, 3, 128, 128) the forward
# makes 8 x 64 = 512 programs of 256 pixels, under 4 per SM of an H100's 132. Halving BLOCK and
# num_warps together keeps the pixels per thread, hence the registers, and doubles the programs.
MIN_PROGRAMS_PER_SM = 4
SMALLEST_BLOCK = 64


def _block(pixels: int, block: int) -> int:
    """A power-of-two block no larger than needed: tiny images do not run mostly-masked lanes."""
    return max(16, min(block, triton.next_power_of_2(max(pixels, 1))))


def launch_config(kind: str, batch: int, pixels: int, sms: int | None) -> tuple[int, int]:
    """(BLOCK, num_warps) for a launch over ``batch`` samples of ``pixels`` output pixels.

    The three configs per kernel, largest first: forward (256, 8) / (128, 4) / (64, 2), backward
    (128, 4) / (64, 2). The largest that still gives every SM ``MIN_PROGRAMS_PER_SM`` programs
    is taken; with ``sms`` None (no GPU: the interpreter, compile tests) the largest.
    """
    block, warps = (FORWARD_BLOCK, FORWARD_WARPS) if kind == "forward" else (BACKWARD_BLOCK, BACKWARD_WARPS)
    block = _block(pixels, block)

    def too_few(block):
        return sms and batch * triton.cdiv(pixels, block) < MIN_PROGRAMS_PER_SM * sms

    while too_few(block) and block > SMALLEST_BLOCK and warps > 1:
        block, warps = block // 2, warps // 2
    return block, warps


def _sm_count(t: torch.Tensor) -> int | None:
    if t.device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(t.device).multi_processor_count


def _fits_int32(sources, flows, logits, target, extra_elements: int = 0) -> bool:
    """Whether every offset the kernels form fits in int32 (as csrc/cuda/launch.cuh decides):
    each input's span, each contiguous output, the gathers' reach past a source plane."""
    limit = 2**31 - 1

    def span(t):
        if t is None or t.numel() == 0:
            return 0
        return 1 + sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride()))

    B, K, C, Hs, Ws = sources.shape
    H, W = flows.shape[3], flows.shape[4]
    reach = 2 * (abs(sources.stride(3)) + abs(sources.stride(4)))
    spans = (
        span(sources) + reach,
        span(flows),
        span(logits),
        span(target),
        B * K * C * Hs * Ws,
        B * K * 2 * H * W,
        B * C * H * W,
        extra_elements,
    )
    return max(spans) <= limit


@triton.jit
def _acc(x, F64: tl.constexpr):
    """x in the accumulation type: float64 for float64 inputs, float32 otherwise."""
    if F64:
        return x.to(tl.float64)
    else:
        return x.to(tl.float32)


@triton.jit
def _unnormalise(g, size, ALIGN: tl.constexpr, BORDER: tl.constexpr):
    """Grid coordinate -> source pixel coordinate and its derivative, along one axis.

    g: (BLOCK,) grid values (the identity already added); size: source extent. Returns
    (coordinate, d coordinate / d g, placed), each (BLOCK,); ``placed`` is False where
    grid_sample's result is NaN (zeros padding: a NaN or infinite coordinate; border padding: a
    NaN one), and the caller makes the fraction NaN there (as csrc/cuda's source_coord).
    """
    # Scalars enter through zeros_like(g) + n: an int argument equal to 1 is specialised to a
    # constexpr by Triton and has no .to().
    ss = tl.zeros_like(g) + size
    # F.grid_sample's unnormalisation, rounded as ATen rounds it (csrc/warp_blend_math.h,
    # Axis::to_pixel): without align_corners one fused multiply-add, as ATen's kernels are
    # compiled; a point on a pixel centre then lands on it exactly.
    if ALIGN:
        coord = (g + 1) / 2 * (ss - 1)
        d = (ss - 1) / 2
    else:
        coord = tl.fma(g + 1, ss, -1.0) / 2
        d = ss / 2
    if BORDER:
        placed = coord == coord  # before the clamp, which would turn NaN into 0
        # Clamp into the source; like grid_sample, zero gradient on and past the border
        # (border_derivative and clamp_to_border in csrc/warp_blend_math.h).
        hi = ss - 1
        d = tl.where((coord > 0) & (coord < hi), d, 0)
        coord = tl.where(coord > 0, coord, 0)
        coord = tl.where(coord < hi, coord, hi)
    else:
        placed = coord - coord == 0  # inf - inf is NaN
    # Far-away and non-finite points sample nothing; bounding them keeps the int cast defined
    # (a NaN fails both comparisons and lands on -2, where every tap is outside): keep_near.
    coord = tl.where(coord > -2, coord, -2)
    coord = tl.where(coord < ss + 1, coord, ss + 1)
    return coord, d, placed


@triton.jit
def _taps(
    flow_k_ptr,
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
    m,
    RESIDUAL: tl.constexpr,
    ALIGN: tl.constexpr,
    BORDER: tl.constexpr,
    F64: tl.constexpr,
    IDX64: tl.constexpr,
):
    """Bilinear cell of source k for each pixel: (x0, y0, tx, ty, dx, dy), each (BLOCK,).

    idx_ptr / idy_ptr: F.affine_grid's identity axes, (W,) and (H,) in the accumulation type
    (identity_axes below), added when RESIDUAL."""
    gx = _acc(tl.load(flow_k_ptr + f_off, mask=m, other=0), F64)
    gy = _acc(tl.load(flow_k_ptr + s_fd + f_off, mask=m, other=0), F64)
    if RESIDUAL:
        gx = gx + tl.load(idx_ptr + w, mask=m, other=0)
        gy = gy + tl.load(idy_ptr + h, mask=m, other=0)
    ix, dx, placed_x = _unnormalise(gx, Ws, ALIGN, BORDER)
    iy, dy, placed_y = _unnormalise(gy, Hs, ALIGN, BORDER)
    fx = tl.floor(ix)
    fy = tl.floor(iy)
    tx = tl.where(placed_x, ix - fx, float("nan"))
    ty = tl.where(placed_y, iy - fy, float("nan"))
    if IDX64:
        return fx.to(tl.int64), fy.to(tl.int64), tx, ty, dx, dy
    return fx.to(tl.int32), fy.to(tl.int32), tx, ty, dx, dy


@triton.jit
def _cell(x0, y0, Hs, Ws):
    """The far corner (x1, y1) of each pixel's bilinear cell and which of its columns / rows lie
    inside the source: (x1, y1, vx0, vx1, vy0, vy1), each (BLOCK,)."""
    x1 = x0 + 1
    y1 = y0 + 1
    return x1, y1, (x0 >= 0) & (x0 < Ws), (x1 >= 0) & (x1 < Ws), (y0 >= 0) & (y0 < Hs), (y1 >= 0) & (y1 < Hs)


@triton.jit
def _bilinear(v00, v01, v10, v11, tx, ty):
    """The bilinear value (BLOCK, BLOCK_C) of the taps nw, ne, sw, se at fractions tx, ty (BLOCK,)
    (BilinearWeights in csrc/warp_blend_math.h, factored by rows)."""
    ux = (1 - tx)[:, None]
    txx = tx[:, None]
    return (1 - ty)[:, None] * (ux * v00 + txx * v01) + ty[:, None] * (ux * v10 + txx * v11)


@triton.jit
def _source_weight(logit_k_ptr, l_off, m, run_max, denom, zero, K, HAS_LOGITS: tl.constexpr, F64: tl.constexpr):
    """Softmax weight (BLOCK,) of one source from its logits and the final max and denominator
    over K; 1 / K without logits."""
    if HAS_LOGITS:
        lk = _acc(tl.load(logit_k_ptr + l_off, mask=m, other=0), F64)
        wk = tl.exp(lk - run_max) / denom
    else:
        wk = (zero + 1) / K
    return wk


@triton.jit
def _gather(plane_ptr, c_off, x0, y0, s_sy, s_sx, Hs, Ws, m2, F64: tl.constexpr):
    """The four taps nw, ne, sw, se of every channel, each (BLOCK, BLOCK_C); 0 outside (zeros padding).

    plane_ptr: sources[b, k, 0] ; c_off: (BLOCK_C,) channel offsets; m2: (BLOCK, BLOCK_C) mask.
    """
    x1, y1, vx0, vx1, vy0, vy1 = _cell(x0, y0, Hs, Ws)
    row0 = y0 * s_sy
    row1 = y1 * s_sy
    col0 = x0 * s_sx
    col1 = x1 * s_sx
    base = plane_ptr + c_off[None, :]
    v00 = tl.load(base + (row0 + col0)[:, None], mask=m2 & (vy0 & vx0)[:, None], other=0)
    v01 = tl.load(base + (row0 + col1)[:, None], mask=m2 & (vy0 & vx1)[:, None], other=0)
    v10 = tl.load(base + (row1 + col0)[:, None], mask=m2 & (vy1 & vx0)[:, None], other=0)
    v11 = tl.load(base + (row1 + col1)[:, None], mask=m2 & (vy1 & vx1)[:, None], other=0)
    return _acc(v00, F64), _acc(v01, F64), _acc(v10, F64), _acc(v11, F64)


@triton.jit
def _scatter(gsrc_k_ptr, c_off, x0, y0, tx, ty, Hs, Ws, gw, m2):
    """Adds gw * bilinear weight into the four taps of a contiguous (C, Hs, Ws) gradient plane."""
    x1, y1, vx0, vx1, vy0, vy1 = _cell(x0, y0, Hs, Ws)
    ux = 1 - tx
    uy = 1 - ty
    base = gsrc_k_ptr + c_off[None, :]
    tl.atomic_add(base + (y0 * Ws + x0)[:, None], gw * (ux * uy)[:, None], mask=m2 & (vy0 & vx0)[:, None])
    tl.atomic_add(base + (y0 * Ws + x1)[:, None], gw * (tx * uy)[:, None], mask=m2 & (vy0 & vx1)[:, None])
    tl.atomic_add(base + (y1 * Ws + x0)[:, None], gw * (ux * ty)[:, None], mask=m2 & (vy1 & vx0)[:, None])
    tl.atomic_add(base + (y1 * Ws + x1)[:, None], gw * (tx * ty)[:, None], mask=m2 & (vy1 & vx1)[:, None])


@triton.jit
def _pixel_block(
    programs, C, H, W, s_fy, s_fx, s_ly, s_lx, BLOCK: tl.constexpr, BLOCK_C: tl.constexpr, IDX64: tl.constexpr
):
    """This program's index, its sample b and its BLOCK output pixels p (flat over H * W) with masks, rows,
    columns, the BLOCK_C channel lanes, and the pixels' offsets into one flow / logit plane. Every
    index is int64 with IDX64, else int32 (the launcher checked that offsets fit)."""
    program = tl.program_id(0)
    lanes = tl.arange(0, BLOCK)
    c = tl.arange(0, BLOCK_C)
    if IDX64:
        program = program.to(tl.int64)
        lanes = lanes.to(tl.int64)
        c = c.to(tl.int64)
    b = program // programs
    p = (program % programs) * BLOCK + lanes
    hw = H * W
    pm = p < hw
    h = p // W
    w = p % W
    cm = c < C
    m2 = pm[:, None] & cm[None, :]
    return program, b, p, hw, pm, h, w, c, cm, m2, h * s_fy + w * s_fx, h * s_ly + w * s_lx


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


# ----------------------------------------------------------------------------------------------
# Launchers. ``wrap`` is applied to each kernel before launching: torch.library.wrap_triton
# inside a triton_op (so torch.compile sees the kernels), the identity when called directly.


def _identity(kernel):
    return kernel


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _strides(t: torch.Tensor | None, n: int) -> tuple:
    return tuple(t.stride()) if t is not None else (0,) * n


def _common(sources, flows, logits, target):
    """Shape, stride and pointer arguments shared by both kernels."""
    B, K, C, Hs, Ws = sources.shape
    H, W = flows.shape[3], flows.shape[4]
    pointers = (sources, flows, logits if logits is not None else flows, target if target is not None else flows)
    strides = _strides(sources, 5) + _strides(flows, 5) + _strides(logits, 4) + _strides(target, 4)
    return (B, K, C, Hs, Ws, H, W), pointers, strides


def _new(shape, like: torch.Tensor, dtype: torch.dtype | None = None, poison: bool = False):
    dtype = dtype or like.dtype
    if poison:  # tests: an element no kernel writes stays NaN and fails the comparison
        return torch.full(shape, float("nan"), dtype=dtype, device=like.device)
    return torch.empty(shape, dtype=dtype, device=like.device)


def identity_axes(H: int, W: int, *, residual: bool, align_corners: bool, like: torch.Tensor):
    """F.affine_grid's identity grid as two axes, x: (W,) and y: (H,), in the accumulation type.

    The ops of ATen's linspace_from_neg_one (as csrc/checks.h's identity_axis), so the values are
    affine_grid's bit for bit; zeros without ``residual`` (nothing is added then).
    """
    acc = _acc_dtype(like.dtype)

    def axis(n):
        if not residual or n <= 1:
            return torch.zeros(n, dtype=acc, device=like.device)
        r = torch.linspace(-1, 1, n, dtype=acc, device=like.device)
        return r if align_corners else r * (n - 1) / n

    return axis(W), axis(H)


def forward(
    sources,
    flows,
    logits,
    target,
    *,
    residual: bool,
    border: bool,
    align_corners: bool,
    wrap=_identity,
    poison: bool = False,
    sms: int | None = None,
) -> torch.Tensor:
    """The blend (B, C, H, W) when ``target`` is None, else the per-sample L1 (B,).

    sms: the SM count launch_config sizes programs by (default: the device's; tests set it)."""
    (B, K, C, Hs, Ws, H, W), pointers, strides = _common(sources, flows, logits, target)
    loss = target is not None
    if not loss:
        out = _new((B, C, H, W), sources, poison=poison)
        if out.numel() == 0:
            return out
    else:
        if B == 0:
            return sources.new_empty((0,))
        if C * H * W == 0:  # the mean of nothing
            return torch.full((B,), float("nan"), dtype=sources.dtype, device=sources.device)
    block, warps = launch_config("forward", B, H * W, _sm_count(sources) if sms is None else sms)
    programs = triton.cdiv(H * W, block)
    if loss:
        out = _new((B, programs), sources, dtype=_acc_dtype(sources.dtype), poison=poison)
    identity = identity_axes(H, W, residual=residual, align_corners=align_corners, like=sources)
    wrap(warp_blend_forward_kernel)[(B * programs,)](
        *pointers,
        out,
        *identity,
        K,
        C,
        Hs,
        Ws,
        H,
        W,
        programs,
        *strides,
        HAS_LOGITS=logits is not None,
        RESIDUAL=residual,
        ALIGN=align_corners,
        BORDER=border,
        LOSS=loss,
        F64=sources.dtype == torch.float64,
        BLOCK=block,
        BLOCK_C=triton.next_power_of_2(C),
        IDX64=not _fits_int32(sources, flows, logits, target, extra_elements=B * programs),
        num_warps=warps,
    )
    if loss:
        return (out.sum(dim=1) / (C * H * W)).to(sources.dtype)
    return out


def backward(
    grad,
    sources,
    flows,
    logits,
    target,
    *,
    residual: bool,
    border: bool,
    align_corners: bool,
    need_sources: bool,
    need_flows: bool,
    need_logits: bool,
    need_target: bool,
    wrap=_identity,
    poison: bool = False,
    sms: int | None = None,
):
    """Gradients (sources, flows, logits, target); a 0-element tensor for each one not asked for.

    grad: (B, C, H, W) for the blend, or (B,) for the loss when ``target`` is given.
    """
    (B, K, C, Hs, Ws, H, W), pointers, strides = _common(sources, flows, logits, target)
    loss = target is not None
    need_logits = need_logits and logits is not None
    need_target = need_target and loss
    # An empty problem has all-zero gradients: allocate zeros and launch nothing.
    launch = B * H * W * C > 0
    new = (
        (lambda shape, like: _new(shape, like, poison=poison))
        if launch
        else (lambda shape, like: torch.zeros(shape, dtype=like.dtype, device=like.device))
    )
    g_src = (
        torch.zeros((B, K, C, Hs, Ws), dtype=_acc_dtype(sources.dtype), device=sources.device)
        if need_sources
        else sources.new_empty((0,))
    )
    # Gradients not asked for are 0-element tensors, each its own: a custom op's outputs must
    # not alias one another.
    g_flow = new((B, K, 2, H, W), flows) if need_flows else sources.new_empty((0,))
    g_logit = new((B, K, H, W), sources) if need_logits else sources.new_empty((0,))
    g_tgt = new((B, C, H, W), sources) if need_target else sources.new_empty((0,))
    if launch and (need_sources or need_flows or need_logits or need_target):
        block, warps = launch_config("backward", B, H * W, _sm_count(sources) if sms is None else sms)
        programs = triton.cdiv(H * W, block)
        g_strides = tuple(grad.stride()) if not loss else (grad.stride(0), 0, 0, 0)
        identity = identity_axes(H, W, residual=residual, align_corners=align_corners, like=sources)
        wrap(warp_blend_backward_kernel)[(B * programs,)](
            *pointers,
            grad,
            g_src,
            g_flow,
            g_logit,
            g_tgt,
            *identity,
            K,
            C,
            Hs,
            Ws,
            H,
            W,
            programs,
            C * H * W,
            *strides,
            *g_strides,
            HAS_LOGITS=logits is not None,
            RESIDUAL=residual,
            ALIGN=align_corners,
            BORDER=border,
            LOSS=loss,
            NEED_SRC=need_sources,
            NEED_FLOW=need_flows,
            NEED_LOGIT=need_logits,
            NEED_TGT=need_target,
            F64=sources.dtype == torch.float64,
            BLOCK=block,
            BLOCK_C=triton.next_power_of_2(C),
            IDX64=not _fits_int32(sources, flows, logits, target, extra_elements=grad.numel()),
            num_warps=warps,
        )
    if need_sources:
        g_src = g_src.to(sources.dtype)
    return g_src, g_flow, g_logit, g_tgt


__all__ = [
    "forward",
    "backward",
    "warp_blend_forward_kernel",
    "warp_blend_backward_kernel",
    "FORWARD_BLOCK",
    "BACKWARD_BLOCK",
    "launch_config",
]
