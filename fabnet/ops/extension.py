"""Loads fabnet._C and registers fake kernels and autograd for its ops.

``torch.ops.fabnet.warp_blend`` and ``warp_blend_l1`` are defined in C++ (csrc/fabnet.cpp) with
separate backward ops. Here they get fake (meta) kernels, so ``torch.compile(fullgraph=True)``
traces through them, and ``register_autograd`` formulas that call the backward ops with a mask of
the gradients actually needed. ``warp_blend_l1_with_grads`` (CPU) returns the loss with its
per-sample gradients for flows and logits; its backward only scales them.
"""

from __future__ import annotations

import torch

from fabnet.ops import build_info, vmap
from fabnet.ops.autograd import backward_formulas, creating_graph, differentiable_gradients, setup_context

REBUILD_COMMAND = build_info.REBUILD_COMMAND
BUILD_INFO = build_info.read()


def _load(info: dict | None, torch_version: str) -> str | None:
    """Loads fabnet._C built as ``info`` says; the reason it could not be loaded, or None."""
    # A library built for another torch is refused before it is loaded: its C++ symbols may be
    # missing (an ImportError naming a mangled symbol) or, worse, present with another layout.
    mismatch = build_info.torch_mismatch(info, torch_version) or build_info.cpu_level_mismatch(info)
    if mismatch:
        return mismatch
    try:
        from fabnet import _C  # noqa: F401  (loading the library registers torch.ops.fabnet.*)
    except ImportError as err:
        return f"fabnet._C could not be loaded ({err}); rebuild it with `{REBUILD_COMMAND}`"
    return None


# Not a warning here: backend="auto" warns (once, FallbackWarning) when a call falls back for it.
LOAD_ERROR: str | None = _load(BUILD_INFO, torch.__version__)


def available() -> bool:
    return LOAD_ERROR is None


def cpu_isa() -> str | None:
    """The instruction-set variant the CPU kernels run ("x86-64-v4", "x86-64-v3" or the build's
    baseline), chosen on first use from this CPU's features; None without the extension."""
    from fabnet import _C

    return _C.cpu_isa() if available() else None


def cpu_isas() -> list[str]:
    """Every variant this CPU can run, best first (empty without the extension)."""
    from fabnet import _C

    return _C.cpu_isas().split(",") if available() else []


def set_cpu_isa(name: str) -> None:
    """Run the CPU kernels as variant ``name`` (one of ``cpu_isas()``, or "auto" for the best);
    for tests and benchmarks that compare the variants. ValueError if this CPU cannot run it."""
    from fabnet import _C

    if not available():
        raise ValueError(f"no CPU kernels to choose from: {LOAD_ERROR}")
    if not _C.set_cpu_isa(name):
        raise ValueError(f"name must be 'auto' or one of {cpu_isas()} (what this CPU runs), got {name!r}")


def built_with_cuda() -> bool:
    """Whether the CUDA kernels were compiled into fabnet._C (read once: it cannot change)."""
    global _BUILT_WITH_CUDA
    if _BUILT_WITH_CUDA is None:
        _BUILT_WITH_CUDA = available() and torch._C._dispatch_has_kernel_for_dispatch_key("fabnet::warp_blend", "CUDA")
    return _BUILT_WITH_CUDA


# Read at import (below), so that a call traced by torch.compile meets a plain bool: dynamo of
# torch 2.11 cannot trace the dispatcher query ("torch.* op returned non-Tensor").
_BUILT_WITH_CUDA: bool | None = None


def cuda_reasons(device: torch.device | None = None) -> list[str]:
    """Why the CUDA kernels cannot run on ``device`` (default: the current CUDA device)."""
    if not built_with_cuda():
        return [
            "fabnet._C was built without CUDA kernels (needs a CUDA build of torch and a CUDA "
            f"toolkit of the same major version, then `{REBUILD_COMMAND}`; FABNET_FORCE_CUDA=1 "
            "makes the build say why not)"
        ]
    if not torch.cuda.is_available():
        return ["no CUDA device is usable here (torch.cuda.is_available() is False)"]
    index = device.index if device is not None and device.index is not None else torch.cuda.current_device()
    if index not in _ARCH_REASONS:
        _ARCH_REASONS[index] = _arch_reason(index)
    reason = _ARCH_REASONS[index]
    return [reason] if reason else []


# Per device index: whether the build has code for that GPU. It cannot change in a process, and
# backend="auto" asks on every op call: the capability and name are read once per device.
_ARCH_REASONS: dict[int, str | None] = {}


def _arch_reason(index: int) -> str | None:
    archs = (BUILD_INFO or {}).get("cuda_archs")
    if not archs:  # no record: an extension built by other means, trusted as it is
        return None
    name = f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return build_info.cuda_arch_reason(archs, torch.cuda.get_device_capability(index), name)


