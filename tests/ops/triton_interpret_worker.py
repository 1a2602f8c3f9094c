"""Runs the Triton kernels in Triton's CPU interpreter against the reference; prints JSON errors.

    TRITON_INTERPRET=1 python -m tests.ops.triton_interpret_worker [CONFIG_ID ...]

Triton decides between compiling and interpreting a kernel when ``@triton.jit`` runs, from the
environment at the first import of triton. test_triton_interpret.py therefore runs this module
in its own process with TRITON_INTERPRET=1, leaving the rest of the test session untouched, and
asserts on the errors printed here. Importing this module (for ``CONFIGS``) imports no triton.

For every configuration, both ops run forward and backward with every input requiring grad
(or sources without grad: the gather-only path). The upstream gradient of sample 0 is zero, so
the kernels' zero-upstream skip runs beside the ordinary path of sample 1. Outputs are poisoned
(NaN-filled) before the kernels write them. Errors are max |kernel - float64 reference|; for
half types also the error of the reference run in that half type (flash-attention's rule).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from dataclasses import asdict, dataclass

import torch

from fabnet import ops
from tests.ops.inputs import Case, make_inputs

GRAD_NAMES = ("sources", "flows", "logits", "target")


@dataclass(frozen=True)
class Config:
    case: Case
    residual: bool
    padding_mode: str
    align_corners: bool
    logits: str = "given"  # "given" (B, K, H, W), "5d" (B, K, 1, H, W), "none"
    dtype: str = "float64"
    contiguous: bool = True
    sources_grad: bool = True  # False: the gather-only backward

    @property
    def id(self) -> str:
        return (
            f"{self.case}-res{int(self.residual)}-{self.padding_mode}-ac{int(self.align_corners)}"
            f"-{self.logits}-{self.dtype}"
            + ("" if self.contiguous else "-permuted")
            + ("" if self.sources_grad else "-gather_only")
        )


# Odd sizes, source size different from output size; every (residual, padding, align_corners)
# with K = 1, 2, 3, logits given / 5d / none in turn.
_SHAPES = [(2, 3, 7, 6, 5, 9), (2, 1, 5, 8, 9, 7), (2, 4, 9, 9, 6, 5)]
_OPTIONS = list(itertools.product([False, True], ["zeros", "border"], [False, True]))
CONFIGS: list[Config] = []
for _i, ((_res, _pad, _ac), _k) in enumerate(itertools.product(_OPTIONS, [1, 2, 3])):
    _B, _C, _Hs, _Ws, _H, _W = _SHAPES[_i % len(_SHAPES)]
    CONFIGS.append(Config(Case(_B, _k, _C, _Hs, _Ws, _H, _W), _res, _pad, _ac, logits=("given", "none", "5d")[_i % 3]))
CONFIGS += [
    # Permuted (non-contiguous) inputs are read through their strides.
    Config(Case(2, 3, 3, 7, 6, 5, 9), True, "border", True, contiguous=False),
    Config(Case(2, 2, 3, 6, 7, 9, 5), False, "zeros", False, logits="none", contiguous=False),
    # The training case: sources are data.
    Config(Case(2, 3, 3, 7, 6, 5, 9), True, "border", True, sources_grad=False),
    Config(Case(2, 2, 3, 7, 6, 5, 9), False, "zeros", False, logits="none", sources_grad=False),
    # Single-pixel axes: the identity grid is 0 there, and Triton specialises sizes equal to 1.
    Config(Case(2, 2, 3, 1, 6, 1, 7), True, "zeros", True),
    Config(Case(2, 2, 1, 5, 1, 3, 1), True, "border", False),
    # Several programs per sample: H * W = 323 > 256 (forward block) > 128 (backward block).
    Config(Case(2, 2, 3, 13, 11, 19, 17), True, "border", True),
    # Storage types below float64 (accumulation in float32).
    Config(Case(2, 3, 3, 7, 6, 5, 9), True, "border", True, dtype="float32"),
    Config(Case(2, 2, 3, 7, 6, 5, 9), False, "zeros", False, dtype="float32", logits="none"),
    Config(Case(2, 3, 3, 7, 6, 5, 9), True, "border", True, dtype="float16"),
    Config(Case(2, 3, 3, 7, 6, 5, 9), True, "border", True, dtype="bfloat16"),
]
BY_ID = {c.id: c for c in CONFIGS}


def _run(fn_name, inputs, upstream, config, backend):
    """Output and the gradients of every input that requires one (None elsewhere)."""
    options = dict(residual=config.residual, padding_mode=config.padding_mode, align_corners=config.align_corners)
    args = inputs if fn_name == "warp_blend_l1" else inputs[:3]
    out = getattr(ops, fn_name)(*args, **options, backend=backend)
    wanted = [a for a in args if a is not None and a.requires_grad]
    grads = iter(torch.autograd.grad((out * upstream).sum(), wanted))
    return out, [next(grads) if (a is not None and a.requires_grad) else None for a in args]


def _leaves(inputs, dtype, sources_grad):
    out = []
    for i, t in enumerate(inputs):
        if t is None:
            out.append(None)
            continue
        t = t.detach().to(dtype) if dtype is not None else t.detach()
        out.append(t.requires_grad_(sources_grad or i != 0))
    return out


def measure(config: Config) -> dict:
    """Max abs errors of the kernels (and, for half types, of the half-type reference)."""
    dtype = getattr(torch, config.dtype)
    # Drawn in float64, rounded to the storage dtype: the float64 oracle sees the inputs the
    # kernels see, so only the computation's error is measured.
    base = make_inputs(
        config.case, dtype=dtype, residual=config.residual, logits=config.logits, contiguous=config.contiguous
    )
    base = tuple(t.double() if t is not None else None for t in base)
    B, C, H, W = config.case.B, config.case.C, config.case.H, config.case.W
    result = {}
    for fn_name in ("warp_blend", "warp_blend_l1"):
        if fn_name == "warp_blend":
            upstream = torch.randn(B, C, H, W, dtype=torch.float64)
        else:
            upstream = torch.rand(B, dtype=torch.float64) + 0.5
        upstream[0] = 0  # sample 0: the zero-upstream skip
        ref, ref_grads = _run(fn_name, _leaves(base, None, config.sources_grad), upstream, config, "reference")
        out, grads = _run(fn_name, _leaves(base, dtype, config.sources_grad), upstream.to(dtype), config, "triton")
        half = None
        if dtype in (torch.float16, torch.bfloat16):
            half = _run(fn_name, _leaves(base, dtype, config.sources_grad), upstream.to(dtype), config, "reference")
        entries = {"output": (out, ref, half[0] if half else None)}
        for i, name in enumerate(GRAD_NAMES[: len(grads)]):
            if ref_grads[i] is not None:
                entries[f"grad_{name}"] = (grads[i], ref_grads[i], half[1][i] if half else None)
        for what, (got, want, got_half) in entries.items():
            same_shape = got.shape == want.shape
            entry = {
                "error": (got.double() - want).abs().max().item() if same_shape else float("inf"),
                "dtype_ok": got.dtype == dtype,
                "shape_ok": tuple(got.shape) == tuple(want.shape),
                "scale": want.abs().max().item(),
                # Where the upstream is zero the gradient must be exactly zero.
                "skipped_sample_zero": bool((got[0] == 0).all()) if what.startswith("grad") else True,
            }
            if got_half is not None:
                entry["half_reference_error"] = (got_half.double() - want).abs().max().item()
            result[f"{fn_name}.{what}"] = entry
    return result


def main(argv: list[str]) -> int:
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("set TRITON_INTERPRET=1: the kernels run on CPU tensors only in Triton's interpreter", file=sys.stderr)
        return 2
    from fabnet.ops import triton_ops

    reasons = triton_ops.not_supported_reasons(None)
    if reasons:
        print("; ".join(reasons), file=sys.stderr)
        return 3
    triton_ops.POISON_OUTPUTS = True
    torch.manual_seed(0)
    ids = argv or [c.id for c in CONFIGS]
    results = {}
    for config_id in ids:
        try:
            results[config_id] = {
                "config": asdict(BY_ID[config_id]) | {"case": str(BY_ID[config_id].case)},
                "checks": measure(BY_ID[config_id]),
            }
        except Exception as err:  # reported per configuration, so one failure does not hide the rest
            results[config_id] = {"error": f"{type(err).__name__}: {err}"}
    # The registration checks that run on real tensors (the fake-tensor and compile checks need a
    # GPU: torch does not trace interpreted kernels).
    try:
        s, f, lg, t = make_inputs(Case(2, 2, 3, 5, 6, 4, 7), residual=True)
        for grad in (False, True):
            leaves = [x.requires_grad_(grad) for x in (s, f, lg)] + [t]
            torch.library.opcheck(
                torch.ops.fabnet.triton_warp_blend_l1,
                (*leaves, True, "border", True),
                test_utils=("test_schema", "test_autograd_registration"),
            )
            torch.library.opcheck(
                torch.ops.fabnet.triton_warp_blend,
                (*leaves[:3], False, "zeros", False),
                test_utils=("test_schema", "test_autograd_registration"),
            )
        # The backward ops with gradients left out: their 0-element outputs must not alias.
        grad = torch.rand(2, dtype=torch.float64)
        torch.library.opcheck(
            torch.ops.fabnet.triton_warp_blend_l1_backward,
            (grad, s.detach(), f.detach(), None, t, True, "border", True, False, True, False, False),
            test_utils=("test_schema",),
        )
        torch.library.opcheck(
            torch.ops.fabnet.triton_warp_blend_backward,
            (
                torch.rand(2, 3, 4, 7, dtype=torch.float64),
                s.detach(),
                f.detach(),
                lg.detach(),
                False,
                "zeros",
                False,
                False,
                False,
                True,
            ),
            test_utils=("test_schema",),
        )
        results["opcheck"] = {"ok": True}
    except Exception as err:
        results["opcheck"] = {"error": f"{type(err).__name__}: {err}"}
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
