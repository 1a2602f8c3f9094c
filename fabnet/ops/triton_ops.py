"""The Triton backend: fabnet.kernels.warp_blend registered as custom ops torch.compile can see.

Four ops in the ``fabnet`` namespace, each a ``torch.library.triton_op`` whose body launches the
kernels through ``torch.library.wrap_triton`` (so Inductor traces into the kernels instead of
treating the op as opaque):

    fabnet::triton_warp_blend(sources, flows, logits, residual, padding_mode, align_corners)
        -> blend (B, C, H, W)
    fabnet::triton_warp_blend_l1(sources, flows, logits, target, ...) -> l1 (B,)
    fabnet::triton_warp_blend_backward(grad, sources, flows, logits, ..., need_sources,
        need_flows, need_logits) -> (g_sources, g_flows, g_logits)
    fabnet::triton_warp_blend_l1_backward(grad, sources, flows, logits, target, ...,
        need_sources, need_flows, need_logits, need_target) -> (g_sources, g_flows, g_logits, g_target)

The forward ops get autograd through ``register_autograd``; the backward ops compute only the
gradients asked for and return a 0-element tensor for the others (as the C++ backward ops do).
On CPU tensors the kernels run only in Triton's interpreter, which must be switched on
(``TRITON_INTERPRET=1``) before triton is first imported.
"""

from __future__ import annotations

import os

import torch

from fabnet.ops import vmap
from fabnet.ops.autograd import backward_formulas, setup_context
from fabnet.ops.checks import PADDING_MODES, WarpBlendArgs

try:
    import triton  # noqa: F401
except ImportError as err:  # triton is an optional dependency (pip install triton)
    _kernels = None
    IMPORT_ERROR: str | None = f"triton is not installed ({err}); `pip install triton`"
else:
    try:
        from fabnet.kernels import warp_blend as _kernels

        IMPORT_ERROR = None
    except ImportError as err:  # a broken install, or a triton too old for the kernels
        _kernels = None
        IMPORT_ERROR = f"fabnet.kernels failed to import with triton {triton.__version__} ({err}); reinstall fabnet"

# Tests set this to fill every output with NaN before the kernels write it, so an element no
# kernel writes fails the comparison with the reference.
POISON_OUTPUTS = False


def interpreted() -> bool:
    """Whether the kernels were created by Triton's interpreter (TRITON_INTERPRET=1 at import)."""
    if _kernels is None:
        return False
    return type(_kernels.warp_blend_forward_kernel).__name__ == "InterpretedFunction"


def not_supported_reasons(args: WarpBlendArgs | None = None) -> list[str]:
    """Why the Triton kernels cannot serve ``args`` (with None: cannot serve anything here)."""
    if IMPORT_ERROR is not None:
        return [IMPORT_ERROR]
    if args is None:
        return []
    device = args.sources.device
    reasons = []
    if device.type == "cuda":
        if torch.compiler.is_compiling():
            # Device queries are not traceable; under torch.compile an unsupported device is
            # reported by Triton itself when the kernel is compiled.
            return reasons
        major, minor = torch.cuda.get_device_capability(device)
        if major < 7:
            reasons.append(f"{device} has compute capability {major}.{minor}; Triton needs 7.0 or newer")
        elif args.sources.dtype == torch.bfloat16 and major < 8:
            reasons.append(f"bfloat16 needs compute capability 8.0 or newer; {device} has {major}.{minor}")
    elif device.type == "cpu":
        # TritonBackend already explains an unset TRITON_INTERPRET; this is the case it cannot see:
        # the variable is set now, but triton compiled the kernels before it was.
        if os.environ.get("TRITON_INTERPRET") == "1" and not interpreted():
            reasons.append(
                "TRITON_INTERPRET=1 was set after fabnet.kernels was imported; set it "
                "before the first import of triton to run the kernels on CPU tensors"
            )
    else:
        reasons.append(
            f"inputs are on {device}; the Triton kernels run on CUDA devices (and on the CPU under TRITON_INTERPRET=1)"
        )
    return reasons


