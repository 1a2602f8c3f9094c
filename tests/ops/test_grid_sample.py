"""fabnet.ops.grid_sample against F.grid_sample: what a project swapping the import relies on.

The checks follow what PyTorch's own grid_sample tests check (written here, not copied): values
known by hand (corners under both align_corners and both paddings, a linear ramp, which bilinear
sampling reproduces exactly), gradients (gradcheck in float64 and agreement with grid_sample's),
non-contiguous and expanded inputs, coordinates far outside [-1, 1], NaN and infinity, empty
shapes, and the argument errors.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fabnet import ops
from tests.ops.interpreter import requires_triton, run_interpreted

BACKENDS = [
    "reference",
    pytest.param("cpu", marks=pytest.mark.skipif(not ops.extension.available(), reason="fabnet._C not built")),
]
OPTIONS = [(p, a) for p in ("zeros", "border") for a in (True, False)]


def _both(backend, x, grid, padding_mode, align_corners):
    got = ops.grid_sample(x, grid, padding_mode=padding_mode, align_corners=align_corners, backend=backend)
    want = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners)
    return got, want


@pytest.mark.parametrize("backend", BACKENDS)
def test_corners_by_hand(backend):
    """(-1, -1) is pixel (0, 0)'s centre with align_corners, its outer corner without: a quarter
    of it with zeros padding (three taps fall outside), all of it with border padding."""
    x = torch.arange(1.0, 10.0, dtype=torch.float64).view(1, 1, 3, 3)
    grid = torch.tensor([[[[-1.0, -1.0], [1.0, 1.0]]]], dtype=torch.float64)
    expect = {
        ("zeros", True): [1.0, 9.0],
        ("zeros", False): [0.25, 2.25],
        ("border", True): [1.0, 9.0],
        ("border", False): [1.0, 9.0],
    }
    for (padding_mode, align_corners), values in expect.items():
        out = ops.grid_sample(x, grid, padding_mode=padding_mode, align_corners=align_corners, backend=backend)
        torch.testing.assert_close(out.flatten(), torch.tensor(values, dtype=torch.float64))


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_linear_ramp_is_sampled_exactly(backend, align_corners):
    """Bilinear interpolation of a x + b y + c is exact: the value at pixel coordinates (ix, iy)."""
    Hs, Ws = 6, 9
    ys, xs = torch.meshgrid(torch.arange(Hs, dtype=torch.float64), torch.arange(Ws, dtype=torch.float64), indexing="ij")
    x = (0.5 * xs - 2.0 * ys + 3.0).view(1, 1, Hs, Ws)
    g = torch.Generator().manual_seed(0)
    grid = torch.rand(1, 5, 7, 2, generator=g, dtype=torch.float64) * 1.6 - 0.8  # inside the frame
    out = ops.grid_sample(x, grid, align_corners=align_corners, backend=backend)
    if align_corners:
        ix, iy = (grid[..., 0] + 1) / 2 * (Ws - 1), (grid[..., 1] + 1) / 2 * (Hs - 1)
    else:
        ix, iy = ((grid[..., 0] + 1) * Ws - 1) / 2, ((grid[..., 1] + 1) * Hs - 1) / 2
    torch.testing.assert_close(out[0, 0], (0.5 * ix - 2.0 * iy + 3.0)[0])


@pytest.mark.parametrize("padding_mode,align_corners", OPTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_values_and_gradients_match_grid_sample(backend, dtype, padding_mode, align_corners):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 7, 11, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    # Past [-1, 1] too, so both paddings are exercised.
    grid = (torch.rand(2, 5, 13, 2, generator=g, dtype=torch.float64) * 2.6 - 1.3).to(dtype).requires_grad_()
    got, want = _both(backend, x, grid, padding_mode, align_corners)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got, want, **tol)
    up = torch.randn(got.shape, generator=g, dtype=torch.float64).to(dtype)
    gx, gg = torch.autograd.grad(got, (x, grid), up)
    wx, wg = torch.autograd.grad(want, (x, grid), up)
    torch.testing.assert_close(gx, wx, **tol)
    torch.testing.assert_close(gg, wg, **tol)


@pytest.mark.parametrize("padding_mode,align_corners", OPTIONS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck(backend, padding_mode, align_corners):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    grid = (torch.rand(1, 3, 4, 2, generator=g, dtype=torch.float64) * 2.2 - 1.1).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: ops.grid_sample(a, b, padding_mode=padding_mode, align_corners=align_corners, backend=backend),
        (x, grid),
        eps=1e-6,
        atol=1e-5,
    )


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "expanded", "sliced"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_and_expanded_inputs(backend, layout):
    g = torch.Generator().manual_seed(3)
    base = torch.rand(2, 3, 8, 10, generator=g)
    x = {
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "transposed": base.transpose(2, 3).contiguous().transpose(2, 3),
        "expanded": base[:1].expand(2, 3, 8, 10),
        "sliced": torch.rand(2, 6, 8, 20, generator=g)[:, ::2, :, ::2],
    }[layout]
    grid = torch.rand(2, 9, 4, 2, generator=g).mul(2).sub(1).transpose(1, 2)  # a non-contiguous grid
    got, want = _both(backend, x, grid, "zeros", False)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_coordinates_far_outside(backend, padding_mode):
    x = torch.rand(1, 2, 5, 5)
    grid = torch.tensor([[[[1e6, 0.0], [-1e6, 0.0], [0.0, 3e4], [1e30, -1e30]]]])
    got, want = _both(backend, x, grid, padding_mode, True)
    torch.testing.assert_close(got, want)
    if padding_mode == "zeros":
        assert (got == 0).all()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_coordinates_with_zeros_padding(backend, value):
    x = torch.rand(1, 2, 5, 5, dtype=torch.float64)
    grid = torch.zeros(1, 2, 3, 2, dtype=torch.float64)
    grid[0, 1, 2, 0] = value
    got, want = _both(backend, x, grid, "zeros", False)
    assert torch.equal(torch.isnan(got), torch.isnan(want)) and torch.isnan(got).any()
    torch.testing.assert_close(got, want, equal_nan=True)


@pytest.mark.parametrize(
    "shape,grid_shape",
    [
        ((0, 3, 5, 5), (0, 4, 4, 2)),
        ((2, 0, 5, 5), (2, 4, 4, 2)),
        ((2, 3, 5, 5), (2, 0, 4, 2)),
        ((2, 3, 5, 5), (2, 4, 0, 2)),
    ],
    ids=str,
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_shapes(backend, shape, grid_shape):
    x = torch.rand(shape, requires_grad=True)
    grid = torch.rand(grid_shape, requires_grad=True)
    got, want = _both(backend, x, grid, "zeros", False)
    assert got.shape == want.shape
    gx, gg = torch.autograd.grad(got.sum(), (x, grid), allow_unused=True)
    assert (gx is None or gx.shape == x.shape) and (gg is None or gg.shape == grid.shape)


def test_argument_errors():
    x, grid = torch.rand(1, 1, 4, 4), torch.rand(1, 2, 2, 2)
    with pytest.raises(ValueError, match="mode must be 'bilinear'"):
        ops.grid_sample(x, grid, mode="nearest")
    with pytest.raises(ValueError, match=r"padding_mode must be one of \('zeros', 'border'\), got 'reflection'"):
        ops.grid_sample(x, grid, padding_mode="reflection")
    with pytest.raises(ValueError, match=r"grid must have shape \(N, H, W, 2\), got \(1, 2, 2, 3\)"):
        ops.grid_sample(x, torch.rand(1, 2, 2, 3))
    with pytest.raises(ValueError, match=r"same N"):
        ops.grid_sample(x, torch.rand(2, 2, 2, 2))
    with pytest.raises(ValueError, match=r"input must be a 4-d tensor"):
        ops.grid_sample(x[0], grid)


def test_align_corners_none_is_false():
    x, grid = torch.rand(1, 2, 4, 6), torch.rand(1, 3, 3, 2) * 2 - 1
    torch.testing.assert_close(ops.grid_sample(x, grid), ops.grid_sample(x, grid, align_corners=False))


_TRITON = """
import json, torch, torch.nn.functional as F
from fabnet import ops
g = torch.Generator().manual_seed(4)
errors = {}
for padding_mode in ("zeros", "border"):
    for align_corners in (True, False):
        x = torch.rand(2, 3, 7, 11, generator=g, dtype=torch.float64, requires_grad=True)
        grid = (torch.rand(2, 9, 5, 2, generator=g, dtype=torch.float64) * 2.6 - 1.3).transpose(1, 2).requires_grad_()
        got = ops.grid_sample(x, grid, padding_mode=padding_mode, align_corners=align_corners, backend="triton")
        want = F.grid_sample(x, grid, padding_mode=padding_mode, align_corners=align_corners)
        up = torch.randn(got.shape, generator=g, dtype=torch.float64)
        pairs = zip((got, *torch.autograd.grad(got, (x, grid), up)), (want, *torch.autograd.grad(want, (x, grid), up)))
        errors[f"{padding_mode}-{align_corners}"] = max((a - b).abs().max().item() for a, b in pairs)
