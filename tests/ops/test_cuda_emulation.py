"""The CUDA kernels' logic on the CPU: csrc/cuda/*.cu built by the host compiler, each launch
run on CPU threads (tests/ops/cuda_emulation.h), against the float64 reference.

This checks what the GPU tests check about values (indexing, masks, the 16-byte packed path and
the scalar one, channel tiles, the online softmax, the block reduction of the loss, the
zero-upstream skip, the gather-only backward, every dtype's conversions) on machines without a
GPU. It does not check the binding (warp_blend_binding.cpp; its allocation logic is mirrored in
``Emulated`` below) nor anything about speed; test_cuda_compile.py covers compilation by nvcc.
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
import os
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest
import torch

from fabnet.ops import reference
from tests.ops import parity
from tests.ops.inputs import OPTIONS, TOLERANCE, Case, make_inputs
from tests.ops.parity import Config

REPO = Path(__file__).resolve().parents[2]
CXX = shutil.which("g++") or shutil.which("c++")
DTYPE_CODE = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def _cuda_include() -> Path | None:
    """A CUDA toolkit include directory (for cuda_runtime.h / cuda_fp16.h / cuda_bf16.h)."""
    nvcc = shutil.which("nvcc")
    homes = [
        os.environ.get("CUDA_HOME"),
        os.environ.get("CUDA_PATH"),
        str(Path(nvcc).resolve().parents[1]) if nvcc else None,
        "/usr/local/cuda",
    ]
    candidates = [Path(h, "include") for h in homes if h]
    return next((c for c in candidates if (c / "cuda_fp16.h").exists()), None)


CUDA_INCLUDE = _cuda_include()
pytestmark = pytest.mark.skipif(
    CXX is None or CUDA_INCLUDE is None, reason="needs a host C++ compiler and the CUDA toolkit headers"
)


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    out = tmp_path_factory.mktemp("emulation") / "warp_blend_emulated.so"
    cmd = [
        CXX,
        "-std=c++20",
        "-O1",
        "-shared",
        "-fPIC",
        "-DFABNET_CUDA_EMULATION",
        f"-I{REPO / 'tests' / 'ops'}",
        f"-I{REPO / 'csrc'}",
        f"-I{CUDA_INCLUDE}",
        "-x",
        "c++",
        *(str(cu) for cu in sorted((REPO / "csrc" / "cuda").glob("*.cu"))),
        "-x",
        "c++",
        str(REPO / "tests" / "ops" / "cuda_emulation_capi.cpp"),
        "-o",
        str(out),
        "-lpthread",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr[-6000:]}"
    handle = ctypes.CDLL(str(out))
    handle.emu_num_partials.restype = ctypes.c_int64
    return handle


def _i64(values) -> ctypes.Array:
    return (ctypes.c_int64 * len(values))(*values)


def _ptr(t: torch.Tensor | None):
    return ctypes.c_void_p(t.data_ptr()) if t is not None else None


def _strides(t: torch.Tensor | None, n: int):
    return _i64(t.stride() if t is not None else (0,) * n)


class Emulated:
    """The ops of warp_blend_binding.cpp over the emulated launchers (same allocations)."""

    def __init__(
        self, lib, sources, flows, logits, target, *, residual, padding_mode, align_corners, sms=False, int64=False
    ):
        """sms: tell the launchers the device has 132 SMs (else unknown); int64: force 64-bit offsets."""
        self.lib = lib
        self.t = (sources, flows, logits, target)
        B, K, C, Hs, Ws = sources.shape
        self.shape = (B, K, C, Hs, Ws, flows.shape[3], flows.shape[4])
        self.common = [
            DTYPE_CODE[sources.dtype],
            _i64(self.shape),
            _ptr(sources),
            _strides(sources, 5),
            _ptr(flows),
            _strides(flows, 5),
            _ptr(logits),
            _strides(logits, 4),
        ]
        self.flags = int(residual) | (2 if padding_mode == "border" else 0) | (4 if align_corners else 0)
        self.flags |= (8 if sms else 0) | (16 if int64 else 0)
        self.acc = torch.float64 if sources.dtype == torch.float64 else torch.float32
        # What the binding passes: F.affine_grid's identity axes, taken from affine_grid itself.
        H, W = flows.shape[3:]
        if residual:
            grid = reference.identity_grid(1, H, W, align_corners=align_corners, dtype=self.acc, device=flows.device)
            self.identity = (grid[0, 0, :, 0].contiguous(), grid[0, :, 0, 1].contiguous())
        else:
            self.identity = (torch.zeros(W, dtype=self.acc), torch.zeros(H, dtype=self.acc))
        self.identity_ptrs = (ctypes.c_void_p * 2)(*(t.data_ptr() for t in self.identity))

    def forward(self) -> torch.Tensor:
        B, K, C, Hs, Ws, H, W = self.shape
        out = torch.full((B, C, H, W), float("nan"), dtype=self.t[0].dtype)  # poisoned
        self.lib.emu_forward(*self.common, self.flags, self.identity_ptrs, _ptr(out))
        return out

    def l1(self) -> torch.Tensor:
        target = self.t[3]
        tail = [_ptr(target), _strides(target, 4), self.flags, self.identity_ptrs]
        n = self.lib.emu_num_partials(*self.common, *tail)
        partials = torch.full((self.shape[0], n), float("nan"), dtype=self.acc)
        loss = torch.full((self.shape[0],), float("nan"), dtype=self.t[0].dtype)
        self.lib.emu_l1(*self.common, *tail, _ptr(partials), _ptr(loss))
        return loss

    def backward(self, grad, mask, loss: bool, deterministic: bool = False):
        sources, flows, logits, target = self.t
        B, K, C, Hs, Ws, H, W = self.shape
        target = target if loss else None
        nan = dict(fill_value=float("nan"), dtype=sources.dtype)
        g_src = torch.zeros(sources.shape, dtype=self.acc) if mask[0] else None
        g_flow = torch.full(flows.shape, **nan) if mask[1] else None
        g_logit = torch.full(logits.shape, **nan) if (mask[2] and logits is not None) else None
        g_tgt = torch.full(target.shape, **nan) if (loss and mask[3]) else None
        g_strides = _i64(list(grad.stride()) + [0] * (4 - grad.dim()))
        contributions = taps = None
        if deterministic and mask[0]:  # what the binding allocates
            contributions = torch.zeros(B, K, C, H * W * 4, dtype=self.acc)
            taps = torch.zeros(B, K, 1, H * W * 4, dtype=torch.int32)
        self.lib.emu_backward(
            *self.common,
            _ptr(target),
            _strides(target, 4),
            self.flags,
            self.identity_ptrs,
            _ptr(grad),
            g_strides,
            _ptr(g_src) if contributions is None else None,
            _ptr(g_flow),
            _ptr(g_logit),
            _ptr(g_tgt),
            _ptr(contributions),
            _ptr(taps),
        )
        if contributions is not None:  # the binding's fixed-order sum
            planes = torch.arange(B * K * C, dtype=torch.int64).view(B, K, C, 1) * (Hs * Ws)
            index = taps.long() + planes
            g_src.view(-1).index_add_(0, index.view(-1), contributions.view(-1))
        return [g_src.to(sources.dtype) if g_src is not None else None, g_flow, g_logit, g_tgt]


def emulated_runner(lib, *, deterministic: bool = False, **launch) -> parity.Runner:
    """tests/ops/parity.py's runner for the emulated kernels: the op's output and the gradients
    of the leaves that require one, upstream given (``launch``: Emulated's sms / int64)."""

    def run(fn_name, leaves, upstream, options):
        loss = fn_name == "warp_blend_l1"
        leaves = leaves if loss else leaves[:3]
        sources, flows, logits = (t.detach() if t is not None else None for t in leaves[:3])
        target = leaves[3].detach() if loss else None
        if logits is not None and logits.dim() == 5:  # the public op squeezes (B, K, 1, H, W)
            logits = logits.squeeze(2)
        emulated = Emulated(lib, sources, flows, logits, target, **options, **launch)
        out = emulated.l1() if loss else emulated.forward()
        mask = [t is not None and t.requires_grad for t in leaves] + [False] * (4 - len(leaves))
        grads = emulated.backward(upstream, mask, loss, deterministic=deterministic)
        return out, [g.view(t.shape) if m else None for g, t, m in zip(grads, leaves, mask)]

    return run


_SHAPES = [Case(2, 1, 3, 7, 6, 5, 9), Case(2, 2, 3, 16, 16, 12, 16), Case(2, 3, 4, 9, 9, 6, 5)]
CONFIGS = [
    Config(dataclasses.replace(_SHAPES[i % 3], K=k), *opts, logits=("given", "none", "5d")[i % 3])
    for i, (opts, k) in enumerate(itertools.product(OPTIONS, [1, 2, 3]))
]
CONFIGS += [
    # Five channels: two channel tiles (the backward adds the second tile's gradients).
    Config(Case(2, 2, 5, 8, 7, 9, 12), True, "border", True),
    Config(Case(2, 3, 6, 8, 7, 9, 11), False, "zeros", False, logits="none"),
    # Several blocks per sample, packed (W % 4 == 0) and not.
    Config(Case(2, 2, 3, 20, 24, 24, 40), True, "border", True),
    Config(Case(2, 2, 3, 20, 24, 23, 37), True, "zeros", False),
    # Permuted inputs (scalar path; read through their strides) and the gather-only backward.
    Config(Case(2, 3, 3, 8, 8, 8, 12), True, "border", True, contiguous=False),
    Config(Case(2, 3, 3, 8, 8, 8, 12), True, "border", True, sources_grad=False),
    # Single-pixel axes: the identity grid is 0 there.
    Config(Case(2, 2, 3, 1, 6, 1, 8), True, "zeros", True),
    # Storage types below float64: float accumulation, half conversions, packs of 4 halves
    # (judged by parity.py's rule for each dtype).
    *(Config(Case(2, 3, 3, 8, 8, 8, 12), True, "border", True, dtype=d) for d in ("float32", "float16", "bfloat16")),
    Config(Case(2, 2, 3, 7, 6, 5, 9), False, "zeros", False, dtype="bfloat16", logits="none"),
]


def _check_against_reference(lib, config: Config, variant: dict) -> None:
    torch.manual_seed(zlib.crc32(config.id.encode()))  # the same draw in every session
    problems = parity.failures(config, parity.measure(config, emulated_runner(lib, **variant)))
    assert not problems, f"{config.id}:\n" + "\n".join(problems)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id)
