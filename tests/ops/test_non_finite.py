"""NaN and infinity show, as F.grid_sample and torch.softmax show them.

The contract (fabnet.ops docstring): a NaN or infinite coordinate with zeros padding gives NaN
at that pixel, as grid_sample does; with border padding an infinite coordinate clamps to the edge
(finite, as grid_sample) and a NaN one gives NaN (grid_sample has no single answer there: its
CPU kernel crashes, its CUDA kernel clamps NaN to 0, its scalar path to the far edge). A NaN or
+inf logit makes that pixel's softmax NaN, as torch.softmax does. Nothing is hidden: the loss of
a sample with such a pixel is NaN, and so are the gradients that depend on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fabnet import ops
from tests.ops.interpreter import requires_triton, run_interpreted

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not ops.extension.available(), reason="fabnet._C not built")

NON_FINITE = [float("nan"), float("inf"), float("-inf")]


def _inputs(dtype, K=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    f64 = dict(generator=g, dtype=torch.float64)
    sources = torch.rand(2, K, 3, 7, 9, **f64).to(dtype)
    flows = ((torch.rand(2, K, 2, 6, 8, **f64) * 2 - 1) * 0.3).to(dtype)
    logits = torch.randn(2, K, 6, 8, **f64).to(dtype)
    target = torch.rand(2, 3, 6, 8, **f64).to(dtype)
    return sources, flows, logits, target


def _run(backend, fn, sources, flows, logits, target, needs, **options):
    needs = needs if fn == "l1" else (*needs[:3], False)  # the blend does not read the target
    leaves = [
        t.clone().requires_grad_(n) if t is not None else None for t, n in zip((sources, flows, logits, target), needs)
    ]
    if fn == "l1":
        out = ops.warp_blend_l1(*leaves, residual=True, backend=backend, **options)
        upstream = torch.ones_like(out)
    else:
        out = ops.warp_blend(*leaves[:3], residual=True, backend=backend, **options)
        upstream = torch.ones_like(out)
    wanted = [t for t in leaves if t is not None and t.requires_grad]
    grads = torch.autograd.grad(out, wanted, upstream)
    return out.detach(), grads


def _same(got, want, what):
    assert torch.equal(torch.isnan(got), torch.isnan(want)), (
        f"{what}: NaN at {torch.isnan(got).nonzero().tolist()[:6]}, grid_sample / softmax give NaN at "
        f"{torch.isnan(want).nonzero().tolist()[:6]}"
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, equal_nan=True, msg=what)


# (sources, flows, logits, target) gradients: the training case and every gradient.
NEEDS = {"training": (False, True, True, False), "all": (True, True, True, True)}


@pytest.mark.parametrize("needs", NEEDS, ids=str)
@pytest.mark.parametrize("fn", ["blend", "l1"])
@pytest.mark.parametrize("value", NON_FINITE, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("align_corners", [True, False])
def test_non_finite_coordinate_zeros_padding(align_corners, dtype, value, fn, needs):
    sources, flows, logits, target = _inputs(dtype)
    flows[0, 1, 0, 3, 3] = value  # x of one pixel of sample 0, source 1
    flows[1, 0, 1, 2, 5] = value  # y of one pixel of sample 1, source 0
    options = dict(padding_mode="zeros", align_corners=align_corners)
    out, grads = _run("cpu", fn, sources, flows, logits, target, NEEDS[needs], **options)
    ref, ref_grads = _run("reference", fn, sources, flows, logits, target, NEEDS[needs], **options)
    assert torch.isnan(out).any(), "a non-finite coordinate with zeros padding must show"
    _same(out, ref, "output")
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        _same(g, r, f"gradient {i}")


@pytest.mark.parametrize("value", [float("inf"), float("-inf")], ids=str)
@pytest.mark.parametrize("align_corners", [True, False])
def test_infinite_coordinate_border_padding_clamps(align_corners, value):
    sources, flows, logits, target = _inputs(torch.float64)
    flows[0, 1, 0, 3, 3] = value
    options = dict(padding_mode="border", align_corners=align_corners)
    out, grads = _run("cpu", "blend", sources, flows, logits, target, NEEDS["all"], **options)
    ref, ref_grads = _run("reference", "blend", sources, flows, logits, target, NEEDS["all"], **options)
    assert torch.isfinite(out).all()
    _same(out, ref, "output")
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        _same(g, r, f"gradient {i}")


@pytest.mark.parametrize("fn", ["blend", "l1"])
def test_nan_coordinate_border_padding_is_nan(fn):
    """No grid_sample result to compare with (its CPU kernel crashes on this input)."""
    sources, flows, logits, target = _inputs(torch.float32)
    flows[0, 1, 0, 3, 3] = float("nan")
    out, grads = _run(
        "cpu", fn, sources, flows, logits, target, NEEDS["training"], padding_mode="border", align_corners=True
    )
    if fn == "blend":
        assert torch.isnan(out[0, :, 3, 3]).all() and torch.isfinite(out[1]).all()
        assert torch.isnan(out).sum() == 3
    else:
        assert torch.isnan(out[0]) and torch.isfinite(out[1])
    assert torch.isnan(grads[0][0]).any() and torch.isfinite(grads[0][1]).all()


@pytest.mark.parametrize("needs", NEEDS, ids=str)
@pytest.mark.parametrize("fn", ["blend", "l1"])
@pytest.mark.parametrize("value", NON_FINITE, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_non_finite_logit(dtype, value, fn, needs):
    sources, flows, logits, target = _inputs(dtype)
    logits[0, 1, 3, 3] = value
    options = dict(padding_mode="border", align_corners=True)
    out, grads = _run("cpu", fn, sources, flows, logits, target, NEEDS[needs], **options)
    ref, ref_grads = _run("reference", fn, sources, flows, logits, target, NEEDS[needs], **options)
    _same(out, ref, "output")
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        _same(g, r, f"gradient {i}")


_TRITON_NON_FINITE = """
import json, torch
from tests.ops.test_non_finite import NEEDS, NON_FINITE, _inputs, _run
bad = []
for value in NON_FINITE:
    for where in ("flow", "logit"):
        for fn in ("blend", "l1"):
            sources, flows, logits, target = _inputs(torch.float64)
            if where == "flow":
                flows[0, 1, 0, 3, 3] = value
            else:
                logits[0, 1, 3, 3] = value
            options = dict(padding_mode="zeros", align_corners=False)
            got = _run("triton", fn, sources, flows, logits, target, NEEDS["all"], **options)
            want = _run("reference", fn, sources, flows, logits, target, NEEDS["all"], **options)
            for i, (g, w) in enumerate(zip([got[0], *got[1]], [want[0], *want[1]])):
                same_nan = torch.equal(torch.isnan(g), torch.isnan(w))
                if not same_nan or not torch.allclose(g, w, atol=1e-9, equal_nan=True):
                    bad.append(f"{value} {where} {fn} tensor {i}")
print(json.dumps(bad))
"""


@requires_triton
def test_triton_non_finite():
    """The Triton kernels in the interpreter (a child process), float64, zeros padding."""
    bad = run_interpreted(_TRITON_NON_FINITE)
    assert not bad, f"differs from grid_sample / softmax: {bad}"
