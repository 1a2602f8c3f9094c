"""Autograd formulas shared by the op families that have separate backward ops (C++, Triton).

Both forward ops take ``(sources, flows, logits, [target,] residual, padding_mode,
align_corners)``; their backward ops take ``(grad, sources, flows, logits, [target,] residual,
padding_mode, align_corners, mask)`` and return one gradient per tensor input, an unrequested one
as a placeholder. The formulas ask only for the gradients autograd needs (sources that need none
take the gather-only path) and never for a logits gradient without logits.

Under ``create_graph=True`` (a gradient penalty, ``torch.autograd.gradgradcheck``) the gradients
must themselves be differentiable, which the kernels' results are not: there the formulas
recompute the gradients through the reference from the saved inputs (``F.grid_sample`` on the
CPU, fabnet.ops.composite's gathers elsewhere: F.grid_sample's CUDA backward has no derivative).
Plain backward passes never take that path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fabnet.ops import reference


def setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*(t for t in inputs if isinstance(t, torch.Tensor)))
    ctx.has_logits = inputs[2] is not None
    # residual, padding_mode, align_corners: the last three inputs of both forward ops.
    ctx.options = tuple(inputs[-3:])


def _saved(ctx):
    """(sources, flows, logits or None, [target] or [])."""
    saved = list(ctx.saved_tensors)
    logits = saved[2] if ctx.has_logits else None
    return saved[0], saved[1], logits, saved[3:] if ctx.has_logits else saved[2:]


def _mask(ctx, logits, with_target: bool) -> list[bool]:
    need = ctx.needs_input_grad
    mask = [bool(need[0]), bool(need[1]), bool(need[2]) and logits is not None]
    return mask + [bool(need[3])] if with_target else mask


def differentiable_gradients(grad, tensors, options, mask) -> list[torch.Tensor | None]:
    """The gradients of the op at ``tensors`` = (sources, flows, logits[, target]) against
    upstream ``grad``, as differentiable functions of both: through the reference, for a backward
    pass run with ``create_graph=True``. Entries whose mask is False are None."""
    residual, padding_mode, align_corners = options
    wanted = [t for t, m in zip(tensors, mask) if m]
    if not wanted:
        return [None] * len(mask)
    with torch.enable_grad():
        # Inputs that need no gradient enter detached, so the recomputed graph holds only what
        # the second derivative can reach.
        inputs = [t if m else (t.detach() if t is not None else None) for t, m in zip(tensors, mask)]
        kwargs = dict(
            residual=residual, padding_mode=padding_mode, align_corners=align_corners, twice_differentiable=True
        )
        if len(tensors) == 4:
            out = reference.warp_blend_l1_reference(*inputs, **kwargs)
        else:
            out = reference.warp_blend_reference(*inputs, **kwargs)
        found = iter(torch.autograd.grad(out, wanted, grad, create_graph=True, allow_unused=True))
    return [(next(found) if m else None) for m in mask]


def creating_graph() -> bool:
    """Whether this backward pass runs with ``create_graph=True`` (autograd enables grad mode for
    a backward formula exactly then). Compiled graphs never differentiate twice."""
    return torch.is_grad_enabled() and not torch.compiler.is_compiling()


def backward_formulas(blend_backward: Callable, l1_backward: Callable):
    """The ``register_autograd`` formulas of warp_blend and warp_blend_l1 around their backward
    ops, each called as ``op(grad, *tensors, residual, padding_mode, align_corners, mask)``."""

    def warp_blend_backward(ctx, grad):
        sources, flows, logits, _ = _saved(ctx)
        mask = _mask(ctx, logits, with_target=False)
        if creating_graph():
            grads = differentiable_gradients(grad, (sources, flows, logits), ctx.options, mask)
        else:
            grads = blend_backward(grad, sources, flows, logits, *ctx.options, mask)
        return (*(g if m else None for g, m in zip(grads, mask)), None, None, None)

    def warp_blend_l1_backward(ctx, grad):
        sources, flows, logits, (target,) = _saved(ctx)
        mask = _mask(ctx, logits, with_target=True)
        if creating_graph():
            grads = differentiable_gradients(grad, (sources, flows, logits, target), ctx.options, mask)
        else:
            grads = l1_backward(grad, sources, flows, logits, target, *ctx.options, mask)
        return (*(g if m else None for g, m in zip(grads, mask)), None, None, None)

    return warp_blend_backward, warp_blend_l1_backward
