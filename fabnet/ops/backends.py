"""Backend families of the fused op and the choice between them.

Python chooses only between families (C++ through the dispatcher, Triton, the reference); the
dispatcher picks the C++ kernel for the tensors' device. Each backend says why it cannot serve an
input (``not_supported_reasons``); ``backend="auto"`` takes the first that can, in the order of
``AUTO_ORDER`` for the inputs' device, and a forced backend that cannot raises the reasons.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

import torch

from fabnet.ops import extension, reference, transforms
from fabnet.ops.checks import WarpBlendArgs


class FallbackWarning(UserWarning):
    """``backend="auto"`` ran the slower PyTorch reference because no fused backend could serve.

    Shown once per process and reason; ``warnings.simplefilter("ignore", FallbackWarning)`` or
    ``backend="reference"`` silences it.
    """


class Backend:
    """One family of kernels. Subclasses implement the two ops (differentiable) and the reasons."""

    name = "?"

    def not_supported_reasons(self, args: WarpBlendArgs | None = None) -> list[str]:
        """Why this backend cannot serve ``args`` (or, with None, cannot serve anything here)."""
        raise NotImplementedError

    def warp_blend(self, a: WarpBlendArgs) -> torch.Tensor:
        raise NotImplementedError

    def warp_blend_l1(self, a: WarpBlendArgs) -> torch.Tensor:
        raise NotImplementedError


class ReferenceBackend(Backend):
    """Plain PyTorch (``F.grid_sample`` per source): serves everything, materialises everything."""

    name = "reference"

    def not_supported_reasons(self, args=None):
        return []

    def warp_blend(self, a):
        return reference.warp_blend_reference(
            a.sources,
            a.flows,
            a.logits,
            residual=a.residual,
            padding_mode=a.padding_mode,
            align_corners=a.align_corners,
            twice_differentiable=_under_grad_transform(),
        )

    def warp_blend_l1(self, a):
        return reference.warp_blend_l1_reference(
            a.sources,
            a.flows,
            a.logits,
            a.target,
            residual=a.residual,
            padding_mode=a.padding_mode,
            align_corners=a.align_corners,
            twice_differentiable=_under_grad_transform(),
        )


def _under_grad_transform() -> bool:
    """torch.func.grad / jacrev and the like differentiate the reference's own backward, which
    F.grid_sample's CUDA kernels cannot (on an H200: "Expected a proper Tensor but got None")."""
    return transforms.grad_transform_reason() is not None


class ExtensionBackend(Backend):
    """The C++ kernels of fabnet._C for one device type (the dispatcher routes by device)."""

    def __init__(self, name: str, device_type: str):
        self.name = name
        self.device_type = device_type

    def not_supported_reasons(self, args=None):
        if not extension.available():
            return [extension.LOAD_ERROR]
        reasons = _context_reasons(args)
        if self.device_type == "cuda":
            on_cuda = args is not None and args.sources.device.type == "cuda"
            reasons += extension.cuda_reasons(args.sources.device if on_cuda else None)
        if args is not None and args.sources.device.type != self.device_type:
            reasons.append(f"inputs are on {args.sources.device}, this backend runs on {self.device_type}")
        return reasons

    def warp_blend(self, a):
        return torch.ops.fabnet.warp_blend(a.sources, a.flows, a.logits, a.residual, a.padding_mode, a.align_corners)

    def warp_blend_l1(self, a):
        if self.device_type == "cpu" and _only_flows_or_logits_need_grad(a):
            mask = [a.flows.requires_grad, a.logits is not None and a.logits.requires_grad]
            loss, _, _ = torch.ops.fabnet.warp_blend_l1_with_grads(
                a.sources, a.flows, a.logits, a.target, a.residual, a.padding_mode, a.align_corners, mask
            )
            return loss
        return torch.ops.fabnet.warp_blend_l1(
            a.sources, a.flows, a.logits, a.target, a.residual, a.padding_mode, a.align_corners
        )


def _only_flows_or_logits_need_grad(a: WarpBlendArgs) -> bool:
    """The training case on CPU: gradients for flows and/or logits only, in float32/float64.

    Then one kernel pass computes the loss and its per-sample gradients together (the backward
    only scales them), instead of a forward pass and a backward pass that gathers every source
    pixel again: the largest gain of the training step (docs/perf/cpu-kernel.md, "training path").
    Half precision keeps the recompute backward, whose gradients are rounded once, not twice.
    """
    if not torch.is_grad_enabled() or a.sources.dtype not in (torch.float32, torch.float64):
        return False
    if a.sources.requires_grad or a.target.requires_grad:
        return False
    return a.flows.requires_grad or (a.logits is not None and a.logits.requires_grad)


