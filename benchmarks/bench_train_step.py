"""One FAb-Net training step: fused warp/blend/L1 op vs the plain-PyTorch reference op.

A step is: encoder on B*(K+1) frames, flow + confidence decoders on B*K pairs, per-sample L1
(ONE ``warp_blend_l1`` call, or the reference's grid_sample/softmax/L1), the curriculum's window
mean, backward, SGD. Same weights, same batch; only ``FabNet(op_backend=...)`` differs.

    pytest benchmarks/bench_train_step.py --benchmark-only              # timings
    pytest benchmarks/bench_train_step.py --benchmark-disable           # smoke: one B=4 step each

Shapes: S=64, B=32, K=3 on the CPU; the paper's S=256 on a GPU in fp32 and bf16 autocast (skipped
without CUDA).
"""

import pytest
import torch

from benchmarks.conftest import record
from fabnet import ops
from fabnet.model import FabNet
from fabnet.train.curriculum import Curriculum

_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# (device, S, B, K, precision): bf16 is autocast of the encoder and decoders (the GPU training
# setting); fp32 beside it on a GPU, for the op's share at full precision.
CASES = [
    pytest.param("cpu", 64, 32, 3, "fp32", id="cpu-S64-B32-K3"),
    pytest.param("cuda", 256, 32, 3, "fp32", id="cuda-S256-B32-K3-fp32", marks=_GPU),
    pytest.param("cuda", 256, 32, 3, "bf16", id="cuda-S256-B32-K3-bf16", marks=_GPU),
]


def _providers(device):
    fused = "cuda" if device == "cuda" else "cpu"
    return [pytest.param(fused, id="fused"), pytest.param("reference", id="reference")]


def _step_fn(device, size, batch, k, backend, channels_last=False, bf16=False):
    torch.manual_seed(0)
    model = FabNet(size, k, op_backend=backend, channels_last=channels_last, autocast_bf16=bf16).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    curriculum = Curriculum(True)
    g = torch.Generator().manual_seed(1)
    target = torch.rand(batch, 3, size, size, generator=g).to(device)
    sources = torch.rand(batch, k, 3, size, size, generator=g).to(device)

    def step():
        loss = curriculum.select(model(target, sources))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return float(loss.detach())

    return step


@pytest.mark.parametrize("backend_kind", ["fused", "reference"])
@pytest.mark.parametrize("dev,size,batch,k,precision", CASES)  # not "device": conftest's session fixture
def test_train_step(benchmark, copy_gbps, dev, size, batch, k, precision, backend_kind):
    device = dev
    if backend_kind == "fused":
        backend = "cuda" if device == "cuda" else "cpu"
        reasons = ops.backends().get(backend, [])
        if reasons:
            pytest.skip(f"backend {backend!r} unavailable: {reasons}")
    else:
        backend = "reference"
    if benchmark.disabled:
        batch = 4  # smoke run (--benchmark-disable): the same code path, a CPU step in well under a second
    step = _step_fn(device, size, batch, k, backend, channels_last=device == "cuda", bf16=precision == "bf16")
    benchmark.group = f"train-step {device} S={size} B={batch} K={k} {precision}"
    benchmark.extra_info.update(
        size=size,
        batch=batch,
        num_sources=k,
        backend=backend,
        frames_per_step=batch * (k + 1),
        threads=torch.get_num_threads(),
    )
    if not benchmark.disabled:
        step()  # warm-up: allocator, one-time kernel set-up
    # CPU steps take seconds: a few rounds give a stable median without a minutes-long run. One
    # warm-up round each: the first step in a process also pays oneDNN's one-time set-up, which
    # without it fell on whichever provider ran first (the fused one) and made it look 1-3% slower.
    loss = benchmark.pedantic(step, rounds=5 if device == "cuda" else 3, iterations=1, warmup_rounds=1)
    assert torch.isfinite(torch.tensor(loss))
    # The summary's "vs eager" column is the step's speed-up over the reference op. Bytes: the
    # batch's frames read once (B * (K + 1) * 3 * S * S float32); a step is compute-bound, so its
    # GB/s column only says how many frame bytes a second of training consumes.
    frame_bytes = batch * (k + 1) * 3 * size * size * 4
    record(benchmark, benchmark.group, backend_kind if backend_kind == "reference" else "fused", frame_bytes, copy_gbps)
