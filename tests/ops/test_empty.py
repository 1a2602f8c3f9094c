"""Empty batches, channels and outputs behave as in F.grid_sample: empty in, empty out.

The loss of a sample with no pixels is the mean of nothing (NaN, as torch.mean gives); every
gradient has its input's shape. A source without pixels, or no source at all, stays an error
(grid_sample refuses an empty input plane; a softmax needs one source).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fabnet import ops
from tests.ops.interpreter import requires_triton, run_interpreted

REPO = Path(__file__).resolve().parents[2]

# (B, K, C, Hs, Ws, H, W)
EMPTY_SHAPES = [
    (0, 2, 3, 5, 6, 4, 4),
    (2, 2, 0, 5, 6, 4, 4),
    (2, 2, 3, 5, 6, 0, 4),
    (2, 2, 3, 5, 6, 4, 0),
    (0, 1, 0, 3, 3, 0, 0),
]


def empty_case(shape, dtype=torch.float32):
    B, K, C, Hs, Ws, H, W = shape
    sources = torch.rand(B, K, C, Hs, Ws, dtype=dtype)
    flows = torch.rand(B, K, 2, H, W, dtype=dtype) * 0.2
    logits = torch.randn(B, K, H, W, dtype=dtype)
    target = torch.rand(B, C, H, W, dtype=dtype)
    return sources, flows, logits, target


def run_case(backend, shape, fn, residual):
    sources, flows, logits, target = (t.requires_grad_() for t in empty_case(shape))
    if fn == "l1":
        out = ops.warp_blend_l1(sources, flows, logits, target, residual=residual, backend=backend)
        inputs = (sources, flows, logits, target)
    else:
        out = ops.warp_blend(sources, flows, logits, residual=residual, backend=backend)
        inputs = (sources, flows, logits)
    grads = torch.autograd.grad(out.nansum(), inputs, allow_unused=True)
    return out, inputs, grads


BACKENDS = [
    "reference",
    pytest.param("cpu", marks=pytest.mark.skipif(not ops.extension.available(), reason="fabnet._C not built")),
]


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("fn", ["blend", "l1"])
@pytest.mark.parametrize("shape", EMPTY_SHAPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_in_empty_out(backend, shape, fn, residual):
    B, K, C, Hs, Ws, H, W = shape
    out, inputs, grads = run_case(backend, shape, fn, residual)
    if fn == "l1":
        assert out.shape == (B,)
        assert torch.isnan(out).all()  # every sample here has no pixels: the mean of nothing
    else:
        assert out.shape == (B, C, H, W)
    for t, g in zip(inputs, grads):
        assert g is None or (g.shape == t.shape and not g.abs().nansum()), (t.shape, g)


@pytest.mark.parametrize("bad", [(2, 0, 3, 5, 6, 4, 4), (2, 2, 3, 0, 6, 4, 4), (2, 2, 3, 5, 0, 4, 4)], ids=str)
def test_empty_source_is_an_error(bad):
    sources, flows, logits, _ = empty_case(bad)
    with pytest.raises(ValueError, match=r"sources must have K, Hs, Ws >= 1"):
        ops.warp_blend(sources, flows, logits if bad[1] else None)


_TRITON_EMPTY = """
import json, torch
from tests.ops.test_empty import EMPTY_SHAPES, run_case
bad = []
for shape in EMPTY_SHAPES:
    for fn in ("blend", "l1"):
        for residual in (True, False):
            out, inputs, grads = run_case("triton", shape, fn, residual)
            want = run_case("reference", shape, fn, residual)[0]
            shapes_ok = out.shape == want.shape and all(g is None or g.shape == t.shape for t, g in zip(inputs, grads))
            if not shapes_ok or not torch.equal(torch.isnan(out), torch.isnan(want)):
                bad.append(f"{shape} {fn} residual={residual}")
print(json.dumps(bad))
"""


@requires_triton
def test_triton_empty_in_empty_out():
    assert run_interpreted(_TRITON_EMPTY) == []
