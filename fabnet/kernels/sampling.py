"""The Triton kernels' shared steps: coordinates to taps, bilinear weights, softmax weights, gathers
and the scatter of source gradients (csrc/warp_blend_math.h, step for step)."""

from __future__ import annotations

import triton
import triton.language as tl


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
        # Finite: NaN and +-inf fail the comparison. Not ``coord - coord == 0``: compiled for a GPU,
        # (g + 1) / 2 * (size - 1) minus itself contracts into one fma, which returns the product's
        # rounding error instead of 0, and zeros padding with align_corners then gave NaN where
        # the point was fine (29 parity cases on an H200, 2026-12-04; the interpreter never fuses).
        placed = tl.abs(coord) < float("inf")
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