def _options(padding_mode: str, residual: bool, align_corners: bool) -> dict:
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    return dict(
        residual=residual,
        border=padding_mode == "border",
        align_corners=align_corners,
        wrap=torch.library.wrap_triton,
        poison=POISON_OUTPUTS,
    )


if _kernels is not None:

    @torch.library.triton_op("fabnet::triton_warp_blend", mutates_args=())
    def _warp_blend_op(
        sources: torch.Tensor,
        flows: torch.Tensor,
        logits: torch.Tensor | None,
        residual: bool,
        padding_mode: str,
        align_corners: bool,
    ) -> torch.Tensor:
        return _kernels.forward(sources, flows, logits, None, **_options(padding_mode, residual, align_corners))

    @torch.library.triton_op("fabnet::triton_warp_blend_l1", mutates_args=())
    def _warp_blend_l1_op(
        sources: torch.Tensor,
        flows: torch.Tensor,
        logits: torch.Tensor | None,
        target: torch.Tensor,
        residual: bool,
        padding_mode: str,
        align_corners: bool,
    ) -> torch.Tensor:
        return _kernels.forward(sources, flows, logits, target, **_options(padding_mode, residual, align_corners))

    @torch.library.triton_op("fabnet::triton_warp_blend_backward", mutates_args=())
    def _warp_blend_backward_op(
        grad: torch.Tensor,
        sources: torch.Tensor,
        flows: torch.Tensor,
        logits: torch.Tensor | None,
        residual: bool,
        padding_mode: str,
        align_corners: bool,
        need_sources: bool,
        need_flows: bool,
        need_logits: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g_sources, g_flows, g_logits, _ = _kernels.backward(
            grad,
            sources,
            flows,
            logits,
            None,
            need_sources=need_sources,
            need_flows=need_flows,
            need_logits=need_logits,
            need_target=False,
            **_options(padding_mode, residual, align_corners),
        )
        return g_sources, g_flows, g_logits

    @torch.library.triton_op("fabnet::triton_warp_blend_l1_backward", mutates_args=())
    def _warp_blend_l1_backward_op(
        grad: torch.Tensor,
        sources: torch.Tensor,
        flows: torch.Tensor,
        logits: torch.Tensor | None,
        target: torch.Tensor,
        residual: bool,
        padding_mode: str,
        align_corners: bool,
        need_sources: bool,
        need_flows: bool,
        need_logits: bool,
        need_target: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return _kernels.backward(
            grad,
            sources,
            flows,
            logits,
            target,
            need_sources=need_sources,
            need_flows=need_flows,
            need_logits=need_logits,
            need_target=need_target,
            **_options(padding_mode, residual, align_corners),
        )

    def _spread_mask(op):
        # The Triton backward ops take the mask (last argument) as separate booleans.
        return lambda *args: op(*args[:-1], *args[-1])

    _blend_backward, _l1_backward = backward_formulas(
        _spread_mask(torch.ops.fabnet.triton_warp_blend_backward),
        _spread_mask(torch.ops.fabnet.triton_warp_blend_l1_backward),
    )

    _warp_blend_op.register_autograd(_blend_backward, setup_context=setup_context)
    _warp_blend_l1_op.register_autograd(_l1_backward, setup_context=setup_context)
    for _name in ("warp_blend", "warp_blend_l1", "warp_blend_backward", "warp_blend_l1_backward"):
        vmap.register(f"fabnet::triton_{_name}")


def warp_blend(a: WarpBlendArgs) -> torch.Tensor:
    """Blend (B, C, H, W) of validated arguments; differentiable w.r.t. every input."""
    if IMPORT_ERROR is not None:
        raise RuntimeError(IMPORT_ERROR)
    return torch.ops.fabnet.triton_warp_blend(a.sources, a.flows, a.logits, a.residual, a.padding_mode, a.align_corners)


def warp_blend_l1(a: WarpBlendArgs) -> torch.Tensor:
    """Per-sample mean |target - blend| (B,) of validated arguments; differentiable."""
    if IMPORT_ERROR is not None:
        raise RuntimeError(IMPORT_ERROR)
    return torch.ops.fabnet.triton_warp_blend_l1(
        a.sources, a.flows, a.logits, a.target, a.residual, a.padding_mode, a.align_corners
    )
