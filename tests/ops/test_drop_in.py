"""The op dropped into someone else's training loop: autocast, double backward, torch.func, the
fallback and the NaN contract, each against F.grid_sample or the reference (export:
test_export.py).

Every test that takes ``device`` runs on the CPU here and again on a CUDA device in the GPU run
(marked ``gpu``, skipped without one).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fabnet import ops
from fabnet.ops.composite import bilinear_gather_sample
from tests.ops.interpreter import requires_triton, run_interpreted

pytestmark = pytest.mark.skipif(not ops.extension.available(), reason="fabnet._C not built")

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
    ),
]
# The fused family on each device: what "auto" picks there.
FUSED = {"cpu": "cpu", "cuda": "cuda"}
# (device, backend) for the tests every fused family must pass; Triton's CPU run is the
# interpreter's (test_triton_* below, in a child process).
_GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
FUSED_BACKENDS = [
    pytest.param("cpu", "cpu", id="cpu"),
    pytest.param("cuda", "cuda", id="cuda", marks=_GPU),
    pytest.param("cuda", "triton", id="cuda-triton", marks=_GPU),
]
# The op name each backend's forward blend records in the profiler.
BLEND_OP = {"cpu": "fabnet::warp_blend", "cuda": "fabnet::warp_blend", "triton": "fabnet::triton_warp_blend"}
F64 = torch.float64


def _image_and_grid(device, dtype=torch.float32, seed=0, n=2, c=3, hs=7, ws=9, h=5, w=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, hs, ws, generator=g, dtype=F64).to(device, dtype)
    grid = (torch.rand(n, h, w, 2, generator=g, dtype=F64) * 2.4 - 1.2).to(device, dtype)
    return x, grid


def _op_inputs(device, dtype=F64, seed=0, B=2, K=2, C=2, Hs=5, Ws=6, H=4, W=5):
    g = torch.Generator().manual_seed(seed)
    sources = torch.rand(B, K, C, Hs, Ws, generator=g, dtype=F64)
    flows = (torch.rand(B, K, 2, H, W, generator=g, dtype=F64) * 2 - 1) * 0.9
    logits = torch.randn(B, K, H, W, generator=g, dtype=F64)
    target = torch.rand(B, C, H, W, generator=g, dtype=F64)
    return [t.to(device, dtype) for t in (sources, flows, logits, target)]


# 1. Autocast --------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_promotes_like_grid_sample(device):
    """A grid from a conv inside autocast is low precision while the image stays fp32:
    F.grid_sample promotes both to fp32, and so does fabnet, with the same values and the same
    gradients for the conv's weights."""
    low = torch.bfloat16 if device == "cpu" else torch.float16
    x, _ = _image_and_grid(device)
    conv = torch.nn.Conv2d(3, 2, 3, padding=1).to(device)
    results = {}
    for name, sample in (("fabnet", ops.grid_sample), ("torch", F.grid_sample)):
        conv.zero_grad()
        with torch.autocast(device, dtype=low):
            grid = torch.tanh(conv(x)).permute(0, 2, 3, 1)
            assert grid.dtype == low and x.dtype == torch.float32
            out = sample(x, grid, padding_mode="border", align_corners=False)
        out.square().sum().backward()
        results[name] = (out, conv.weight.grad.clone())
    (got, got_grad), (want, want_grad) = results["fabnet"], results["torch"]
    assert got.dtype == want.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fn", ["blend", "l1"])
def test_autocast_mixed_inputs_run_in_the_widest_dtype(device, fn):
    low = torch.bfloat16 if device == "cpu" else torch.float16
    s, f, lg, t = _op_inputs(device, torch.float32)
    options = dict(residual=True, padding_mode="zeros", align_corners=True)
    with torch.autocast(device, dtype=low):
        if fn == "l1":
            got = ops.warp_blend_l1(s, f.to(low), lg.to(low), t, **options)
        else:
            got = ops.warp_blend(s, f.to(low), lg.to(torch.float16), **options)
    # fp32 with low-precision flows and logits: the widest is fp32, the flows keep their rounding.
    rounded = (f.to(low).float(), lg.to(low if fn == "l1" else torch.float16).float())
    if fn == "l1":
        want = ops.warp_blend_l1(s, *rounded, t, **options, backend="reference")
    else:
        want = ops.warp_blend(s, *rounded, **options, backend="reference")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_dtypes_outside_autocast_are_refused_as_grid_sample_does(device):
    x, grid = _image_and_grid(device)
    with pytest.raises(RuntimeError):
        F.grid_sample(x, grid.to(torch.float64), align_corners=False)
    with pytest.raises(TypeError, match="all tensors must share one dtype"):
        ops.grid_sample(x, grid.to(torch.float64))


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_under_compile_fullgraph(device):
    low = torch.bfloat16 if device == "cpu" else torch.float16
    x, grid = _image_and_grid(device)
    torch._dynamo.reset()

    def step(x, grid):
        with torch.autocast(device, dtype=low):
            return ops.grid_sample(x, grid.to(low), align_corners=True)

    got = torch.compile(step, fullgraph=True, backend="aot_eager")(x, grid)
    torch.testing.assert_close(got, step(x, grid))
    assert got.dtype == torch.float32


