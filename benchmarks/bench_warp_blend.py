"""warp_blend_l1: the fused kernel against the eager reference and torch.compile(reference).

    pytest benchmarks/bench_warp_blend.py --benchmark-only      # timings + summary table
    pytest benchmarks/bench_warp_blend.py --benchmark-disable   # each case once (smoke)

Providers: "fused" (the C++ CPU kernel; CPU runs only), "cuda" (the CUDA kernel) and "triton" (the
Triton kernels), both on a GPU only, "reference" (eager F.grid_sample composition) and
"compiled_reference" (torch.compile of it). dtypes: fp32, and bf16 on a GPU.
Options are FAb-Net's: residual=True, padding_mode="border", align_corners=True. Forward+backward
asks for the gradients training needs: flows and logits, not sources (frames are data).

Minimal bytes: the forward must read sources, flows, logits and target once (the per-sample loss
it writes is negligible). The backward is a second pass that reads them again and writes the
flow and logit gradients, so forward+backward's floor is 2 x inputs + those gradients.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import record, synchronize
from fabnet import ops
from fabnet.ops.reference import warp_blend_l1_reference

OPTIONS = dict(residual=True, padding_mode="border", align_corners=True)
SHAPES = {"8x3x3x128x128": (8, 3, 3, 128, 128), "32x3x3x256x256": (32, 3, 3, 256, 256)}


def _providers(device: torch.device) -> dict:
    compiled = torch.compile(warp_blend_l1_reference, fullgraph=True, dynamic=False)
    providers = {
        "reference": lambda *a: ops.warp_blend_l1(*a, **OPTIONS, backend="reference"),
        "compiled_reference": lambda *a: compiled(*a, **OPTIONS),
    }
    if device.type == "cuda":
        providers["cuda"] = lambda *a: ops.warp_blend_l1(*a, **OPTIONS, backend="cuda")
        providers["triton"] = lambda *a: ops.warp_blend_l1(*a, **OPTIONS, backend="triton")
    else:
        providers["fused"] = lambda *a: ops.warp_blend_l1(*a, **OPTIONS, backend="cpu")
    return providers


ON_GPU = torch.cuda.is_available()
PROVIDER_NAMES = (["cuda", "triton"] if ON_GPU else ["fused"]) + ["reference", "compiled_reference"]
# bf16 is the GPU training dtype; the CPU runs keep fp32 only.
DTYPES = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if ON_GPU else {})}


def _inputs(shape, device, dtype=torch.float32):
    B, K, C, H, W = shape
    g = torch.Generator(device="cpu").manual_seed(0)
    sources = torch.rand(B, K, C, H, W, generator=g).to(device, dtype)
    flows = ((torch.rand(B, K, 2, H, W, generator=g) * 2 - 1) * 0.1).to(device, dtype)
    logits = torch.randn(B, K, H, W, generator=g).to(device, dtype)
    target = torch.rand(B, C, H, W, generator=g).to(device, dtype)
    return sources, flows, logits, target


def _nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.fixture(scope="module")
def providers(device):
    return _providers(device)


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("provider", PROVIDER_NAMES)
def test_forward(benchmark, provider, shape_name, dtype_name, providers, device, copy_gbps):
    inputs = _inputs(SHAPES[shape_name], device, DTYPES[dtype_name])
    fn = providers[provider]
    group = f"warp_blend_l1 forward {shape_name} {dtype_name} {device.type}"
    benchmark.group = group

    def run():
        with torch.no_grad():
            out = fn(*inputs)
        synchronize(device)
        return out

    run()  # warm-up (and compilation for compiled_reference)
    losses = benchmark(run)
    assert losses.shape == (SHAPES[shape_name][0],) and torch.isfinite(losses).all()
    record(benchmark, group, provider, _nbytes(*inputs), copy_gbps)


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("provider", PROVIDER_NAMES)
def test_forward_backward(benchmark, provider, shape_name, dtype_name, providers, device, copy_gbps):
    sources, flows, logits, target = _inputs(SHAPES[shape_name], device, DTYPES[dtype_name])
    flows.requires_grad_()
    logits.requires_grad_()
    fn = providers[provider]
    group = f"warp_blend_l1 forward+backward {shape_name} {dtype_name} {device.type}"
    benchmark.group = group

    def run():
        losses = fn(sources, flows, logits, target)
        grads = torch.autograd.grad(losses.sum(), [flows, logits])
        synchronize(device)
        return grads

    run()
    g_flows, g_logits = benchmark(run)
    assert g_flows.shape == flows.shape and torch.isfinite(g_flows).all()
    nbytes = 2 * _nbytes(sources, flows, logits, target) + _nbytes(g_flows, g_logits)
    record(benchmark, group, provider, nbytes, copy_gbps)


@pytest.mark.skipif(not ON_GPU, reason="source-gradient atomics and their deterministic sum are GPU paths")
@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("provider", ["cuda", "cuda_deterministic", "reference", "compiled_reference"])
def test_source_gradient(benchmark, provider, shape_name, providers, device, copy_gbps):
    """Forward+backward with the sources' gradient too: float atomics against the fixed-order sum
    that torch.use_deterministic_algorithms(True) selects (its cost, stated in the README)."""
    sources, flows, logits, target = _inputs(SHAPES[shape_name], device)
    for t in (sources, flows, logits):
        t.requires_grad_()
    fn = providers["cuda" if provider == "cuda_deterministic" else provider]
    group = f"warp_blend_l1 forward+backward, source grads too {shape_name} fp32 {device.type}"
    benchmark.group = group
    before = torch.are_deterministic_algorithms_enabled()

    def run():
        losses = fn(sources, flows, logits, target)
        grads = torch.autograd.grad(losses.sum(), [sources, flows, logits])
        synchronize(device)
        return grads

    torch.use_deterministic_algorithms(provider == "cuda_deterministic")
    try:
        run()
        g_sources, _, _ = benchmark(run)
    finally:
        torch.use_deterministic_algorithms(before)
    assert g_sources.shape == sources.shape and torch.isfinite(g_sources).all()
    nbytes = 2 * _nbytes(sources, flows, logits, target) + _nbytes(sources, flows, logits)
    record(benchmark, group, provider, nbytes, copy_gbps)