from tests.ops.test_grid_sample import edge_grid
for padding_mode in ("zeros", "border"):
    for align_corners in (True, False):
        x = torch.rand(1, 2, 5, 7, generator=g, dtype=torch.float64, requires_grad=True)
        grid = edge_grid(torch.float64).requires_grad_()
        got = ops.grid_sample(x, grid, padding_mode=padding_mode, align_corners=align_corners, backend="triton")
        want = F.grid_sample(x, grid, padding_mode=padding_mode, align_corners=align_corners)
        up = torch.randn(got.shape, generator=g, dtype=torch.float64)
        pairs = zip((got, *torch.autograd.grad(got, (x, grid), up)), (want, *torch.autograd.grad(want, (x, grid), up)))
        errors[f"edges-{padding_mode}-{align_corners}"] = max((a - b).abs().max().item() for a, b in pairs)
print(json.dumps(errors))
"""


@requires_triton
def test_triton_matches_grid_sample():
    """The Triton kernels in the interpreter (a child process), a non-contiguous grid and the
    edge grid, float64."""
    errors = run_interpreted(_TRITON)
    assert all(e < 1e-10 for e in errors.values()), errors


def edge_grid(dtype) -> torch.Tensor:
    """(1, 4, 9, 2): x and y at exactly -1 and 1, one ulp inside and outside, 1e-7 outside, huge."""
    one = torch.tensor(1.0, dtype=dtype)
    values = torch.stack(
        [
            -one,
            one,
            torch.nextafter(-one, -2 * one),
            torch.nextafter(one, 2 * one),
            torch.nextafter(-one, 0 * one),
            torch.nextafter(one, 0 * one),
            -one - 1e-7,
            one + 1e-7,
            one * 1e10,
        ]
    )
    xs = values.view(1, 1, 9).expand(1, 4, 9)
    ys = values[[0, 1, 3, 8]].view(1, 4, 1).expand(1, 4, 9)
    return torch.stack([xs, ys], dim=-1).contiguous()


@pytest.mark.parametrize("padding_mode,align_corners", OPTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_coordinates(backend, dtype, padding_mode, align_corners):
    """The sampling math of every kernel (csrc/warp_blend_math.h, the Triton copy) at the frame's
    edges: the same value and gradients as grid_sample."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(1, 2, 5, 7, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    grid = edge_grid(dtype).requires_grad_()
    got, want = _both(backend, x, grid, padding_mode, align_corners)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got, want, **tol)
    up = torch.randn(got.shape, generator=g, dtype=torch.float64).to(dtype)
    for a, b in zip(torch.autograd.grad(got, (x, grid), up), torch.autograd.grad(want, (x, grid), up)):
        torch.testing.assert_close(a, b, **tol)