# 2. Double backward -------------------------------------------------------------------------


def _gradient_penalty_grads(sample, x, grid):
    """d/dx and d/dgrid of ||d sum(out^2) / d grid||^2: a gradient penalty through the op."""
    x = x.clone().requires_grad_()
    grid = grid.clone().requires_grad_()
    out = sample(x, grid)
    (g_grid,) = torch.autograd.grad(out.square().sum(), grid, create_graph=True)
    return torch.autograd.grad(g_grid.square().sum(), (x, grid))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_gradient_penalty_matches_grid_sample(device, padding_mode):
    x, grid = _image_and_grid(device, F64)
    got = _gradient_penalty_grads(lambda a, b: ops.grid_sample(a, b, padding_mode=padding_mode), x, grid)
    # Expected values on the CPU: F.grid_sample's CUDA backward has no derivative (pytorch/pytorch#34704),
    # which is why fabnet's double backward samples with fabnet.ops.composite. torch before 2.13
    # has none on the CPU either (seen with 2.11); then the composite, which test_composite.py
    # ties to F.grid_sample where torch can differentiate it twice, stands in.
    try:
        want = _gradient_penalty_grads(
            lambda a, b: F.grid_sample(a, b, padding_mode=padding_mode, align_corners=False), x.cpu(), grid.cpu()
        )
    except RuntimeError as err:
        assert "grid_sampler_2d_backward is not implemented" in str(err)
        want = _gradient_penalty_grads(
            lambda a, b: bilinear_gather_sample(a, b, padding_mode=padding_mode), x.cpu(), grid.cpu()
        )
    assert want[0].abs().sum() > 0  # the case the issue met: fabnet said 0 here
    for a, b in zip(got, want):
        torch.testing.assert_close(a.cpu(), b)


@pytest.mark.parametrize("device,backend", FUSED_BACKENDS)
@pytest.mark.parametrize("which", ["sources", "flows", "logits", "target", "flows+logits"])
@pytest.mark.parametrize("fn", ["blend", "l1"])
def test_gradgradcheck(device, backend, fn, which):
    """float64 second derivatives of the fused backend, one input (or the training pair) at a
    time: "flows+logits" on the CPU is the one-pass loss-with-gradients path."""
    if fn == "blend" and which == "target":
        pytest.skip("the blend does not read the target")
    inputs = _op_inputs(device)
    names = ["sources", "flows", "logits", "target"]
    for t, name in zip(inputs, names):
        t.requires_grad_(name in which.split("+"))
    options = dict(residual=True, padding_mode="border", align_corners=False, backend=backend)
    if fn == "l1":
        assert torch.autograd.gradgradcheck(lambda *a: ops.warp_blend_l1(*a, **options), inputs)
    else:
        assert torch.autograd.gradgradcheck(lambda *a: ops.warp_blend(*a, **options), inputs[:3])


@pytest.mark.parametrize("device", DEVICES)
def test_plain_backward_keeps_the_fused_kernels(device):
    """create_graph=False never recomputes through the reference: the backward ops run."""
    s, f, lg, t = _op_inputs(device, torch.float32)
    f.requires_grad_()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        loss = ops.warp_blend(s, f, lg, backend=FUSED[device]).sum()
        torch.autograd.grad(loss, f)
    names = {e.name for e in prof.events()}
    assert "fabnet::warp_blend_backward" in names and "aten::grid_sampler_2d" not in names


# 3. torch.func ------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_func_grad_and_jacrev_match_grid_sample(device):
    x, grid = _image_and_grid(device, F64, n=1, hs=4, ws=5, h=3, w=2)
    cx, cgrid = x.cpu(), grid.cpu()  # the expected values from the CPU's F.grid_sample
    for transform in (torch.func.grad, torch.func.jacrev):
        got = transform(lambda g: ops.grid_sample(x, g).square().sum())(grid)
        want = transform(lambda g: F.grid_sample(cx, g, align_corners=False).square().sum())(cgrid)
        torch.testing.assert_close(got.cpu(), want)
    got = torch.func.jacrev(lambda a: ops.grid_sample(a, grid))(x)
    want = torch.func.jacrev(lambda a: F.grid_sample(a, cgrid, align_corners=False))(cx)
    torch.testing.assert_close(got.cpu(), want)


