"""Plain-PyTorch oracle for the fused op: ``F.grid_sample`` per source, softmax blend, L1.

This is the semantic definition of ``fabnet.ops.warp_blend`` / ``warp_blend_l1``: every backend
is tested against it, benchmarks use it as the eager baseline, and it is the fallback when the
C++ extension is not built. It materialises K warped images, the weights and the blend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fabnet.ops.composite import bilinear_gather_sample


def _axis(n: int, *, align_corners: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Pixel positions along one axis in normalised units, as ``F.affine_grid`` computes them:
    linspace(-1, 1, n), scaled by (n - 1) / n without align_corners; a single pixel sits at 0."""
    if n <= 1:
        return torch.zeros(n, dtype=dtype, device=device)
    axis = torch.linspace(-1, 1, n, dtype=dtype, device=device)
    return axis if align_corners else axis * (n - 1) / n


def identity_grid(
    batch: int, height: int, width: int, *, align_corners: bool, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The identity sampling grid, (batch, height, width, 2), x first: ``F.affine_grid`` of the
    identity, bit for bit (tests/ops/test_pixel_centres.py), built from two axes.

    Not affine_grid itself: that records as ``affine_grid_generator``, which ONNX has only from
    opset 20, while linspace and broadcasting export at any opset. Empty sizes give an empty grid
    (affine_grid refuses them); every sample's grid is the same, so it is made once and expanded.
    """
    xs = _axis(width, align_corners=align_corners, dtype=dtype, device=device)
    ys = _axis(height, align_corners=align_corners, dtype=dtype, device=device)
    grid = torch.stack((xs.expand(height, width), ys.unsqueeze(1).expand(height, width)), dim=-1)
    return grid.unsqueeze(0).expand(batch, -1, -1, -1)


def sampling_grid(flows: torch.Tensor, *, residual: bool, align_corners: bool) -> torch.Tensor:
    """flows: (B, K, 2, H, W) -> grid (B*K, H, W, 2) for ``F.grid_sample``."""
    B, K, _, H, W = flows.shape
    grid = flows.permute(0, 1, 3, 4, 2).reshape(B * K, H, W, 2)
    if residual:
        grid = grid + identity_grid(B * K, H, W, align_corners=align_corners, dtype=flows.dtype, device=flows.device)
    return grid


def blend_weights(
    logits: torch.Tensor | None, batch: int, k: int, height: int, width: int, like: torch.Tensor
) -> torch.Tensor:
    """Softmax over sources, (B, K, 1, H, W); equal weights 1/K when ``logits`` is None."""
    if logits is None:
        return torch.full((batch, k, 1, height, width), 1.0 / k, dtype=like.dtype, device=like.device)
    return torch.softmax(logits.reshape(batch, k, 1, height, width), dim=1)


def warp_blend_reference(
    sources: torch.Tensor,
    flows: torch.Tensor,
    logits: torch.Tensor | None = None,
    *,
    residual: bool = False,
    padding_mode: str = "zeros",
    align_corners: bool = False,
    twice_differentiable: bool = False,
) -> torch.Tensor:
    """Blend of K bilinearly warped sources.

    sources: (B, K, C, Hs, Ws); flows: (B, K, 2, H, W) (x, y in grid_sample coordinates, or offsets
    from the identity grid when ``residual``); logits: (B, K, H, W) or (B, K, 1, H, W) or None.
    Returns (B, C, H, W) in the inputs' dtype. ``twice_differentiable``: sample with
    fabnet.ops.composite's gathers, whose backward has a derivative on every device and torch
    (F.grid_sample's has none on CUDA, nor on the CPU before torch 2.13).
    """
    B, K, C, Hs, Ws = sources.shape
    H, W = flows.shape[-2:]
    grid = sampling_grid(flows, residual=residual, align_corners=align_corners)
    lost = None
    if padding_mode == "border":
        # The op's contract: a NaN coordinate gives NaN, with either padding. grid_sample's border
        # padding has no one answer there (its CPU forward clamps NaN to a finite value, its CPU
        # backward reads out of bounds): it samples a placeholder, replaced by NaN after.
        nan = torch.isnan(grid)
        lost = nan.any(dim=-1).unsqueeze(1)  # (B*K, 1, H, W)
        grid = torch.where(nan, torch.zeros_like(grid), grid)
    planes = sources.reshape(B * K, C, Hs, Ws)
    if twice_differentiable:
        warped = bilinear_gather_sample(planes, grid, padding_mode=padding_mode, align_corners=align_corners)
    else:
        warped = F.grid_sample(planes, grid, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners)
    if lost is not None:
        warped = torch.where(lost, torch.full_like(warped, float("nan")), warped)
    warped = warped.reshape(B, K, C, H, W)
    weights = blend_weights(logits, B, K, H, W, like=warped)
    return (weights * warped).sum(dim=1)


def warp_blend_l1_reference(
    sources: torch.Tensor,
    flows: torch.Tensor,
    logits: torch.Tensor | None,
    target: torch.Tensor,
    *,
    residual: bool = False,
    padding_mode: str = "zeros",
    align_corners: bool = False,
    twice_differentiable: bool = False,
) -> torch.Tensor:
    """Per-sample mean |target - blend| over (C, H, W): (B,). target: (B, C, H, W)."""
    blend = warp_blend_reference(
        sources,
        flows,
        logits,
        residual=residual,
        padding_mode=padding_mode,
        align_corners=align_corners,
        twice_differentiable=twice_differentiable,
    )
    return (target - blend).abs().flatten(1).mean(dim=1)
