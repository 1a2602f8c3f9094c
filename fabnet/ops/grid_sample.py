"""``fabnet.ops.grid_sample``: ``F.grid_sample``'s signature on the fused kernels (K = 1).

    grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=None)
    input: (N, C, Hs, Ws); grid: (N, H, W, 2), x then y in [-1, 1] -> (N, C, H, W)

A project swaps ``F.grid_sample`` for this import and keeps its code: the same layouts, the same
values (tests/ops/test_grid_sample.py), gradients for both arguments. The input is read in place
(any strides; ``unsqueeze(1)`` makes it the op's one source); the grid is passed as a permuted
view, which the CUDA and Triton kernels read through its strides and the CPU kernel copies once
(2 values per output pixel, against the C it writes). Bilinear only, zeros or border padding:
what the fused op computes.
"""

from __future__ import annotations

import torch

from fabnet.ops.checks import PADDING_MODES, quiet_under_jit_trace

MODES = ("bilinear",)


def grid_sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Sample ``input`` (N, C, Hs, Ws) at ``grid`` (N, H, W, 2): (N, C, H, W), as F.grid_sample.

    align_corners: None means False, F.grid_sample's default. backend: as for ``warp_blend``.
    """
    from fabnet.ops import warp_blend

    if mode not in MODES:
        raise ValueError(
            f"mode must be 'bilinear' (the fused kernels' only mode), got {mode!r}; "
            "use torch.nn.functional.grid_sample for other modes"
        )
    if padding_mode not in PADDING_MODES:
        raise ValueError(
            f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}; use "
            "torch.nn.functional.grid_sample for 'reflection'"
        )
    with quiet_under_jit_trace():
        if not isinstance(input, torch.Tensor) or input.dim() != 4:
            raise ValueError(
                f"input must be a 4-d tensor (N, C, Hs, Ws), got "
                f"{tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__}"
            )
        if not isinstance(grid, torch.Tensor) or grid.dim() != 4 or grid.shape[-1] != 2:
            raise ValueError(
                f"grid must have shape (N, H, W, 2), got "
                f"{tuple(grid.shape) if isinstance(grid, torch.Tensor) else type(grid).__name__}"
            )
        if grid.shape[0] != input.shape[0]:
            raise ValueError(
                f"grid and input must have the same N, got grid {tuple(grid.shape)} and input {tuple(input.shape)}"
            )
    sources = input.unsqueeze(1)  # (N, 1, C, Hs, Ws), a view
    flows = grid.permute(0, 3, 1, 2).unsqueeze(1)  # (N, 1, 2, H, W), a view
    return warp_blend(
        sources,
        flows,
        None,
        residual=False,
        padding_mode=padding_mode,
        align_corners=bool(align_corners),
        backend=backend,
    )