@pytest.mark.parametrize("device", DEVICES)
def test_per_sample_gradients_with_vmap_of_grad(device):
    s, f, lg, t = _op_inputs(device)

    def loss(flows, sources, logits, target, backend):
        one = lambda x: x.unsqueeze(0)
        return ops.warp_blend_l1(one(sources), one(flows), one(logits), one(target), backend=backend).sum()

    got = torch.func.vmap(torch.func.grad(loss), in_dims=(0, 0, 0, 0, None))(f, s, lg, t, "auto")
    for b in range(f.shape[0]):
        leaf = f[b : b + 1].clone().requires_grad_()
        want = torch.autograd.grad(ops.warp_blend_l1(s[b : b + 1], leaf, lg[b : b + 1], t[b : b + 1]).sum(), leaf)[0]
        torch.testing.assert_close(got[b], want[0])


@pytest.mark.parametrize("device,backend", FUSED_BACKENDS)
@pytest.mark.parametrize("in_dims", [(0, 0, 0), (None, 0, None), (1, 0, 0)], ids=str)
def test_vmap_runs_the_fused_op_once(device, backend, in_dims):
    """vmap folds the mapped dimension into B: one fused call of batch N * B, the same values as
    a loop over the mapped elements."""
    N = 3
    s, f, lg, _ = _op_inputs(device, torch.float32)
    batched = []
    for t, d in zip((s, f, lg), in_dims):
        if d is None:
            batched.append(t)
        else:
            stacked = torch.stack([t * (1 + 0.1 * i) for i in range(N)])
            batched.append(stacked.movedim(0, d))
    fn = lambda a, b, c: ops.warp_blend(a, b, c, residual=True, backend=backend)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        got = torch.vmap(fn, in_dims=in_dims)(*batched)
    # The call as vmap sees it (batch B), then the one the rule makes (batch N * B); without the
    # rule torch would loop: N more calls of batch B.
    batches = [e.input_shapes[0][0] for e in prof.events() if e.name == BLEND_OP[backend]]
    assert batches == [s.shape[0], N * s.shape[0]], batches
    for i in range(N):
        args = [t if d is None else t.select(d, i) for t, d in zip(batched, in_dims)]
        torch.testing.assert_close(got[i], fn(*args))


@pytest.mark.parametrize("device,backend", FUSED_BACKENDS)
def test_vmap_with_requires_grad_then_backward(device, backend):
    N = 2
    s, f, lg, t = _op_inputs(device)
    flows = torch.stack([f, f.flip(-1)]).requires_grad_()
    loss = torch.vmap(lambda fl: ops.warp_blend_l1(s, fl, lg, t, backend=backend))(flows).sum()
    (got,) = torch.autograd.grad(loss, flows)
    for i in range(N):
        leaf = flows[i].detach().requires_grad_()
        (want,) = torch.autograd.grad(ops.warp_blend_l1(s, leaf, lg, t, backend="reference").sum(), leaf)
        torch.testing.assert_close(got[i], want)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # inside torch.func's jvp
@pytest.mark.parametrize("device", DEVICES)
def test_forward_mode_is_refused_by_name(device):
    x, grid = _image_and_grid(device, F64, n=1, hs=3, ws=3, h=2, w=2)
    with pytest.raises(NotImplementedError, match="no forward-mode derivative.*jacrev"):
        torch.func.jacfwd(lambda g: ops.grid_sample(x, g).sum())(grid)
    with pytest.raises(NotImplementedError, match="no forward-mode derivative"):
        torch.func.jvp(lambda g: ops.grid_sample(x, g), (grid,), (torch.ones_like(grid),))
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level(), pytest.raises(NotImplementedError, match="no forward-mode derivative"):
        ops.grid_sample(x, fwAD.make_dual(grid, torch.ones_like(grid)))


def test_forced_fused_backend_under_grad_transform_says_why():
    x, grid = _image_and_grid("cpu", F64)
    with pytest.raises(ValueError, match="backend 'cpu' cannot serve.*torch.func.grad"):
        torch.func.grad(lambda g: ops.grid_sample(x, g, backend="cpu").sum())(grid)


