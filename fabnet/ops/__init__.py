"""The fused multi-source warp + confidence-softmax blend (+ per-sample L1) op.

    warp_blend(sources, flows, logits=None, *, residual=False, padding_mode="zeros",
               align_corners=False, backend="auto") -> (B, C, H, W)
    warp_blend_l1(sources, flows, logits, target, *, ...same...) -> (B,)
    grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=None)
        -> (N, C, H, W): F.grid_sample's signature, the K = 1 case (fabnet.ops.grid_sample)

sources: (B, K, C, Hs, Ws), K >= 1 frames per sample. flows: (B, K, 2, H, W), channel 0 = x,
channel 1 = y in ``F.grid_sample``'s normalised coordinates, or offsets from the identity grid
``F.affine_grid(identity, (B, C, H, W), align_corners)`` when ``residual``. logits: (B, K, H, W)
or (B, K, 1, H, W), softmax over K per pixel; None for equal weights. target: (B, C, H, W).

    warped_k = F.grid_sample(sources[:, k], grid_k, "bilinear", padding_mode, align_corners)
    blend    = sum_k softmax_k(logits) * warped_k
    l1[b]    = mean over (C, H, W) of |target[b] - blend[b]|

Gradients flow to every floating input that requires them; sources that do not take a
gather-only backward. ``warp_blend_l1`` never materialises the blend. On the CPU, when only
flows and/or logits need gradients (float32/float64), its forward also computes the per-sample
gradients in the same pass and the backward scales them (``fabnet::warp_blend_l1_with_grads``).
dtypes: float32, float64, bfloat16, float16 (accumulation in float32, or float64 for float64
inputs; for half types the coordinates, the identity grid included, are float32).

Exactly where ``F.grid_sample`` puts them: with ``residual`` the identity grid is
``F.affine_grid``'s, bit for bit, and a point on a pixel centre lands on it, so zero offsets take
the flow gradient from the same side as the reference.

Non-finite values show, as in grid_sample and torch.softmax: with zeros padding a NaN or
infinite coordinate gives NaN at that pixel (and, as grid_sample, a NaN gradient for the other
coordinate; the sources' gradient stays finite); with border padding an infinite coordinate
clamps to the edge and a NaN one gives NaN on every backend, the reference included
(grid_sample has no single answer there: its CPU forward clamps NaN to a finite value, its CPU
backward reads out of bounds, its CUDA kernel clamps NaN to 0). A NaN or +inf logit makes that
pixel's softmax, and so its blend, NaN.

Empty inputs give empty outputs, as in grid_sample: B, C, H or W may be 0 (the loss of a sample
without pixels is NaN, the mean of nothing; every gradient has its input's shape). K, Hs and Ws
must be at least 1.

With the rest of torch, as ``F.grid_sample``:

- autocast: inside ``torch.autocast`` mixed dtypes run in the widest of them (grid_sample is a
  "promote" op), e.g. an fp32 frame with a bf16 flow from a conv gives fp32; outside it they
  must agree.
- double backward (``create_graph=True``): the gradients are recomputed through the reference,
  so a gradient penalty differentiates them; a plain backward keeps the kernels.
- ``torch.func``: ``vmap`` folds the mapped dimension into B (one fused call); ``grad``, ``vjp``,
  ``jacrev`` and ``hessian``'s reverse part run the reference (torch cannot apply these to a
  custom op's formula); forward mode (``jvp``, ``jacfwd``, ``forward_ad``) raises, as
  grid_sample has no forward formula either.
- export: ``torch.jit.trace`` and ``torch.onnx.export`` (both exporters) record the reference
  (ONNX GridSample); ``torch.export`` keeps ``fabnet::warp_blend`` (loading it needs fabnet);
  ``torch.jit.script`` cannot compile this Python API, and scripted code calls
  ``torch.ops.fabnet.warp_blend(sources, flows, logits, residual, padding_mode, align_corners)``.
- ``backend="auto"`` falling back to the reference for want of a fused backend warns once per
  process and reason (``FallbackWarning``), naming why and the fix.
"""

from __future__ import annotations

import torch

from fabnet.ops import extension
from fabnet.ops.backends import BACKENDS, FallbackWarning, backends, select
from fabnet.ops.checks import quiet_under_jit_trace, validate
from fabnet.ops.grid_sample import grid_sample
from fabnet.ops.reference import warp_blend_l1_reference, warp_blend_reference

__all__ = [
    "warp_blend",
    "warp_blend_l1",
    "grid_sample",
    "backends",
    "BACKENDS",
    "FallbackWarning",
    "warp_blend_reference",
    "warp_blend_l1_reference",
    "extension",
]


def warp_blend(
    sources: torch.Tensor,
    flows: torch.Tensor,
    logits: torch.Tensor | None = None,
    *,
    residual: bool = False,
    padding_mode: str = "zeros",
    align_corners: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Blend of K bilinearly warped sources, (B, C, H, W). See the module docstring."""
    with quiet_under_jit_trace():
        args = validate(
            sources,
            flows,
            logits,
            None,
            residual=residual,
            padding_mode=padding_mode,
            align_corners=align_corners,
            needs_target=False,
        )
        return select(backend, args).warp_blend(args)


def warp_blend_l1(
    sources: torch.Tensor,
    flows: torch.Tensor,
    logits: torch.Tensor | None,
    target: torch.Tensor,
    *,
    residual: bool = False,
    padding_mode: str = "zeros",
    align_corners: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """Per-sample mean |target - blend| over (C, H, W), (B,). See the module docstring."""
    with quiet_under_jit_trace():
        args = validate(
            sources,
            flows,
            logits,
            target,
            residual=residual,
            padding_mode=padding_mode,
            align_corners=align_corners,
            needs_target=True,
        )
        return select(backend, args).warp_blend_l1(args)
