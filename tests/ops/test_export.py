"""The op in exported programs: torch.jit.trace and both ONNX exporters record the reference
(F.grid_sample, which ONNX has as GridSample), torch.export keeps the fused op, and scripted code
calls the registered op. Each on the CPU here and on a CUDA device in the GPU run."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

from fabnet import ops
from tests.ops.test_drop_in import DEVICES, _op_inputs

pytestmark = pytest.mark.skipif(not ops.extension.available(), reason="fabnet._C not built")


class _Warper(torch.nn.Module):
    def forward(self, sources, flows, logits, target):
        options = dict(residual=True, padding_mode="border", align_corners=True)
        return ops.warp_blend(sources, flows, logits, **options), ops.warp_blend_l1(
            sources, flows, logits, target, **options
        )


def _export_inputs(device="cpu"):
    s, f, lg, t = _op_inputs(device, torch.float32, B=2, K=3, C=3, Hs=9, Ws=10, H=7, W=8)
    return s, f * 0.1, lg, t


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.parametrize("device", DEVICES)
def test_jit_trace_records_the_reference(device):
    inputs = _export_inputs(device)
    with warnings.catch_warnings():
        # The checks of traced sizes hold for the traced shapes: they say nothing (checks.py).
        warnings.simplefilter("error", torch.jit.TracerWarning)
        traced = torch.jit.trace(_Warper(), inputs)
    graph = str(traced.graph)
    assert "fabnet::" not in graph and "aten::grid_sampler" in graph
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    for got, want in zip(torch.jit.load(buffer)(*inputs), _Warper()(*inputs)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript_exporter", "dynamo_exporter"])
def test_onnx_export_runs_in_onnxruntime(dynamo, device, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    inputs = _export_inputs(device)
    path = tmp_path / "warper.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            pytest.importorskip("onnxscript")
            torch.onnx.export(_Warper(), inputs, dynamo=True, verbose=False).save(str(path))
        else:
            torch.onnx.export(_Warper(), inputs, str(path), dynamo=False)
    session = onnxruntime.InferenceSession(str(path))
    feeds = {i.name: t.cpu().numpy() for i, t in zip(session.get_inputs(), inputs)}
    for got, want in zip(session.run(None, feeds), _Warper()(*inputs)):
        torch.testing.assert_close(torch.from_numpy(got), want.cpu(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_export_keeps_the_fused_op(device):
    inputs = _export_inputs(device)
    program = torch.export.export(_Warper(), inputs)
    assert "fabnet.warp_blend" in str(program.graph)
    for got, want in zip(program.module()(*inputs), _Warper()(*inputs)):
        torch.testing.assert_close(got, want)


def test_torchscript_calls_the_registered_op():
    """torch.jit.script cannot compile the Python API (keyword-only arguments); scripted code
    calls the schema of csrc/fabnet.cpp directly, as the README says."""

    class Scripted(torch.nn.Module):
        def forward(self, sources, flows, logits):
            return torch.ops.fabnet.warp_blend(sources, flows, logits, True, "border", True)

    s, f, lg, _ = _export_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated in 2.13
        scripted = torch.jit.script(Scripted())
    want = ops.warp_blend(s, f, lg, residual=True, padding_mode="border", align_corners=True)
    torch.testing.assert_close(scripted(s, f, lg), want)
