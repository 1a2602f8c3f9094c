"""Loads fabnet._C and registers fake kernels and autograd for its ops.

``torch.ops.fabnet.warp_blend`` and ``warp_blend_l1`` are defined in C++ (csrc/fabnet.cpp) with
separate backward ops. Here they get fake (meta) kernels, so ``torch.compile(fullgraph=True)``
traces through them, and ``register_autograd`` formulas that call the backward ops with a mask of
the gradients actually needed.
"""

from __future__ import annotations

import warnings

import torch

REBUILD_COMMAND = "pip install --no-build-isolation -e ."

try:
    from fabnet import _C  # noqa: F401  (loading the library registers torch.ops.fabnet.*)

    LOAD_ERROR: str | None = None
except ImportError as err:  # not built, or built against another torch
    LOAD_ERROR = f"fabnet._C could not be loaded ({err}); rebuild it with `{REBUILD_COMMAND}`"
    warnings.warn(f"{LOAD_ERROR}. fabnet.ops falls back to the PyTorch reference.", stacklevel=2)


def available() -> bool:
    return LOAD_ERROR is None


def built_with_cuda() -> bool:
    """Whether the CUDA kernels were compiled into fabnet._C."""
    if not available():
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("fabnet::warp_blend", "CUDA")


def _grad_or_none(grad: torch.Tensor, wanted: bool) -> torch.Tensor | None:
    return grad if wanted else None


if available():

    @torch.library.register_fake("fabnet::warp_blend")
    def _warp_blend_fake(sources, flows, logits, residual, padding_mode, align_corners):
        torch._check(flows.shape[2] == 2, lambda: f"flows must be (B, K, 2, H, W), got {tuple(flows.shape)}")
        B, _, C = sources.shape[:3]
        return sources.new_empty((B, C, flows.shape[3], flows.shape[4]))

    @torch.library.register_fake("fabnet::warp_blend_l1")
    def _warp_blend_l1_fake(sources, flows, logits, target, residual, padding_mode, align_corners):
        torch._check(target.shape[0] == sources.shape[0], lambda: "target and sources differ in B")
        return sources.new_empty((sources.shape[0],))

    def _masked_like(mask, tensors):
        return tuple(t.new_empty(t.shape) if (m and t is not None) else tensors[0].new_empty((0,))
                     for m, t in zip(mask, tensors))

    @torch.library.register_fake("fabnet::warp_blend_backward")
    def _warp_blend_backward_fake(grad, sources, flows, logits, residual, padding_mode,
                                  align_corners, output_mask):
        return _masked_like(output_mask, (sources, flows, logits))

    @torch.library.register_fake("fabnet::warp_blend_l1_backward")
    def _warp_blend_l1_backward_fake(grad, sources, flows, logits, target, residual, padding_mode,
                                     align_corners, output_mask):
        return _masked_like(output_mask, (sources, flows, logits, target))

    def _setup_context(ctx, inputs, output):
        ctx.save_for_backward(*(t for t in inputs if isinstance(t, torch.Tensor)))
        ctx.has_logits = inputs[2] is not None
        ctx.options = tuple(x for x in inputs if not isinstance(x, torch.Tensor) and x is not None)

    def _unpack(ctx):
        saved = list(ctx.saved_tensors)
        sources, flows = saved[0], saved[1]
        logits = saved[2] if ctx.has_logits else None
        rest = saved[3:] if ctx.has_logits else saved[2:]
        return sources, flows, logits, rest

    def _warp_blend_backward(ctx, grad):
        sources, flows, logits, _ = _unpack(ctx)
        need = ctx.needs_input_grad
        mask = [need[0], need[1], bool(need[2]) and logits is not None]
        g_sources, g_flows, g_logits = torch.ops.fabnet.warp_blend_backward(
            grad, sources, flows, logits, *ctx.options, mask)
        return (_grad_or_none(g_sources, mask[0]), _grad_or_none(g_flows, mask[1]),
                _grad_or_none(g_logits, mask[2]), None, None, None)

    def _warp_blend_l1_backward(ctx, grad):
        sources, flows, logits, (target,) = _unpack(ctx)
        need = ctx.needs_input_grad
        mask = [need[0], need[1], bool(need[2]) and logits is not None, need[3]]
        g_sources, g_flows, g_logits, g_target = torch.ops.fabnet.warp_blend_l1_backward(
            grad, sources, flows, logits, target, *ctx.options, mask)
        return (_grad_or_none(g_sources, mask[0]), _grad_or_none(g_flows, mask[1]),
                _grad_or_none(g_logits, mask[2]), _grad_or_none(g_target, mask[3]),
                None, None, None)

    torch.library.register_autograd("fabnet::warp_blend", _warp_blend_backward,
                                    setup_context=_setup_context)
    torch.library.register_autograd("fabnet::warp_blend_l1", _warp_blend_l1_backward,
                                    setup_context=_setup_context)
