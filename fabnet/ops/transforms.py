"""Where the fused kernels step aside: torch.func transforms, tracing exporters, forward mode.

The fused kernels are custom ops with a backward formula of their own. Some of torch's program
transforms cannot see through such an op, and there ``backend="auto"`` runs the plain-PyTorch
reference instead, whose every step they know:

- ``torch.func.grad``, ``vjp``, ``jacrev``, ``hessian`` (a grad transform on the functorch
  stack): torch's generated autograd wrapper of a custom op has no ``setup_context`` and is
  refused there (pytorch/pytorch#170834). ``vmap`` alone keeps the fused kernels (fabnet.ops.vmap
  folds the mapped dimension into B).
- ``torch.jit.trace`` and ``torch.onnx.export`` (both exporters): the trace then holds
  ``F.grid_sample``, softmax and sums, which ONNX (GridSample, opset 16) and a process without
  fabnet can run. ``torch.export`` keeps the custom op (loading that program needs fabnet).

Forward-mode differentiation (``torch.func.jvp``, ``jacfwd``, ``torch.autograd.forward_ad``) is
refused: the kernels have no forward formula, and neither has ``F.grid_sample``, so the
reference cannot stand in. Before this check the op returned zero tangents without a word.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as forward_ad
from torch._C import _functorch

FORWARD_MODE_ERROR = (
    "fabnet.ops has no forward-mode derivative (torch.func.jvp / jacfwd / hessian, "
    "torch.autograd.forward_ad), as F.grid_sample has none; use reverse mode "
    "(torch.func.vjp / jacrev, torch.autograd.grad)"
)


@torch.compiler.assume_constant_result
def _stack_kinds() -> tuple[str, ...]:
    """Names of the functorch transforms on the interpreter stack, outermost first.

    Read outside the trace: dynamo wraps ``peek_interpreter_stack()`` in an object that is never
    None in traced code, so before this every call under torch.compile took the reference, even
    with no transform active (seen with torch 2.11 and 2.13). Dynamo runs the function once while
    tracing and keeps its answer as a constant of the graph.
    """
    if _functorch.peek_interpreter_stack() is None:  # the common case, in 0.1 us
        return ()
    return tuple(interpreter.key().name for interpreter in _functorch.get_interpreter_stack() or [])


def _transform_types() -> list[str]:
    """Names of the functorch transforms active now, outermost first (empty: none)."""
    if not torch.compiler.is_compiling() and _functorch.peek_interpreter_stack() is None:
        return []
    return list(_stack_kinds())


def check_forward_mode(tensors: tuple[torch.Tensor, ...]) -> None:
    """NotImplementedError when a forward-mode derivative is being taken through the op."""
    if "Jvp" in _transform_types():
        raise NotImplementedError(FORWARD_MODE_ERROR)
    if forward_ad._current_level >= 0 and any(forward_ad.unpack_dual(t).tangent is not None for t in tensors):
        raise NotImplementedError(FORWARD_MODE_ERROR)


def grad_transform_reason() -> str | None:
    """Why the fused kernels cannot run under the active functorch transforms (None: they can)."""
    if any(kind not in ("Vmap", "Functionalize") for kind in _transform_types()):
        return (
            "torch.func.grad / vjp / jacrev cannot differentiate a custom op's autograd formula "
            "(backend='auto' or 'reference' runs F.grid_sample there)"
        )
    return None


def tracing_reason() -> str | None:
    """Why ``backend="auto"`` records the reference in the caller's context (None: it need not)."""
    if torch.jit.is_tracing():
        return "torch.jit.trace records the reference (F.grid_sample), which runs without fabnet"
    if torch.onnx.is_in_onnx_export():
        return "torch.onnx.export records the reference (F.grid_sample as GridSample)"
    return None
