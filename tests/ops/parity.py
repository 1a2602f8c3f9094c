"""The op's parity checks, written once for every backend: configurations, measurement, tolerance.

``measure(config, backend)`` runs both ops forward and backward on one configuration with one
backend and returns, per output and gradient, the max |kernel - float64 reference| and what the
tolerance rule needs. ``failures(config, checks)`` applies the rule. test_parity.py calls both
in-process for the CPU and GPU backends; the Triton interpreter runs ``measure`` in a child
process (tests/ops/triton_interpret_worker.py) and the same ``failures`` judges what it printed.

The inputs are drawn in float64 and rounded to the storage dtype; the float64 oracle sees the
rounded values, so only the computation's error is measured. The upstream gradient of sample 0 is
zero (when B > 1), so the kernels' zero-upstream skip runs beside the ordinary path.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tests.ops import inputs
from tests.ops.inputs import CASES, OPTIONS, Case, make_inputs

GRAD_NAMES = ("sources", "flows", "logits", "target")
DTYPES = ("float64", "float32", "bfloat16", "float16")

# The tolerance table of tests/ops/inputs.py (by dtype name: the interpreter's results come
# back as JSON): max |kernel - float64 reference| <= atol + rtol * max |reference|; half types
# by flash-attention's rule (see ``bound``).
TOLERANCE = {str(k).removeprefix("torch."): v for k, v in inputs.TOLERANCE.items()}
GPU_TOLERANCE = {str(k).removeprefix("torch."): v for k, v in inputs.GPU_TOLERANCE.items()}
HALF_EPS = {str(k).removeprefix("torch."): v for k, v in inputs.EPS.items()}


@dataclass(frozen=True)
class Config:
    """One parity run: a problem size, the op's options, the storage dtype, the layout."""

    case: Case
    residual: bool
    padding_mode: str
    align_corners: bool
    dtype: str = "float64"
    logits: str = "given"  # "given" (B, K, H, W), "5d" (B, K, 1, H, W), "none"
    contiguous: bool = True
    sources_grad: bool = True  # False: the gather-only backward (training: sources are data)

    @property
    def id(self) -> str:
        return (
            f"{self.case}-res{int(self.residual)}-{self.padding_mode}-ac{int(self.align_corners)}"
            f"-{self.logits}-{self.dtype}"
            + ("" if self.contiguous else "-permuted")
            + ("" if self.sources_grad else "-gather_only")
        )

    @property
    def options(self) -> dict:
        return dict(residual=self.residual, padding_mode=self.padding_mode, align_corners=self.align_corners)


# Beyond CASES (odd widths): W % 4 == 0 takes the CUDA forward's 16-byte packed path, and
# 32 x 32 = 1024 pixels gives several programs / blocks per sample.
PACKED_CASES = [Case(2, 3, 3, 16, 16, 8, 12), Case(2, 2, 4, 20, 24, 32, 32)]
# Single-pixel axes (the identity grid is 0 there; Triton specialises sizes equal to 1) and
# H * W = 323 pixels, more than one program of either Triton kernel.
EDGE_CASES = [Case(2, 2, 3, 1, 6, 1, 7), Case(2, 2, 1, 5, 1, 3, 1), Case(2, 2, 3, 13, 11, 19, 17)]

_GRID_CASES = CASES + PACKED_CASES
_LAYOUTS = list(itertools.product(["none", "5d"], [True, False], [True, False]))

# Every case x every option x every dtype, then the layouts (logits absent or 5-d, permuted
# strides, the gather-only backward) and the edge cases. The compiled backends run all of them.
CONFIGS: list[Config] = [
    Config(case, *opts, dtype=dtype) for case, opts, dtype in itertools.product(_GRID_CASES, OPTIONS, DTYPES)
]
CONFIGS += [
    Config(case, True, "border", True, dtype=dtype, logits=lg, contiguous=contig, sources_grad=grad)
    for case, dtype, (lg, contig, grad) in itertools.product(
        [Case(2, 2, 3, 9, 7, 17, 5), PACKED_CASES[0]], ["float32", "bfloat16"], _LAYOUTS
    )
]
CONFIGS += [
    Config(case, res, pad, ac, dtype=dtype)
    for case, (res, pad, ac), dtype in zip(EDGE_CASES, OPTIONS[1::3], ["float64", "float32", "bfloat16"])
]


