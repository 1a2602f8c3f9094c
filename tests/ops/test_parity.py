"""Every backend of the op against the float64 F.grid_sample reference, by one rule.

Backends: "cpu" (the C++ kernels, each instruction-set variant this CPU runs), "triton-interpreter"
(the Triton kernels as numpy code on the CPU, in a child process), and, on a GPU, "cuda" and
"triton". Each runs both ops forward and backward with every gradient on the configurations of
tests/ops/parity.py: every case x option x dtype, logits absent or 5-d, permuted strides, the
gather-only backward, single-pixel axes and several blocks per sample (the interpreter takes a
rotation of them, ~1 minute on 2 cores). The CUDA kernels' logic also runs on the CPU in
test_cuda_emulation.py (host-compiled .cu files).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

from fabnet import ops
from tests.ops import parity
from tests.ops.parity import CONFIGS, INTERPRETER_CONFIGS, Config

REPO = Path(__file__).resolve().parents[2]

needs_extension = pytest.mark.skipif(not ops.extension.available(), reason="fabnet._C not built")
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def interpreted() -> dict:
    """The interpreter's measurements for INTERPRETER_CONFIGS, from one child process."""
    env = dict(
        os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tests.ops.triton_interpret_worker"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, f"interpreter run failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout)


def _judge(config: Config, checks: dict, *, gpu: bool) -> None:
    problems = parity.failures(config, checks, gpu=gpu)
    assert not problems, f"{config.id}:\n" + "\n".join(problems)


def _measure_here(config: Config, backend: str, device: str) -> dict:
    reasons = parity.unavailable(config, backend, device)
    if reasons:
        pytest.skip(f"{backend}: " + "; ".join(reasons))
    torch.manual_seed(zlib.crc32(config.id.encode()))  # the same draw in every session
    return parity.measure(config, backend, device)


@pytest.fixture
def cpu_isa(request):
    """Runs the test on one instruction-set variant of the CPU kernels, then back to "auto"."""
    ops.extension.set_cpu_isa(request.param)
    yield request.param
    ops.extension.set_cpu_isa("auto")


@needs_extension
@pytest.mark.parametrize("cpu_isa", ops.extension.cpu_isas(), indirect=True)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id)
def test_cpu(config, cpu_isa):
    """Every variant this CPU runs (x86-64-v4, -v3 and the baseline on an AVX-512 machine)."""
    _judge(config, _measure_here(config, "cpu", "cpu"), gpu=False)


@needs_triton
@pytest.mark.parametrize("config", INTERPRETER_CONFIGS, ids=lambda c: c.id)
def test_triton_interpreter(interpreted, config):
    result = interpreted.get(config.id)
    assert result is not None, f"{config.id}: no result from the interpreter run"
    assert "error" not in result, f"{config.id}: {result.get('error')}"
    _judge(config, result["checks"], gpu=False)


@needs_triton
def test_triton_interpreter_opcheck(interpreted):
    """opcheck's schema and autograd-registration tests on the interpreted Triton ops."""
    assert interpreted.get("opcheck") == {"ok": True}, interpreted.get("opcheck")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id)
def test_gpu(backend, config):
    _judge(config, _measure_here(config, backend, "cuda"), gpu=True)


def test_rule_catches_a_wrong_kernel():
    """The judge is not vacuous: a gradient off by 1e-3, a NaN left in an output, a nonzero
    gradient where the upstream was zero and a missing gradient each fail."""
    config = CONFIGS[0]
    good = {
        name: {"error": 0.0, "dtype_ok": True, "shape_ok": True, "scale": 1.0, "skipped_sample_zero": True}
        for name in parity.expected_checks(config)
    }
    assert parity.failures(config, good) == []
    for name, change in [
        ("warp_blend.grad_flows", {"error": 1e-3}),
        ("warp_blend.output", {"error": float("nan")}),
        ("warp_blend_l1.grad_logits", {"skipped_sample_zero": False}),
        ("warp_blend_l1.grad_sources", {"missing": "kernel"}),
    ]:
        bad = dict(good)
        bad[name] = change if "missing" in change else good[name] | change
        assert parity.failures(config, bad), f"{name} {change} passed the rule"
