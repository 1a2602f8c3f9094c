"""The CPU kernels' instruction-set variants against each other and the eager reference.

    pytest benchmarks/bench_cpu_isa.py --benchmark-only

fabnet._C carries the CPU kernels for the build's baseline (x86-64-v2 by default) and, on x86-64,
for x86-64-v3 (AVX2) and x86-64-v4 (AVX-512), choosing the best this CPU runs. This file times
each variant the CPU runs (``fabnet.ops.extension.set_cpu_isa``) at the training shape, FAb-Net's
options, fp32: the loss forward, and forward+backward with flow and logit gradients.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.bench_warp_blend import OPTIONS, SHAPES, _inputs, _nbytes
from benchmarks.conftest import record
from fabnet import ops
from fabnet.ops import extension

SHAPE = "8x3x3x128x128"
VARIANTS = extension.cpu_isas() if extension.available() else []
PROVIDERS = VARIANTS + ["reference"]


@pytest.fixture
def variant(request):
    name = request.param
    if name != "reference":
        extension.set_cpu_isa(name)
    yield name
    if extension.available():
        extension.set_cpu_isa("auto")


def _run(name, *inputs):
    backend = "reference" if name == "reference" else "cpu"
    return ops.warp_blend_l1(*inputs, **OPTIONS, backend=backend)


@pytest.mark.parametrize("variant", PROVIDERS, indirect=True)
def test_forward(benchmark, variant, copy_gbps):
    inputs = _inputs(SHAPES[SHAPE], torch.device("cpu"))
    group = f"warp_blend_l1 forward {SHAPE} fp32 cpu, by instruction set"
    benchmark.group = group

    def run():
        with torch.no_grad():
            return _run(variant, *inputs)

    run()
    losses = benchmark(run)
    assert torch.isfinite(losses).all()
    record(benchmark, group, variant, _nbytes(*inputs), copy_gbps)


@pytest.mark.parametrize("variant", PROVIDERS, indirect=True)
def test_forward_backward(benchmark, variant, copy_gbps):
    sources, flows, logits, target = _inputs(SHAPES[SHAPE], torch.device("cpu"))
    flows.requires_grad_()
    logits.requires_grad_()
    group = f"warp_blend_l1 forward+backward {SHAPE} fp32 cpu, by instruction set"
    benchmark.group = group

    def run():
        return torch.autograd.grad(_run(variant, sources, flows, logits, target).sum(), [flows, logits])

    run()
    g_flows, g_logits = benchmark(run)
    assert torch.isfinite(g_flows).all()
    nbytes = 2 * _nbytes(sources, flows, logits, target) + _nbytes(g_flows, g_logits)
    record(benchmark, group, variant, nbytes, copy_gbps)
