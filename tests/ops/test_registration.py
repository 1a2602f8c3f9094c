"""The ops as torch sees them: opcheck, torch.compile(fullgraph=True), the fallback warning."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fabnet import ops
from tests.ops.inputs import Case, make_inputs

pytestmark = pytest.mark.skipif(not ops.extension.available(), reason="fabnet._C not built")


@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("with_logits", [True, False], ids=["logits", "no_logits"])
def test_opcheck(requires_grad, with_logits):
    case = Case(2, 3, 3, 6, 7, 5, 4)
    sources, flows, logits, target = make_inputs(case, residual=True, dtype=torch.float32)
    logits = logits if with_logits else None
    for t in (flows, logits, target):
        if t is not None:
            t.requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.fabnet.warp_blend.default, (sources, flows, logits, True, "border", True))
    torch.library.opcheck(
        torch.ops.fabnet.warp_blend_l1.default, (sources, flows, logits, target, True, "zeros", False)
    )


def test_opcheck_backward_ops():
    case = Case(2, 2, 3, 6, 7, 5, 4)
    sources, flows, logits, target = make_inputs(case, residual=False, dtype=torch.float32)
    grad_blend = torch.rand(case.B, case.C, case.H, case.W)
    torch.library.opcheck(
        torch.ops.fabnet.warp_blend_backward.default,
        (grad_blend, sources, flows, logits, False, "zeros", False, [True, True, True]),
    )
    torch.library.opcheck(
        torch.ops.fabnet.warp_blend_l1_backward.default,
        (torch.rand(case.B), sources, flows, logits, target, False, "border", True, [False, True, True, False]),
    )


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_matches_eager(compile_backend):
    case = Case(2, 3, 3, 12, 12, 12, 12)
    sources, flows, logits, target = make_inputs(case, residual=True, dtype=torch.float32)

    def step(sources, flows, logits, target):
        losses = ops.warp_blend_l1(
            sources, flows, logits, target, residual=True, padding_mode="border", align_corners=True
        )
        blend = ops.warp_blend(sources, flows, logits, residual=True, padding_mode="border", align_corners=True)
        return losses.sort().values[: case.B // 2 + 1].mean() + blend.square().mean()

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend=compile_backend)
    results = []
    for fn in (step, compiled):
        f = flows.detach().requires_grad_()
        lg = logits.detach().requires_grad_()
        value = fn(sources, f, lg, target)
        results.append((value, *torch.autograd.grad(value, [f, lg])))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want)


def test_without_extension_auto_warns_once_with_the_reason_and_the_fix():
    """A missing _C: the import is silent, the first call that falls back warns (FallbackWarning,
    naming the reason and the rebuild command), later calls do not, and the result is right."""
    code = (
        "import sys, warnings\n"
        "sys.modules['fabnet._C'] = None\n"
        "with warnings.catch_warnings(record=True) as at_import:\n"
        "    warnings.simplefilter('always')\n"
        "    import torch, fabnet.ops as ops\n"
        "assert not [w for w in at_import if 'fabnet' in str(w.message)], at_import\n"
        "s = torch.rand(1, 2, 3, 4, 4); f = torch.zeros(1, 2, 2, 4, 4)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    for _ in range(3):\n"
        "        out = ops.warp_blend(s, f, residual=True, align_corners=True)\n"
        "mine = [w for w in caught if issubclass(w.category, ops.FallbackWarning)]\n"
        "assert len(mine) == 1, [str(w.message) for w in caught]\n"
        "assert mine[0].filename == '<string>', mine[0].filename  # points at the caller's line\n"
        "assert torch.allclose(out, s.mean(1), atol=1e-6)\n"
        "print(mine[0].message)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "runs the slower PyTorch reference on cpu tensors" in result.stdout
    assert "fabnet._C could not be loaded" in result.stdout and "pip install -e ." in result.stdout


def test_explicit_reference_does_not_warn():
    code = (
        "import sys, warnings\n"
        "sys.modules['fabnet._C'] = None\n"
        "import torch, fabnet.ops as ops\n"
        "warnings.simplefilter('error', ops.FallbackWarning)\n"
        "ops.warp_blend(torch.rand(1, 2, 3, 4, 4), torch.zeros(1, 2, 2, 4, 4), backend='reference')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_triton_declines_source_gradients_under_deterministic_algorithms():
    """Its source gradient adds with atomics: "auto" must not pick it when the user asked for
    deterministic algorithms (the cuda backend has a fixed-order sum)."""
    from fabnet.ops.checks import validate
    from tests.ops.inputs import Case, make_inputs

    s, f, lg, t = make_inputs(Case(1, 2, 3, 5, 5, 5, 5), dtype=torch.float32, residual=True)
    args = validate(
        s.requires_grad_(), f, lg, t, residual=True, padding_mode="zeros", align_corners=False, needs_target=True
    )
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        on = ops.backends(args)["triton"]
    finally:
        torch.use_deterministic_algorithms(before)
    off = ops.backends(args)["triton"]
    assert any("deterministic" in r for r in on) and not any("deterministic" in r for r in off)
