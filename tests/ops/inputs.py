"""Random inputs for the warp_blend tests: fresh draws, odd shapes, optional non-contiguous layouts."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Case:
    """One problem size: B samples, K sources of C x Hs x Ws, output H x W."""

    B: int
    K: int
    C: int
    Hs: int
    Ws: int
    H: int
    W: int

    def __str__(self) -> str:
        return f"B{self.B}K{self.K}C{self.C}_{self.Hs}x{self.Ws}to{self.H}x{self.W}"


# Odd sizes, source size different from output size, K = 1..4, C = 1, 3, 4.
CASES = [
    Case(2, 1, 3, 5, 5, 5, 5),
    Case(2, 2, 1, 17, 17, 17, 17),
    Case(1, 3, 3, 33, 9, 5, 17),
    Case(3, 4, 4, 8, 12, 17, 5),
    Case(2, 3, 3, 16, 16, 33, 33),
]


# (residual, padding_mode, align_corners): every option of the op.
OPTIONS = list(itertools.product([False, True], ["zeros", "border"], [False, True]))
OPTION_IDS = [f"res{int(r)}-{p}-ac{int(a)}" for r, p, a in OPTIONS]

# Every backend's parity rule, one table. float64 / float32: max |kernel - float64 reference| <=
# atol + rtol * max |reference| (float32 GPU kernels: 1e-5 absolute, their reductions run in
# another order). Half types follow flash-attention's rule: at most twice the error of the
# reference run in that type, plus one unit of the type's precision (EPS) at the output's scale,
# the cost of rounding the exact result.
TOLERANCE = {torch.float64: (1e-12, 1e-10), torch.float32: (1e-6, 1e-5)}
GPU_TOLERANCE = {torch.float64: (1e-12, 1e-10), torch.float32: (1e-5, 1e-5)}
EPS = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


def _noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """The same values as ``t`` in a permuted, non-contiguous layout."""
    out = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not out.is_contiguous() or min(t.shape[-2:]) == 1
    return out


def make_inputs(
    case: Case,
    *,
    dtype=torch.float64,
    residual: bool,
    logits: str = "given",
    contiguous: bool = True,
    with_target: bool = True,
    device="cpu",
):
    """Random (sources, flows, logits, target) in float64, then cast to ``dtype``.

    Flows spread a little past [-1, 1] without ``residual`` (so zero / border padding matter)
    and are small offsets with it. ``logits``: "given" (B, K, H, W), "5d" (B, K, 1, H, W), "none".
    """
    B, K, C, Hs, Ws, H, W = case.B, case.K, case.C, case.Hs, case.Ws, case.H, case.W
    f64 = dict(dtype=torch.float64, device=device)
    sources = torch.rand(B, K, C, Hs, Ws, **f64)
    if residual:
        flows = (torch.rand(B, K, 2, H, W, **f64) * 2 - 1) * 0.3
    else:
        flows = (torch.rand(B, K, 2, H, W, **f64) * 2 - 1) * 1.15
    lg = None
    if logits == "given":
        lg = torch.randn(B, K, H, W, **f64) * 2
    elif logits == "5d":
        lg = torch.randn(B, K, 1, H, W, **f64) * 2
    target = torch.rand(B, C, H, W, **f64) if with_target else None
    out = [t.to(dtype) if t is not None else None for t in (sources, flows, lg, target)]
    if not contiguous:
        out = [_noncontiguous(t) if t is not None else None for t in out]
    return tuple(out)