built_with_cuda()

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
        return tuple(
            t.new_empty(t.shape) if (m and t is not None) else tensors[0].new_empty((0,)) for m, t in zip(mask, tensors)
        )

    @torch.library.register_fake("fabnet::warp_blend_backward")
    def _warp_blend_backward_fake(grad, sources, flows, logits, residual, padding_mode, align_corners, output_mask):
        return _masked_like(output_mask, (sources, flows, logits))

    @torch.library.register_fake("fabnet::warp_blend_l1_backward")
    def _warp_blend_l1_backward_fake(
        grad, sources, flows, logits, target, residual, padding_mode, align_corners, output_mask
    ):
        return _masked_like(output_mask, (sources, flows, logits, target))

    @torch.library.register_fake("fabnet::warp_blend_l1_with_grads")
    def _warp_blend_l1_with_grads_fake(
        sources, flows, logits, target, residual, padding_mode, align_corners, output_mask
    ):
        loss = sources.new_empty((sources.shape[0],))
        return (loss, *_masked_like(output_mask, (flows, logits)))

    def _with_grads_setup_context(ctx, inputs, output):
        sources, flows, logits, target, residual, padding_mode, align_corners, mask = inputs
        # Inputs, for a second backward through the same graph (retain_graph=True).
        ctx.save_for_backward(sources, flows, logits, target)
        ctx.options = (residual, padding_mode, align_corners)
        ctx.mask = mask
        # The unit gradients are this op's own outputs, which nobody else sees (warp_blend_l1
        # returns the loss only): detached references, so that the backward may scale them in
        # place instead of allocating (and page-faulting) 6 MB a step at (8, 3, 3, 128, 128), a
        # fifth of the step (docs/perf/cpu-kernel.md).
        ctx.unit_grads = (output[1].detach(), output[2].detach())
        # The unit-gradient outputs never receive a gradient; without this autograd fills two
        # flows- and logits-sized zero tensors for them on every backward (an eighth of the step,
        # docs/perf/cpu-kernel.md).
        ctx.set_materialize_grads(False)

    def _scale(unit, grad):
        # In place on plain eager tensors only: under torch.compile / opcheck tracing the tensors
        # are functional wrappers, and the compiler owns their memory.
        if type(unit) is torch.Tensor and not torch.compiler.is_compiling():
            return unit.mul_(grad)
        return unit * grad

    def _with_grads_backward(ctx, grad, _grad_flows_grad, _grad_logits_grad):
        if grad is None:  # no gradient reached the loss (grads are not materialised)
            return None, None, None, None, None, None, None, None
        if creating_graph():
            sources, flows, logits, target = ctx.saved_tensors
            mask = [False, bool(ctx.mask[0]), bool(ctx.mask[1]) and logits is not None, False]
            _, gf, gl, _ = differentiable_gradients(grad, (sources, flows, logits, target), ctx.options, mask)
            return None, gf, gl, None, None, None, None, None
        if ctx.unit_grads is not None:
            # loss[b] depends on sample b only, so d(sum_b grad[b] loss[b]) / d flows[b] is
            # grad[b] times the unit gradient the forward computed.
            unit_flows, unit_logits = ctx.unit_grads
            ctx.unit_grads = None  # consumed: a second backward recomputes (below)
            gf = _scale(unit_flows, grad.view(-1, 1, 1, 1, 1)) if ctx.mask[0] else None
            gl = _scale(unit_logits, grad.view(-1, 1, 1, 1)) if ctx.mask[1] else None
        else:
            sources, flows, logits, target = ctx.saved_tensors
            mask = [False, bool(ctx.mask[0]), bool(ctx.mask[1]) and logits is not None, False]
            _, gf, gl, _ = torch.ops.fabnet.warp_blend_l1_backward(
                grad, sources, flows, logits, target, *ctx.options, mask
            )
            gf = gf if mask[1] else None
            gl = gl if mask[2] else None
        return None, gf, gl, None, None, None, None, None

    torch.library.register_autograd(
        "fabnet::warp_blend_l1_with_grads", _with_grads_backward, setup_context=_with_grads_setup_context
    )

    _blend_backward, _l1_backward = backward_formulas(
        torch.ops.fabnet.warp_blend_backward, torch.ops.fabnet.warp_blend_l1_backward
    )
    torch.library.register_autograd("fabnet::warp_blend", _blend_backward, setup_context=setup_context)
    torch.library.register_autograd("fabnet::warp_blend_l1", _l1_backward, setup_context=setup_context)
    for _name in (
        "warp_blend",
        "warp_blend_l1",
        "warp_blend_backward",
        "warp_blend_l1_backward",
        "warp_blend_l1_with_grads",
    ):
        vmap.register(f"fabnet::{_name}")
