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

from fabnet.kernels.backward_kernel import warp_blend_backward_kernel
from fabnet.kernels.forward_kernel import warp_blend_forward_kernel
from fabnet.kernels.launch_config import (
    BACKWARD_BLOCK,
    FORWARD_BLOCK,
    _fits_int32,
    _sm_count,
    launch_config,
)

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
