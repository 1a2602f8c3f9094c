"""Plain-PyTorch oracle for the fused op: ``F.grid_sample`` per source, softmax blend, L1.

This is the semantic definition of ``fabnet.ops.warp_blend`` / ``warp_blend_l1``: every backend
is tested against it, benchmarks use it as the eager baseline, and it is the fallback when the
C++ extension is not built. It materialises K warped images, the weights and the blend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def identity_grid(
    batch: int, height: int, width: int, *, align_corners: bool, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The identity sampling grid, (batch, height, width, 2), x first, as ``F.affine_grid`` makes it.

    Empty sizes give an empty grid (affine_grid itself refuses them); every sample's grid is
    the same, so it is made once and expanded.
    """
    if batch == 0 or height == 0 or width == 0:
        return torch.empty(batch, height, width, 2, dtype=dtype, device=device)
    theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=dtype, device=device)
    return F.affine_grid(theta, [1, 1, height, width], align_corners=align_corners).expand(batch, -1, -1, -1)


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
) -> torch.Tensor:
    """Blend of K bilinearly warped sources.

    sources: (B, K, C, Hs, Ws); flows: (B, K, 2, H, W) (x, y in grid_sample coordinates, or offsets
    from the identity grid when ``residual``); logits: (B, K, H, W) or (B, K, 1, H, W) or None.
    Returns (B, C, H, W) in the inputs' dtype.
    """
    B, K, C, Hs, Ws = sources.shape
    H, W = flows.shape[-2:]
    grid = sampling_grid(flows, residual=residual, align_corners=align_corners)
    warped = F.grid_sample(
        sources.reshape(B * K, C, Hs, Ws), grid, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners
    )
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
) -> torch.Tensor:
    """Per-sample mean |target - blend| over (C, H, W): (B,). target: (B, C, H, W)."""
    blend = warp_blend_reference(
        sources, flows, logits, residual=residual, padding_mode=padding_mode, align_corners=align_corners
    )
    return (target - blend).abs().flatten(1).mean(dim=1)
