"""The GPU backends ("cuda": the C++/CUDA kernels, "triton") against the reference, on a GPU.

Marked ``gpu`` and skipped without CUDA; their CPU twins are test_triton_interpret.py (the same
Triton kernels in the interpreter) and test_cuda_compile.py (the CUDA kernels compiled for sm_80
and sm_90 without spills). Parity in float32 / bfloat16 / float16 (and float64) for forward and
every gradient, the zero-upstream skip, the gather-only backward, permuted inputs, the packed
(W % 4 == 0) and scalar paths, determinism of the loss, opcheck and torch.compile(fullgraph=True).
"""

from __future__ import annotations

import pytest
import torch

from fabnet import ops
from fabnet.ops.checks import validate
from tests.ops.inputs import CASES, EPS, GPU_TOLERANCE, OPTION_IDS, OPTIONS, Case, make_inputs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

BACKENDS = ["cuda", "triton"]
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
# CASES have odd W (the one-pixel-per-thread path); these take the 16-byte packed path of the
# CUDA forward (W % 4 == 0) and several blocks per sample.
GPU_CASES = CASES[:3] + [Case(2, 3, 3, 16, 16, 32, 32), Case(3, 2, 4, 20, 24, 40, 64), Case(2, 3, 3, 64, 64, 64, 64)]


def _skip_unless_available(backend: str, inputs, options):
    s, f, lg, t = inputs
    args = validate(s, f, lg, t, needs_target=True, **options)
    reasons = ops.backends(args)[backend]
    if reasons:
        pytest.skip(f"{backend}: " + "; ".join(reasons))


def _poison_allocator():
    """Leaves NaN-filled blocks in the caching allocator, so an output element that a kernel never
    writes is likely to read back NaN and fail the comparison."""
    junk = torch.full((16 << 20,), float("nan"), device="cuda")
    del junk


def _run(fn_name, inputs, upstream, backend, options, dtype, sources_grad=True):
    """Output and gradients (None where not required) of one op."""
    args = list(inputs if fn_name == "warp_blend_l1" else inputs[:3])
    args = [
        a.detach().to(dtype).requires_grad_(sources_grad or i != 0) if a is not None else None
        for i, a in enumerate(args)
    ]
    if backend != "reference":
        _poison_allocator()
    out = getattr(ops, fn_name)(*args, backend=backend, **options)
    wanted = [a for a in args if a is not None and a.requires_grad]
    grads = iter(torch.autograd.grad((out * upstream.to(dtype)).sum(), wanted))
    return out, [next(grads) if (a is not None and a.requires_grad) else None for a in args]


def _check(name, got, want, half, dtype):
    assert got.dtype == dtype and got.shape == want.shape, f"{name}: {got.dtype} {tuple(got.shape)}"
    err = (got.double() - want).abs().max().item()
    if half is not None:
        bound = 2 * (half.double() - want).abs().max().item() + torch.finfo(dtype).eps * want.abs().max().item()
    else:
        atol, rtol = GPU_TOLERANCE[dtype]
        bound = atol + rtol * want.abs().max().item()
    assert err <= bound, f"{name}: error {err:.3g} > {bound:.3g}"


def _parity(backend, case, dtype, options, *, logits="given", contiguous=True, sources_grad=True):
    # Rounded to dtype, then float64: the oracle sees the inputs the kernels see.
    inputs = make_inputs(
        case, dtype=dtype, residual=options["residual"], logits=logits, contiguous=contiguous, device="cuda"
    )
    inputs = tuple(t.double() if t is not None else None for t in inputs)
    _skip_unless_available(backend, tuple(t.to(dtype) if t is not None else None for t in inputs), options)
    for fn_name in ("warp_blend", "warp_blend_l1"):
        shape = (case.B,) if fn_name == "warp_blend_l1" else (case.B, case.C, case.H, case.W)
        upstream = torch.randn(shape, dtype=torch.float64, device="cuda")
        upstream[0] = 0  # sample 0 takes the zero-upstream skip
        ref, ref_grads = _run(fn_name, inputs, upstream, "reference", options, torch.float64, sources_grad)
        out, grads = _run(fn_name, inputs, upstream, backend, options, dtype, sources_grad)
        half = None
        if dtype in (torch.float16, torch.bfloat16):
            half = _run(fn_name, inputs, upstream, "reference", options, dtype, sources_grad)
        _check(f"{fn_name} output", out, ref, half[0] if half else None, dtype)
        for i, (g, r) in enumerate(zip(grads, ref_grads)):
            if r is None:
                assert g is None
                continue
            what = f"{fn_name} grad {['sources', 'flows', 'logits', 'target'][i]}"
            _check(what, g, r, half[1][i] if half else None, dtype)
            assert (g[0] == 0).all(), f"{what}: sample 0 has zero upstream but a nonzero gradient"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", GPU_CASES, ids=str)
@pytest.mark.parametrize("residual,padding_mode,align_corners", OPTIONS, ids=OPTION_IDS)
def test_parity(backend, dtype, case, residual, padding_mode, align_corners):
    options = dict(residual=residual, padding_mode=padding_mode, align_corners=align_corners)
    _parity(backend, case, dtype, options)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("logits", ["none", "5d"])
@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "permuted"])
@pytest.mark.parametrize("sources_grad", [True, False], ids=["all_grads", "gather_only"])
def test_layouts_and_masks(backend, dtype, logits, contiguous, sources_grad):
    options = dict(residual=True, padding_mode="border", align_corners=True)
    for case in (Case(2, 3, 3, 16, 16, 32, 32), Case(2, 2, 3, 9, 7, 17, 5)):
        _parity(backend, case, dtype, options, logits=logits, contiguous=contiguous, sources_grad=sources_grad)


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
