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

import torch

from fabnet.ops import extension, reference
from fabnet.ops.checks import WarpBlendArgs


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
        )


class ExtensionBackend(Backend):
    """The C++ kernels of fabnet._C for one device type (the dispatcher routes by device)."""

    def __init__(self, name: str, device_type: str):
        self.name = name
        self.device_type = device_type

    def not_supported_reasons(self, args=None):
        if not extension.available():
            return [extension.LOAD_ERROR]
        reasons = []
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
    pixel again: 1.97 instead of 3.46 ms for the two ops at (8, 3, 3, 128, 128) fp32 on 2 cores
    (csrc/cpu/warp_blend.cpp). Half precision keeps the recompute backward, whose gradients are
    rounded once, not twice.
    """
    if not torch.is_grad_enabled() or a.sources.dtype not in (torch.float32, torch.float64):
        return False
    if a.sources.requires_grad or a.target.requires_grad:
        return False
    return a.flows.requires_grad or (a.logits is not None and a.logits.requires_grad)


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
        reasons = list(module.not_supported_reasons(args))
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
    if name == "auto":
        for candidate in AUTO_ORDER.get(args.sources.device.type, ("reference",)):
            if not BACKENDS[candidate].not_supported_reasons(args):
                return BACKENDS[candidate]
        return BACKENDS["reference"]
    if name not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {name!r}")
    reasons = BACKENDS[name].not_supported_reasons(args)
    if reasons:
        raise ValueError(f"backend {name!r} cannot serve this input: " + "; ".join(reasons))
    return BACKENDS[name]