# Triton's interpreter runs the kernels as numpy code, 0.6-10 s a configuration on 2 cores (the
# 1024-pixel cases are the slow ones): it takes half of the (case, option) pairs in a checkerboard
# (a quarter for cases over 512 pixels), the dtype rotating, so every case, option and dtype still
# appears; then the float32 layouts and the edge cases. About 90 s in all.
def _interpreted(ci: int, oi: int, case: Case) -> bool:
    return (ci + oi) % (4 if case.H * case.W > 512 else 2) == 0


_pairs = [
    (case, opts)
    for (ci, case), (oi, opts) in itertools.product(enumerate(_GRID_CASES), enumerate(OPTIONS))
    if _interpreted(ci, oi, case)
]
INTERPRETER_CONFIGS: list[Config] = [
    Config(case, *opts, dtype=DTYPES[i % len(DTYPES)]) for i, (case, opts) in enumerate(_pairs)
]
_LAYOUT_CONFIGS = CONFIGS[len(_GRID_CASES) * len(OPTIONS) * len(DTYPES) : -len(EDGE_CASES)]
INTERPRETER_CONFIGS += [c for c in _LAYOUT_CONFIGS if c.dtype == "float32"] + CONFIGS[-len(EDGE_CASES) :]
BY_ID = {c.id: c for c in CONFIGS + INTERPRETER_CONFIGS}


def _poison_cuda_allocator():
    """Leaves NaN-filled blocks in the caching allocator, so an output element that a kernel never
    writes is likely to read back NaN and fail the comparison (CPU outputs: see POISON_OUTPUTS)."""
    junk = torch.full((16 << 20,), float("nan"), device="cuda")
    del junk


def _leaves(inputs, dtype, sources_grad):
    out = []
    for i, t in enumerate(inputs):
        if t is None:
            out.append(None)
            continue
        t = t.detach().to(dtype)
        out.append(t.requires_grad_(sources_grad or i != 0))
    return out


def _run(fn_name, args, upstream, options, backend):
    """Output and the gradients of every input that requires one (None elsewhere)."""
    from fabnet import ops

    args = args if fn_name == "warp_blend_l1" else args[:3]
    out = getattr(ops, fn_name)(*args, **options, backend=backend)
    wanted = [a for a in args if a is not None and a.requires_grad]
    grads = iter(torch.autograd.grad((out * upstream).sum(), wanted))
    return out, [next(grads) if (a is not None and a.requires_grad) else None for a in args]


def unavailable(config: Config, backend: str, device: str = "cpu") -> list[str]:
    """Why ``backend`` cannot run ``config`` on ``device`` (empty when it can)."""
    from fabnet import ops
    from fabnet.ops.checks import validate

    dtype = getattr(torch, config.dtype)
    s, f, lg, t = make_inputs(config.case, dtype=dtype, residual=config.residual, logits=config.logits, device=device)
    s.requires_grad_(config.sources_grad)
    args = validate(s, f.requires_grad_(), lg, t, needs_target=True, **config.options)
    return ops.backends(args)[backend]


Runner = Callable[[str, list, torch.Tensor, dict], tuple]