# 6. One answer to a NaN coordinate with border padding ---------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fn", ["blend", "l1"])
def test_nan_coordinate_with_border_padding_is_nan_on_every_backend(device, fn):
    s, f, lg, t = _op_inputs(device)
    f[0, 1, 0, 2, 3] = float("nan")
    results = {}
    for backend in (FUSED[device], "reference"):
        leaves = [x.clone().requires_grad_() for x in (s, f, lg)]
        options = dict(padding_mode="border", align_corners=True, backend=backend)
        if fn == "l1":
            out = ops.warp_blend_l1(*leaves, t, **options)
        else:
            out = ops.warp_blend(*leaves, **options)
        results[backend] = (out, torch.autograd.grad(out.sum(), leaves))
    (out, (g_s, _, g_l)), (ref, (r_s, _, r_l)) = results.values()
    assert torch.equal(out.isnan(), ref.isnan())
    if fn == "blend":
        assert out[0, :, 2, 3].isnan().all() and out.isnan().sum() == out.shape[1]
    else:
        assert out[0].isnan() and not out[1].isnan()
    # The sources' gradient stays finite; the logits' gradient shows the NaN at that pixel.
    assert g_s.isfinite().all() and r_s.isfinite().all()
    assert g_l[0, :, 2, 3].isnan().all() and r_l[0, :, 2, 3].isnan().all()


_TRITON_BORDER_NAN = """
import json, torch
from fabnet import ops
from tests.ops.test_drop_in import _op_inputs
s, f, lg, t = _op_inputs("cpu")
f[0, 1, 0, 2, 3] = float("nan")
out = {b: ops.warp_blend(s, f, lg, padding_mode="border", align_corners=True, backend=b)
       for b in ("triton", "reference")}
print(json.dumps([out["triton"].isnan().nonzero().tolist(), out["reference"].isnan().nonzero().tolist()]))
"""


@requires_triton
def test_triton_nan_coordinate_with_border_padding_is_nan():
    triton_nan, reference_nan = run_interpreted(_TRITON_BORDER_NAN)
    assert triton_nan == reference_nan and len(reference_nan) == 2


_TRITON_TRANSFORMS = """
import json, torch
from fabnet import ops
from tests.ops.test_drop_in import _op_inputs
done = []
s, f, lg, t = _op_inputs("cpu", B=1, K=2, C=1, Hs=3, Ws=4, H=2, W=3)
f.requires_grad_()
options = dict(residual=True, padding_mode="zeros", align_corners=False, backend="triton")
assert torch.autograd.gradgradcheck(lambda flows: ops.warp_blend_l1(s, flows, lg, t, **options), (f,))
done.append("gradgradcheck")
f = f.detach()
many = torch.stack([f, f.flip(-1), f * 0.5])
got = torch.vmap(lambda fl: ops.warp_blend(s, fl, lg, **options))(many)
want = torch.stack([ops.warp_blend(s, fl, lg, residual=True, backend="reference") for fl in many])
assert torch.allclose(got, want, atol=1e-12), (got - want).abs().max()
done.append("vmap")
print(json.dumps(done))
"""


@requires_triton
def test_triton_double_backward_and_vmap():
    """The Triton kernels in the interpreter (a child process): a float64 gradgradcheck through
    their backward formula, and vmap through their fold rule."""
    assert run_interpreted(_TRITON_TRANSFORMS) == ["gradgradcheck", "vmap"]


# 6. torch.compile ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_call_keeps_the_fused_kernel(device):
    """backend="auto" under torch.compile(fullgraph=True) runs the fused op, not the reference.
    Before, dynamo's stand-in for the functorch stack was never None, so every compiled call
    was taken for one under torch.func.grad and traced F.grid_sample instead."""
    x, grid = _image_and_grid(device, F64)
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, g: ops.grid_sample(a, g), fullgraph=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = compiled(x, grid)
    names = {e.name for e in prof.events()}
    assert any(name.startswith("fabnet::") for name in names), sorted(names)
    assert not any("grid_sampler" in name for name in names)
    torch.testing.assert_close(out, F.grid_sample(x, grid, align_corners=False))


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_func_grad_matches_grid_sample(device):
    x, grid = _image_and_grid(device, F64)
    torch._dynamo.reset()
    got = torch.compile(torch.func.grad(lambda g: ops.grid_sample(x, g).square().sum()), fullgraph=True)(grid)
    cx = x.cpu()
    want = torch.func.grad(lambda g: F.grid_sample(cx, g, align_corners=False).square().sum())(grid.cpu())
    torch.testing.assert_close(got.cpu(), want)
