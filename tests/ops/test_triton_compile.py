"""The Triton kernels compiled for sm_80 and sm_90 on a CPU machine (cubins, no GPU needed) without
register spills, and the backend's refusal of CPU tensors outside the interpreter. Their values
are checked in Triton's interpreter by test_parity.py, which cannot catch what only the compiler
rejects or spills.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.ops.inputs import Case

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton is not installed (pip install triton)"
)

REPO = Path(__file__).resolve().parents[2]


def test_cpu_tensors_need_the_interpreter():
    """Without TRITON_INTERPRET=1 the backend refuses CPU tensors and says why."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("this session runs with TRITON_INTERPRET=1")
    import torch

    from fabnet import ops

    sources = torch.rand(1, 1, 1, 3, 3)
    flows = torch.rand(1, 1, 2, 3, 3)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        ops.warp_blend(sources, flows, backend="triton")
    assert ops.backends()["triton"] == []  # triton is installed: nothing else stands in the way


# ---------------------------------------------------------------------------------------------
# Compiled for GPUs. The launchers run with a ``wrap`` that records each launch instead of
# making it; each recorded launch is compiled by Triton for the target (its own ptxas, no GPU),
# and the cubin's resource usage (Triton's bundled cuobjdump) must show no local memory (spills).

_TRITON_TYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}


class _Recorder:
    """Stands in for torch.library.wrap_triton: kernel[grid](*args, **kwargs) records the call."""

    def __init__(self):
        self.launches = []

    def __call__(self, kernel):
        recorder = self

        class _Launch:
            def __getitem__(self, grid):
                return lambda *args, **kwargs: recorder.launches.append((kernel, args, kwargs))

        return _Launch()


def _signature(kernel, args, kwargs):
    import torch

    signature, constexprs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in kwargs:
            signature[name] = "constexpr"
            constexprs[(i,)] = kwargs[name]
            continue
        value = args[i]
        if isinstance(value, torch.Tensor):
            signature[name] = "*" + _TRITON_TYPES[str(value.dtype).removeprefix("torch.")]
        elif isinstance(value, bool):
            signature[name] = "i1"
        elif isinstance(value, int):
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
        else:
            signature[name] = "fp32"
    return signature, constexprs


def _training_launches():
    """The launches of the training step (residual, border, align_corners; bf16 and fp32) and of
    the other main paths: blend forward/backward, every gradient, no logits, fp16, fp64."""
    import torch

    from fabnet.kernels import warp_blend as kw
    from tests.ops.inputs import make_inputs

    recorder = _Recorder()
    training = dict(residual=True, border=True, align_corners=True)
    plain = dict(residual=False, border=False, align_corners=False)
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        s, f, lg, t = make_inputs(Case(2, 3, 3, 32, 32, 32, 32), dtype=dtype, residual=True)
        grad_loss = torch.ones(2, dtype=dtype)
        kw.forward(s, f, lg, t, **training, wrap=recorder)  # the loss
        kw.backward(
            grad_loss,
            s,
            f,
            lg,
            t,
            **training,
            need_sources=False,
            need_flows=True,
            need_logits=True,
            need_target=False,
            wrap=recorder,
        )  # training backward
        if dtype in (torch.float32, torch.bfloat16):
            kw.forward(s, f, None, None, **plain, wrap=recorder)  # the blend
            kw.backward(
                torch.ones(2, 3, 32, 32, dtype=dtype),
                s,
                f,
                lg,
                None,
                **plain,
                need_sources=True,
                need_flows=True,
                need_logits=True,
                need_target=False,
                wrap=recorder,
            )
            kw.backward(
                grad_loss,
                s,
                f,
                lg,
                t,
                **training,
                need_sources=True,
                need_flows=True,
                need_logits=True,
                need_target=True,
                wrap=recorder,
            )  # every gradient
        if dtype == torch.float32:  # the small-problem configs (64 pixels, 2 warps) an H100 gets here
            kw.forward(s, f, lg, t, **training, wrap=recorder, sms=132)
            kw.backward(
                grad_loss,
                s,
                f,
                lg,
                t,
                **training,
                need_sources=False,
                need_flows=True,
                need_logits=True,
                need_target=False,
                wrap=recorder,
                sms=132,
            )
    return recorder.launches


def _triton_tool(name: str) -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name


@pytest.mark.parametrize("arch", [80, 90])
def test_kernels_compile_for_gpu_without_spills(arch, tmp_path):
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("kernels are interpreted in this session (TRITON_INTERPRET=1)")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    cuobjdump = _triton_tool("cuobjdump")
    if not cuobjdump.exists():
        pytest.skip(f"{cuobjdump} not found (this triton ships no CUDA tools)")
    launches = _training_launches()
    assert len(launches) == 4 * 2 + 2 * 3 + 2
    report, failures = [], []
    for kernel, args, kwargs in launches:
        signature, constexprs = _signature(kernel, args, kwargs)
        options = {"num_warps": kwargs["num_warps"]}
        constexprs = {k: v for k, v in constexprs.items() if kernel.arg_names[k[0]] != "num_warps"}
        signature.pop("num_warps", None)
        compiled = triton.compile(
            ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
            target=GPUTarget("cuda", arch, 32),
            options=options,
        )
        cubin = tmp_path / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run([str(cuobjdump), "-res-usage", str(cubin)], capture_output=True, text=True, timeout=120)
        assert usage.returncode == 0, usage.stderr
        m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage.stdout)
        assert m, usage.stdout
        regs, stack, _, local = map(int, m.groups())
        what = f"sm_{arch} {kernel.fn.__name__} {signature['src_ptr']} BLOCK={kwargs['BLOCK']} " + " ".join(
            k for k in ("LOSS", "HAS_LOGITS", "NEED_SRC", "NEED_FLOW", "NEED_LOGIT", "NEED_TGT") if kwargs.get(k)
        )
        report.append(f"{what}: {regs} registers, stack {stack}, local {local}")
        if local or stack:
            failures.append(report[-1])
    print("\n" + "\n".join(report))
    assert not failures, "spills:\n" + "\n".join(failures)
