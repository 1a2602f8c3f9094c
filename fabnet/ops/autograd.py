"""Autograd formulas shared by the op families that have separate backward ops (C++, Triton).

Both forward ops take ``(sources, flows, logits, [target,] residual, padding_mode,
align_corners)``; their backward ops take ``(grad, sources, flows, logits, [target,] residual,
padding_mode, align_corners, mask)`` and return one gradient per tensor input, an unrequested one
as a placeholder. The formulas ask only for the gradients autograd needs (sources that need none
take the gather-only path) and never for a logits gradient without logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


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


def backward_formulas(blend_backward: Callable, l1_backward: Callable):
    """The ``register_autograd`` formulas of warp_blend and warp_blend_l1 around their backward
    ops, each called as ``op(grad, *tensors, residual, padding_mode, align_corners, mask)``."""

    def warp_blend_backward(ctx, grad):
        sources, flows, logits, _ = _saved(ctx)
        mask = _mask(ctx, logits, with_target=False)
        grads = blend_backward(grad, sources, flows, logits, *ctx.options, mask)
        return (*(g if m else None for g, m in zip(grads, mask)), None, None, None)

    def warp_blend_l1_backward(ctx, grad):
        sources, flows, logits, (target,) = _saved(ctx)
        mask = _mask(ctx, logits, with_target=True)
        grads = l1_backward(grad, sources, flows, logits, target, *ctx.options, mask)
        return (*(g if m else None for g, m in zip(grads, mask)), None, None, None)

    return warp_blend_backward, warp_blend_l1_backward