def test_emulated_cuda_kernels(lib, config):
    _check_against_reference(lib, config, {})


# Launch variants, each on cases that reach its code: 64-bit offsets (the kernels for tensors of
# 2^31 elements or more), an H100's SM count (aligned rows that the small-grid rule unpacks), and
# deterministic source gradients (per-pixel contributions, summed in a fixed order).
VARIANT_CONFIGS = [
    Config(Case(2, 3, 3, 8, 8, 8, 12), True, "border", True, dtype="float32"),
    Config(Case(2, 2, 5, 8, 7, 9, 12), True, "zeros", False),
    Config(Case(2, 3, 3, 8, 8, 8, 12), True, "border", True, dtype="bfloat16"),
    Config(Case(2, 2, 3, 20, 24, 23, 37), False, "zeros", True, logits="none", contiguous=False),
    # Nine sources: past the backward's shared-memory cache of 8 softmax weights.
    Config(Case(2, 9, 3, 8, 8, 8, 12), True, "border", False),
    # Four channels in the packed forward: two tiles of 3 and 1.
    Config(Case(2, 2, 4, 8, 8, 8, 12), True, "zeros", True),
]
VARIANTS = {"int64": dict(int64=True), "sms": dict(sms=True), "deterministic": dict(deterministic=True)}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("config", VARIANT_CONFIGS, ids=lambda c: c.id)
def test_emulated_launch_variants(lib, config, variant):
    _check_against_reference(lib, config, VARIANTS[variant])


