"""Zero offsets land exactly on pixel centres, as F.affine_grid + F.grid_sample put them.

Every training run starts at zero offsets (the identity warp). There the sampling point sits on
a pixel centre, and the flow gradient is the difference towards the *next* pixel, as grid_sample
takes it; a point a rounding error short of the centre takes it from the previous pixel instead,
an O(1) error. These tests compare the kernels' identity grid with affine_grid's, and their
gradients at zero offsets with the reference's, for both align_corners, on the backends that run
on a CPU (the C++ kernel; Triton and the CUDA kernels in their own files, through the interpreter
and the host emulation).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from fabnet import ops
from fabnet.ops import reference
from tests.ops.interpreter import run_interpreted

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not ops.extension.available(), reason="fabnet._C not built")

# (B, K, C, Hs, Ws, H, W): the reported sizes (16 x 16, 4 x 4, 7 x 7), odd and unequal sides,
# and an output larger than the source.
SHAPES = [
    (1, 1, 1, 16, 16, 16, 16),
    (1, 1, 1, 4, 4, 4, 4),
    (1, 1, 1, 7, 7, 7, 7),
    (2, 2, 3, 9, 13, 9, 13),
    (1, 2, 2, 33, 17, 33, 17),
    (1, 1, 2, 5, 6, 11, 13),
]
EXACT_DTYPES = [torch.float32, torch.float64]


def zero_offset_inputs(shape, dtype, seed=0):
    B, K, C, Hs, Ws, H, W = shape
    g = torch.Generator().manual_seed(seed)
    sources = torch.rand(B, K, C, Hs, Ws, generator=g, dtype=torch.float64).to(dtype)
    flows = torch.zeros(B, K, 2, H, W, dtype=dtype)
    logits = torch.randn(B, K, H, W, generator=g, dtype=torch.float64).to(dtype)
    upstream = torch.randn(B, C, H, W, generator=g, dtype=torch.float64).to(dtype)
    return sources, flows, logits, upstream


def flow_grad(backend, sources, flows, logits, upstream, **options):
    f = flows.clone().requires_grad_()
    out = ops.warp_blend(sources, f, logits, residual=True, backend=backend, **options)
    (g,) = torch.autograd.grad(out, f, upstream)
    return out.detach(), g


@pytest.mark.parametrize("dtype", EXACT_DTYPES, ids=str)
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cpu_matches_reference_at_zero_offsets(shape, padding_mode, align_corners, dtype):
    sources, flows, logits, upstream = zero_offset_inputs(shape, dtype)
    options = dict(padding_mode=padding_mode, align_corners=align_corners)
    out_ref, g_ref = flow_grad("reference", sources, flows, logits, upstream, **options)
    out_cpu, g_cpu = flow_grad("cpu", sources, flows, logits, upstream, **options)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_cpu, out_ref, **tol)
    torch.testing.assert_close(g_cpu, g_ref, **tol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("shape", SHAPES[:4], ids=str)
def test_cpu_half_types_at_zero_offsets(shape, align_corners, dtype):
    """Half types compute coordinates in float32 (the identity too): the cells are those of the
    reference on the inputs cast to float32, and the values differ by the output's rounding
    only, where a gradient from the wrong cell is off by O(1)."""
    sources, flows, logits, upstream = zero_offset_inputs(shape, dtype)
    options = dict(padding_mode="border", align_corners=align_corners)
    _, g_ref = flow_grad("reference", *(t.float() for t in (sources, flows, logits, upstream)), **options)
    _, g_cpu = flow_grad("cpu", sources, flows, logits, upstream, **options)
    scale = g_ref.abs().max().item()
    torch.testing.assert_close(g_cpu.float(), g_ref, rtol=0.02, atol=0.01 * scale)


@pytest.mark.parametrize("dtype", EXACT_DTYPES, ids=str)
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16, 33, 97, 128, 255, 256])
def test_identity_axis_is_affine_grids(n, align_corners, dtype):
    """The identity the kernels add (what csrc/checks.h computes) equals affine_grid's, bit for bit.

    Checked through the op: zero offsets with source = output size and align_corners sample at
    pixel centres only if the identity is affine_grid's; here via the reference's helper against
    the identity recomputed by the documented recipe.
    """
    grid = reference.identity_grid(1, n, n + 1, align_corners=align_corners, dtype=dtype, device=torch.device("cpu"))
    for axis, size in ((0, n + 1), (1, n)):
        got = grid[0, 0, :, 0] if axis == 0 else grid[0, :, 0, 1]
        if size <= 1:
            want = torch.zeros(size, dtype=dtype)
        else:
            want = torch.linspace(-1, 1, size, dtype=dtype)
            if not align_corners:
                want = want * (size - 1) / size
        assert torch.equal(got, want), (size, got, want)


_TRITON_ZERO_OFFSETS = """
import json, torch, triton, triton.language as tl
from fabnet import ops
from tests.ops.test_pixel_centres import SHAPES, flow_grad, zero_offset_inputs