def measure(config: Config, backend: str | Runner, device: str = "cpu") -> dict:
    """Per "op.output" / "op.grad_<input>": the kernel's max abs error against the float64
    reference, the reference's scale, dtype / shape checks, whether sample 0 (zero upstream)
    got an exactly zero gradient, and for half types the error of the reference run in them.

    ``backend``: a name for ``fabnet.ops``, or a runner ``(op name, leaves, upstream, options)
    -> (output, gradients)`` for kernels reached another way (the host-compiled CUDA sources of
    test_cuda_emulation.py); it returns None for a leaf that does not require a gradient."""
    kernel = backend if callable(backend) else functools.partial(_run, backend=backend)
    dtype = getattr(torch, config.dtype)
    base = make_inputs(
        config.case,
        dtype=dtype,
        residual=config.residual,
        logits=config.logits,
        contiguous=config.contiguous,
        device=device,
    )
    base = tuple(t.double() if t is not None else None for t in base)
    B, C, H, W = config.case.B, config.case.C, config.case.H, config.case.W
    skip_first = B > 1
    result = {}
    for fn_name in ("warp_blend", "warp_blend_l1"):
        shape = (B,) if fn_name == "warp_blend_l1" else (B, C, H, W)
        upstream = torch.randn(shape, dtype=torch.float64, device=device)
        if skip_first:
            upstream[0] = 0
        leaves = lambda d: _leaves(base, d, config.sources_grad)  # noqa: E731
        ref, ref_grads = _run(fn_name, leaves(torch.float64), upstream, config.options, "reference")
        if device == "cuda":
            _poison_cuda_allocator()
        out, grads = kernel(fn_name, leaves(dtype), upstream.to(dtype), config.options)
        half = None
        if dtype in (torch.float16, torch.bfloat16):
            half = _run(fn_name, leaves(dtype), upstream.to(dtype), config.options, "reference")
        entries = {"output": (out, ref, half[0] if half else None)}
        for i, name in enumerate(GRAD_NAMES[: len(grads)]):
            if ref_grads[i] is not None or grads[i] is not None:
                entries[f"grad_{name}"] = (grads[i], ref_grads[i], half[1][i] if half else None)
        for what, (got, want, got_half) in entries.items():
            if got is None or want is None:
                result[f"{fn_name}.{what}"] = {"missing": "kernel" if got is None else "reference"}
                continue
            same_shape = tuple(got.shape) == tuple(want.shape)
            entry = {
                # NaN (an element never written) propagates into the max and fails the bound.
                "error": (got.double() - want).abs().max().item() if same_shape and want.numel() else 0.0,
                "dtype_ok": got.dtype == dtype,
                "shape_ok": same_shape,
                "scale": want.abs().max().item() if want.numel() else 0.0,
                "skipped_sample_zero": bool((got[0] == 0).all()) if skip_first and what != "output" else True,
            }
            if got_half is not None:
                entry["half_reference_error"] = (got_half.double() - want).abs().max().item()
            result[f"{fn_name}.{what}"] = entry
    return result


def expected_checks(config: Config) -> set[str]:
    """The outputs and gradients a run of ``config`` must report."""
    names = {"output", "grad_flows"} | ({"grad_sources"} if config.sources_grad else set())
    names |= {"grad_logits"} if config.logits != "none" else set()
    return {f"{fn}.{n}" for fn in ("warp_blend", "warp_blend_l1") for n in names} | {"warp_blend_l1.grad_target"}


def bound(config: Config, check: dict, *, gpu: bool) -> float:
    """The largest error the tolerance rule allows for one check. Half types: at most twice the
    error of the reference run in that type, plus one unit of the type's precision at the
    output's scale: rounding the exact result costs up to half of that, and the half-type
    reference can be luckier on a single rounded value (the L1 target gradient, +-g / (C H W))."""
    if "half_reference_error" in check:
        return 2 * check["half_reference_error"] + HALF_EPS[config.dtype] * check["scale"]
    atol, rtol = (GPU_TOLERANCE if gpu else TOLERANCE)[config.dtype]
    return atol + rtol * check["scale"]


def failures(config: Config, checks: dict, *, gpu: bool = False) -> list[str]:
    """Every way ``checks`` (from ``measure``) breaks the parity rule; empty when it holds."""
    out = []
    if set(checks) != expected_checks(config):
        out.append(f"checked {sorted(checks)}, expected {sorted(expected_checks(config))}")
    for what, c in sorted(checks.items()):
        if "missing" in c:
            out.append(f"{what}: the {c['missing']} returned no gradient")
            continue
        if not (c["dtype_ok"] and c["shape_ok"]):
            out.append(f"{what}: wrong dtype or shape")
        if not c["skipped_sample_zero"]:
            out.append(f"{what}: sample 0 has zero upstream gradient but a nonzero gradient")
        limit = bound(config, c, gpu=gpu)
        if not c["error"] <= limit:  # also catches NaN
            out.append(f"{what}: error {c['error']:.3g} > {limit:.3g} (scale {c['scale']:.3g})")
    return out