def test_deterministic_source_gradients_repeat_bitwise(lib):
    """Flows that converge on a few source pixels (where atomics contend and their order varies):
    the deterministic path gives the same bits on every call, and the reference's values."""
    s, f, lg, _ = make_inputs(Case(2, 3, 3, 8, 8, 8, 12), dtype=torch.float32, residual=False)
    f = (f * 0.05).contiguous()  # every sample within a pixel or two of the centre
    emulated = Emulated(lib, s, f, lg, None, residual=False, padding_mode="zeros", align_corners=False)
    up = torch.randn(2, 3, 8, 12)
    first = emulated.backward(up, [True, False, False, False], loss=False, deterministic=True)[0]
    again = emulated.backward(up, [True, False, False, False], loss=False, deterministic=True)[0]
    assert torch.equal(first, again)
    leaves = [t.double().requires_grad_(i == 0) for i, t in enumerate((s, f, lg))]
    ref = reference.warp_blend_reference(*leaves, residual=False, padding_mode="zeros", align_corners=False)
    (want,) = torch.autograd.grad(ref, leaves[0], up.double())
    torch.testing.assert_close(first.double(), want, atol=1e-5, rtol=1e-5)


def test_loss_reduction_is_deterministic(lib):
    """The per-block partial sums and their fixed-order finalisation give identical losses."""
    s, f, lg, t = make_inputs(Case(3, 2, 3, 20, 20, 30, 40), dtype=torch.float32, residual=True)
    emulated = Emulated(lib, s, f, lg, t, residual=True, padding_mode="border", align_corners=True)
    first = emulated.l1()
    assert torch.isfinite(first).all()
    assert torch.equal(emulated.l1(), first)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 1, 16, 16, 16, 16), (1, 1, 1, 7, 7, 7, 7), (2, 2, 3, 9, 13, 9, 13)], ids=str)