@triton.jit
def fma_probe(a_ptr, o_ptr):
    tl.store(o_ptr, tl.fma(tl.load(a_ptr), 7.0, -1.0))


# (2/7 + 1) * 7 - 1 is 8.0 with two roundings and 7.999999999999999 fused.
a, o = torch.tensor([0.2857142857142857 + 1.0], dtype=torch.float64), torch.empty(1, dtype=torch.float64)
fma_probe[(1,)](a, o)
errors = {}
for shape in SHAPES:
    for align_corners in (True, False):
        for dtype in (torch.float32, torch.float64):
            s, f, l, u = zero_offset_inputs(shape, dtype)
            options = dict(padding_mode="border", align_corners=align_corners)
            _, g_ref = flow_grad("reference", s, f, l, u, **options)
            _, g_tri = flow_grad("triton", s, f, l, u, **options)
            errors[f"{shape}-{align_corners}-{dtype}"] = (g_tri - g_ref).abs().max().item()
print(json.dumps({"fma_fused": o.item() != 8.0, "triton": triton.__version__, "errors": errors}))
"""


@pytest.fixture(scope="module")
def triton_zero_offsets() -> dict:
    """The Triton kernels in Triton's interpreter (a child process: TRITON_INTERPRET is read at
    import), the shapes above, both align_corners, float32 and float64."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    return run_interpreted(_TRITON_ZERO_OFFSETS)


def _fused_case(key: str) -> bool:
    """float64 without align_corners: the one case whose rounding is a fused multiply-add."""
    return key.endswith("-False-torch.float64")


def test_triton_matches_reference_at_zero_offsets(triton_zero_offsets):
    errors = {k: v for k, v in triton_zero_offsets["errors"].items() if not _fused_case(k)}
    bad = {k: v for k, v in errors.items() if not v <= (1e-5 if "float32" in k else 1e-12)}
    assert not bad, f"flow gradients off at zero offsets: {bad}"


def test_triton_fused_rounding_at_zero_offsets(triton_zero_offsets):
    """float64 without align_corners rounds (g + 1) * size - 1 once (tl.fma), as ATen does. The
    compiled kernel's tl.fma is PTX fma.rn; Triton's interpreter fuses it from 3.9 on only."""
    if not triton_zero_offsets["fma_fused"]:
        pytest.skip(
            f"triton {triton_zero_offsets['triton']}'s interpreter evaluates tl.fma with two roundings "
            "((2/7 + 1) * 7 - 1 = 8.0, fused 7.999999999999999); compiled, tl.fma is PTX fma.rn"
        )
    errors = {k: v for k, v in triton_zero_offsets["errors"].items() if _fused_case(k)}
    bad = {k: v for k, v in errors.items() if not v <= 1e-12}
    assert not bad, f"flow gradients off at zero offsets: {bad}"