def _context_reasons(args: WarpBlendArgs | None) -> list[str]:
    """The caller's context, when it rules out the fused kernels for this call."""
    reason = transforms.grad_transform_reason() if args is not None else None
    return [reason] if reason else []


class TritonBackend(Backend):
    """Triton kernels (fabnet.kernels); on CPU tensors only under TRITON_INTERPRET=1."""

    name = "triton"
    module_name = "fabnet.ops.triton_ops"

    def _module(self):
        # sys.modules first: dynamo cannot trace importlib.import_module, and a compiled graph
        # calls this on every run (torch.compile(fullgraph=True) with backend="triton").
        return sys.modules.get(self.module_name) or importlib.import_module(self.module_name)

    def not_supported_reasons(self, args=None):
        try:
            module = self._module()
        except ImportError as err:
            return [f"Triton kernels unavailable ({err}); `pip install triton`"]
        reasons = list(module.not_supported_reasons(args)) + _context_reasons(args)
        if args is not None and args.sources.requires_grad and torch.are_deterministic_algorithms_enabled():
            reasons.append(
                "torch.use_deterministic_algorithms(True) is on and sources require grad: the Triton kernels "
                "add source gradients with atomics (backend='cuda' sums them in a fixed order)"
            )
        if args is not None and args.sources.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            reasons.append("inputs are on the CPU: Triton runs them only under TRITON_INTERPRET=1")
        return reasons

    def warp_blend(self, a):
        return self._module().warp_blend(a)

    def warp_blend_l1(self, a):
        return self._module().warp_blend_l1(a)


BACKENDS: dict[str, Backend] = {
    "cuda": ExtensionBackend("cuda", "cuda"),
    "triton": TritonBackend(),
    "cpu": ExtensionBackend("cpu", "cpu"),
    "reference": ReferenceBackend(),
}

# "auto" never picks the Triton interpreter on CPU tensors: it runs ~1000x slower than the C++ kernel.
AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}


def backends(args: WarpBlendArgs | None = None) -> dict[str, list[str]]:
    """Every backend with the reasons it cannot serve ``args`` (an empty list: it can)."""
    return {name: backend.not_supported_reasons(args) for name, backend in BACKENDS.items()}


def select(name: str, args: WarpBlendArgs) -> Backend:
    """The backend to run ``args`` on: ``name`` itself, or the first that can for "auto"."""
    transforms.check_forward_mode(args.tensors)
    if name == "auto":
        if transforms.tracing_reason() is not None:
            return BACKENDS["reference"]
        declined = {}
        for candidate in AUTO_ORDER.get(args.sources.device.type, ()):
            if candidate == "reference":
                break
            declined[candidate] = BACKENDS[candidate].not_supported_reasons(args)
            if not declined[candidate]:
                return BACKENDS[candidate]
        if declined and transforms.grad_transform_reason() is None:
            _warn_fallback(args.sources.device.type, declined)
        return BACKENDS["reference"]
    if name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {name!r}")
    reasons = BACKENDS[name].not_supported_reasons(args)
    if reasons:
        raise ValueError(f"backend {name!r} cannot serve this input: " + "; ".join(reasons))
    return BACKENDS[name]


# Messages already shown: a training loop calls the op thousands of times; once is enough.
_WARNED: set[str] = set()


def _warn_fallback(device_type: str, declined: dict[str, list[str]]) -> None:
    """One FallbackWarning per process and reason: why each fused backend declined, and the fix
    (each reason ends with it)."""
    if torch.compiler.is_compiling():  # the eager call before compiling has already warned
        return
    why = "; ".join(f"{name}: {' / '.join(reasons)}" for name, reasons in declined.items())
    if why in _WARNED:
        return
    _WARNED.add(why)
    warnings.warn(
        f"fabnet.ops: backend='auto' runs the slower PyTorch reference on {device_type} tensors, because {why}. "
        "backend='reference' chooses it without this warning.",
        FallbackWarning,
        stacklevel=_stacklevel_of_caller(),
    )


def _stacklevel_of_caller() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside fabnet.ops (the user's
    call of warp_blend, warp_blend_l1 or grid_sample, however deep the call chain inside)."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == package:
        frame, level = frame.f_back, level + 1
    return level