def test_zero_offsets_take_the_references_cells(lib, shape, align_corners, dtype):
    """At zero offsets every sample sits on a pixel centre: the flow gradient must be taken
    towards the next pixel, as grid_sample takes it (tests/ops/test_pixel_centres.py)."""
    from tests.ops.test_pixel_centres import flow_grad, zero_offset_inputs

    sources, flows, logits, upstream = zero_offset_inputs(shape, dtype)
    options = dict(residual=True, padding_mode="border", align_corners=align_corners)
    emulated = Emulated(lib, sources, flows, logits, None, **options)
    _, g_flows, _, _ = emulated.backward(upstream, [False, True, False, False], loss=False)
    _, g_ref = flow_grad(
        "reference", sources, flows, logits, upstream, padding_mode="border", align_corners=align_corners
    )
    atol, rtol = TOLERANCE[dtype]
    torch.testing.assert_close(g_flows, g_ref, atol=max(atol, 1e-5 if dtype == torch.float32 else 0), rtol=rtol)


@pytest.mark.parametrize("where", ["flow", "logit"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=str)
def test_non_finite_values_show(lib, value, where):
    """NaN and infinity as grid_sample and softmax show them (tests/ops/test_non_finite.py)."""
    from tests.ops.test_non_finite import _inputs

    sources, flows, logits, target = _inputs(torch.float64)
    if where == "flow":
        flows[0, 1, 0, 3, 3] = value
    else:
        logits[0, 1, 3, 3] = value
    options = dict(residual=True, padding_mode="zeros", align_corners=False)
    emulated = Emulated(lib, sources, flows, logits, target, **options)
    upstream = torch.ones(2, 3, 6, 8, dtype=torch.float64)
    got = [emulated.forward(), *emulated.backward(upstream, [True, True, True, False], loss=False)[:3]]
    leaves = [t.clone().requires_grad_() for t in (sources, flows, logits)]
    ref = reference.warp_blend_reference(*leaves, padding_mode="zeros", align_corners=False, residual=True)
    want = [ref.detach(), *torch.autograd.grad(ref, leaves, upstream)]
    for name, g, w in zip(["blend", "grad sources", "grad flows", "grad logits"], got, want):
        assert torch.equal(torch.isnan(g), torch.isnan(w)), f"{name}: NaN pattern differs"
        torch.testing.assert_close(g, w, atol=1e-9, rtol=1e-9, equal_nan=True, msg=name)
    loss = emulated.l1()
    assert torch.isnan(loss[0]) == (where == "flow" or value != float("-inf"))


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_edge_coordinates(lib, padding_mode, align_corners):
    """The CUDA sampling math at the frame's edges (tests/ops/test_grid_sample.py's grid)."""
    from tests.ops.test_grid_sample import edge_grid

    g = torch.Generator().manual_seed(6)
    x = torch.rand(1, 2, 5, 7, generator=g, dtype=torch.float64)
    grid = edge_grid(torch.float64)
    sources, flows = x.unsqueeze(1), grid.permute(0, 3, 1, 2).unsqueeze(1).contiguous()
    emulated = Emulated(
        lib, sources, flows, None, None, residual=False, padding_mode=padding_mode, align_corners=align_corners
    )
    up = torch.randn(1, 2, 4, 9, generator=g, dtype=torch.float64)
    got = [emulated.forward(), *emulated.backward(up, [True, True, False, False], loss=False)[:2]]
    xs, gs = x.clone().requires_grad_(), grid.clone().requires_grad_()
    want = torch.nn.functional.grid_sample(xs, gs, padding_mode=padding_mode, align_corners=align_corners)
    gx, gg = torch.autograd.grad(want, (xs, gs), up)
    torch.testing.assert_close(got[0], want.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[1][:, 0], gx, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[2][:, 0].permute(0, 2, 3, 1), gg, rtol=1e-10, atol=1e-10)
