"""Runs the Triton kernels in Triton's CPU interpreter; prints the parity checks as JSON.

    TRITON_INTERPRET=1 python -m tests.ops.triton_interpret_worker [CONFIG_ID ...]

Triton decides between compiling and interpreting a kernel when ``@triton.jit`` runs, from the
environment at the first import of triton. test_parity.py therefore runs this module in its own
process with TRITON_INTERPRET=1, leaving the rest of the test session untouched, and judges the
measurements printed here by the same rule as every other backend's (tests/ops/parity.py).
Outputs are poisoned (NaN-filled) before the kernels write them. The registration checks that
run on real tensors (opcheck's schema and autograd tests) run here too.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict

import torch

from tests.ops.inputs import Case, make_inputs
from tests.ops.parity import BY_ID, INTERPRETER_CONFIGS, measure


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
    ids = argv or [c.id for c in INTERPRETER_CONFIGS]
    results = {}
    for config_id in ids:
        try:
            results[config_id] = {
                "config": asdict(BY_ID[config_id]) | {"case": str(BY_ID[config_id].case)},
                "checks": measure(BY_ID[config_id], "triton"),
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
