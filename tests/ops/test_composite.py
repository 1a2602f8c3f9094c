"""fabnet.ops.composite.bilinear_gather_sample against F.grid_sample on the CPU (where
grid_sample's backward has a derivative): values, gradients and second derivatives in float64,
on fresh random inputs with points outside the frame, both paddings and both align_corners."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fabnet.ops.composite import bilinear_gather_sample

F64 = torch.float64


def _inputs(seed, n=2, c=3, hs=5, ws=7, h=4, w=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, hs, ws, generator=g, dtype=F64)
    # Up to 1.3x the frame: a share of the points falls outside and samples padding.
    grid = (torch.rand(n, h, w, 2, generator=g, dtype=F64) * 2 - 1) * 1.3
    return x, grid


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_values_and_gradients_match_grid_sample(seed, padding_mode, align_corners):
    x, grid = _inputs(seed)
    options = dict(padding_mode=padding_mode, align_corners=align_corners)

    def run(sample):
        a, g = x.clone().requires_grad_(), grid.clone().requires_grad_()
        out = sample(a, g, **options)
        upstream = torch.linspace(-1, 1, out.numel(), dtype=F64).reshape(out.shape)
        grads = torch.autograd.grad((out * upstream).sum(), (a, g))
        return out, *grads

    got = run(bilinear_gather_sample)
    want = run(lambda a, g, **o: F.grid_sample(a, g, mode="bilinear", **o))
    for name, a, b in zip(("output", "d_input", "d_grid"), got, want):
        torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_second_derivatives_match_grid_sample(padding_mode):
    """A gradient penalty: d/dx and d/dgrid of ||d sum(out^2) / d grid||^2."""
    x, grid = _inputs(3)

    def penalty_grads(sample):
        a, g = x.clone().requires_grad_(), grid.clone().requires_grad_()
        out = sample(a, g, padding_mode=padding_mode, align_corners=False)
        (g_grid,) = torch.autograd.grad(out.square().sum(), g, create_graph=True)
        return torch.autograd.grad(g_grid.square().sum(), (a, g))

    got = penalty_grads(bilinear_gather_sample)
    want = penalty_grads(lambda a, g, **o: F.grid_sample(a, g, mode="bilinear", **o))
    assert want[0].abs().sum() > 0
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_gradgradcheck():
    x, grid = _inputs(4, n=1, c=2, hs=3, ws=4, h=2, w=3)
    x.requires_grad_()
    grid.requires_grad_()
    assert torch.autograd.gradgradcheck(lambda a, g: bilinear_gather_sample(a, g, "zeros", True), (x, grid))


def test_non_finite_points_sample_nothing_and_keep_indices_defined():
    x = torch.rand(1, 1, 3, 3, dtype=F64)
    grid = torch.tensor([[[[float("inf"), 0.0], [1e30, -1e30]]]], dtype=F64)
    out = bilinear_gather_sample(x, grid, "zeros", False)
    assert out.shape == (1, 1, 1, 2) and out[0, 0, 0, 1] == 0
