"""Bilinear sampling as gathers and products: ``F.grid_sample`` with derivatives of every order.

    bilinear_gather_sample(input, grid, padding_mode, align_corners)
    input: (N, C, Hs, Ws); grid: (N, H, W, 2), x then y in [-1, 1] -> (N, C, H, W)

``F.grid_sample``'s backward has no derivative of its own on CUDA ("derivative for
aten::grid_sampler_2d_backward is not implemented", pytorch/pytorch#34704), nor on the CPU before
torch 2.13 (seen with 2.11), so a gradient penalty could not pass through the reference there. The
reference takes this sampler where that is needed (``twice_differentiable``): four index gathers
weighted by the fractional coordinates, every step an op with derivatives of every order on every
device. It is slower and materialises the four taps, so plain calls keep ``F.grid_sample``.

Values and first and second derivatives equal ``F.grid_sample``'s for bilinear, zeros / border
padding, both align_corners (tests/ops/test_composite.py), except on points exactly on a pixel
edge or the border, where the one-sided derivatives differ and each picks one.
"""

from __future__ import annotations

import torch


def _pixel_coordinate(g: torch.Tensor, size: int, padding_mode: str, align_corners: bool) -> torch.Tensor:
    """Grid values along one axis -> source pixel coordinates, as F.grid_sample unnormalises."""
    if align_corners:
        coord = (g + 1) / 2 * (size - 1)
    else:
        coord = ((g + 1) * size - 1) / 2
    if padding_mode == "border":
        coord = coord.clamp(0, size - 1)
    return coord


def bilinear_gather_sample(
    input: torch.Tensor, grid: torch.Tensor, padding_mode: str = "zeros", align_corners: bool = False
) -> torch.Tensor:
    """Sample ``input`` (N, C, Hs, Ws) bilinearly at ``grid`` (N, H, W, 2): (N, C, H, W)."""
    N, C, Hs, Ws = input.shape
    H, W = grid.shape[1], grid.shape[2]
    x = _pixel_coordinate(grid[..., 0], Ws, padding_mode, align_corners)
    y = _pixel_coordinate(grid[..., 1], Hs, padding_mode, align_corners)
    # The cell's corner is a constant of the derivatives (floor is flat almost everywhere); far
    # and non-finite points are bounded first so the integer cast stays defined (they sample 0).
    x0 = torch.nan_to_num(x.detach(), nan=-2.0).clamp(-2, Ws + 1).floor()
    y0 = torch.nan_to_num(y.detach(), nan=-2.0).clamp(-2, Hs + 1).floor()
    tx, ty = x - x0, y - y0
    flat = input.reshape(N, C, Hs * Ws)
    out = None
    for dy, wy in ((0, 1 - ty), (1, ty)):
        for dx, wx in ((0, 1 - tx), (1, tx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi <= Ws - 1) & (yi >= 0) & (yi <= Hs - 1)
            index = (yi.clamp(0, Hs - 1) * Ws + xi.clamp(0, Ws - 1)).long().reshape(N, 1, H * W)
            taps = flat.gather(2, index.expand(N, C, H * W)).reshape(N, C, H, W)
            term = taps * (wx * wy * inside).unsqueeze(1)
            out = term if out is None else out + term
    return out
