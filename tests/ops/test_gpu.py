"""What only a GPU shows about the GPU backends ("cuda": the C++/CUDA kernels, "triton"):
run-to-run determinism of the loss, deterministic source gradients under
torch.use_deterministic_algorithms, opcheck with fake tensors, torch.compile(fullgraph=True) and
``auto``'s order. Marked ``gpu`` and skipped without CUDA. Their parity with the reference is in
test_parity.py (``test_gpu``), by the rule every backend meets.
"""

from __future__ import annotations

import pytest
import torch

from fabnet import ops
from fabnet.ops.checks import validate
from tests.ops.inputs import EPS, GPU_TOLERANCE, Case, make_inputs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

BACKENDS = ["cuda", "triton"]


def _skip_unless_available(backend: str, inputs, options):
    s, f, lg, t = inputs
    args = validate(s, f, lg, t, needs_target=True, **options)
    reasons = ops.backends(args)[backend]
    if reasons:
        pytest.skip(f"{backend}: " + "; ".join(reasons))


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_is_deterministic(backend):
    options = dict(residual=True, padding_mode="border", align_corners=True)
    inputs = make_inputs(Case(4, 3, 3, 64, 64, 96, 96), dtype=torch.float32, residual=True, device="cuda")
    _skip_unless_available(backend, inputs, options)
    first = ops.warp_blend_l1(*inputs, **options, backend=backend)
    for _ in range(3):
        assert torch.equal(ops.warp_blend_l1(*inputs, **options, backend=backend), first)


@pytest.fixture
def deterministic_algorithms():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_deterministic_source_gradients(deterministic_algorithms, dtype):
    """Flows converging on a few source pixels (where atomics contend): under
    torch.use_deterministic_algorithms the cuda backend's source gradient repeats bit for bit and
    matches the reference; Triton, whose source gradient uses atomics, declines."""
    options = dict(residual=True, padding_mode="border", align_corners=True)
    s, f, lg, t = make_inputs(Case(4, 3, 3, 64, 64, 96, 96), dtype=dtype, residual=True, device="cuda")
    f = (f * 0.02 - 0.5).contiguous()  # every pixel within ~2 source pixels of the same spot
    _skip_unless_available("cuda", (s, f, lg, t), options)
    grads = []
    for _ in range(3):
        leaf = s.clone().requires_grad_()
        (g,) = torch.autograd.grad(ops.warp_blend_l1(leaf, f, lg, t, **options, backend="cuda").sum(), leaf)
        grads.append(g)
    assert all(torch.equal(g, grads[0]) for g in grads[1:])
    # The oracle on the CPU: grid_sample's CUDA backward has no deterministic implementation.
    leaf = s.double().cpu().requires_grad_()
    ref = ops.warp_blend_l1(leaf, *(x.double().cpu() for x in (f, lg, t)), **options, backend="reference")
    (want,) = torch.autograd.grad(ref.sum(), leaf)
    want = want.cuda()
    # bfloat16: the fp32 sum is rounded once to bfloat16 (half a unit), plus the inputs' rounding.
    atol, rtol = GPU_TOLERANCE.get(dtype, (4 * EPS.get(dtype, 0) * want.abs().max().item(), 0))
    torch.testing.assert_close(grads[0].double(), want, atol=atol, rtol=rtol)
    args = validate(s.requires_grad_(), f, lg, t, needs_target=True, **options)
    assert any("deterministic" in r for r in ops.backends(args)["triton"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(backend, requires_grad):
    inputs = make_inputs(Case(2, 3, 3, 9, 8, 7, 12), dtype=torch.float32, residual=True, device="cuda")
    options = dict(residual=True, padding_mode="border", align_corners=True)
    _skip_unless_available(backend, inputs, options)
    if backend == "triton":
        from fabnet.ops import triton_ops  # noqa: F401  (registers the triton ops)

        blend_op, l1_op = torch.ops.fabnet.triton_warp_blend, torch.ops.fabnet.triton_warp_blend_l1
    else:
        blend_op, l1_op = torch.ops.fabnet.warp_blend, torch.ops.fabnet.warp_blend_l1
    s, f, lg, t = (x.requires_grad_(requires_grad) for x in inputs)
    torch.library.opcheck(blend_op, (s, f, lg, True, "border", True))
    torch.library.opcheck(blend_op, (s, f, None, False, "zeros", False))
    torch.library.opcheck(l1_op, (s, f, lg, t, True, "border", True))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_compile_fullgraph(backend, dtype):
    options = dict(residual=True, padding_mode="border", align_corners=True)
    inputs = make_inputs(Case(2, 3, 3, 16, 16, 32, 32), dtype=dtype, residual=True, device="cuda")
    _skip_unless_available(backend, inputs, options)
    torch._dynamo.reset()

    def step(sources, flows, logits, target):
        losses = ops.warp_blend_l1(sources, flows, logits, target, **options, backend=backend)
        blend = ops.warp_blend(sources, flows, logits, **options, backend=backend)
        return losses, blend

    compiled = torch.compile(step, fullgraph=True)
    s, f, lg, t = inputs
    leaves = [f.clone().requires_grad_(), lg.clone().requires_grad_()]
    eager_leaves = [f.clone().requires_grad_(), lg.clone().requires_grad_()]
    losses, blend = compiled(s, leaves[0], leaves[1], t)
    e_losses, e_blend = step(s, eager_leaves[0], eager_leaves[1], t)
    torch.testing.assert_close(losses, e_losses)
    torch.testing.assert_close(blend, e_blend)
    g = torch.autograd.grad(losses.sum() + blend.float().sum(), leaves)
    e_g = torch.autograd.grad(e_losses.sum() + e_blend.float().sum(), eager_leaves)
    for a, b in zip(g, e_g):
        torch.testing.assert_close(a, b)


def test_auto_prefers_cuda_then_triton():
    inputs = make_inputs(Case(1, 2, 3, 5, 5, 5, 5), dtype=torch.float32, residual=False, device="cuda")
    args = validate(*inputs, residual=False, padding_mode="zeros", align_corners=False, needs_target=True)
    available = [name for name, reasons in ops.backends(args).items() if not reasons]
    expected = next(name for name in ("cuda", "triton", "reference") if name in available)
    from fabnet.ops.backends import select

    assert select("auto", args).name == expected
