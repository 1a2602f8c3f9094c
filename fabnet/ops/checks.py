"""Argument validation for the public ops: every bad input is refused before a kernel runs.

``ValueError`` for shapes, devices and options, ``TypeError`` for dtypes; each message names the
argument, what was expected and what came.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from dataclasses import dataclass

import torch

PADDING_MODES = ("zeros", "border")
FLOATING_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# Device types with an autocast mode; torch.is_autocast_enabled raises for others (meta).
AUTOCAST_DEVICE_TYPES = ("cpu", "cuda", "xpu", "mps")


@dataclass(frozen=True)
class WarpBlendArgs:
    """Validated, normalised inputs of one ``warp_blend`` / ``warp_blend_l1`` call.

    sources: (B, K, C, Hs, Ws); flows: (B, K, 2, H, W); logits: (B, K, H, W) or None;
    target: (B, C, H, W) or None (``warp_blend``).
    """

    sources: torch.Tensor
    flows: torch.Tensor
    logits: torch.Tensor | None
    target: torch.Tensor | None
    residual: bool
    padding_mode: str
    align_corners: bool

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(t for t in (self.sources, self.flows, self.logits, self.target) if t is not None)


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _autocast_promote(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Inside an autocast region of ``device``'s type, every tensor cast to the widest dtype among
    them, as autocast treats ``F.grid_sample`` (a "promote" op on CPU and CUDA): an fp32 image with
    a bf16 grid from a conv runs in fp32. Outside autocast the dtypes must agree, as in grid_sample.
    """
    if device.type not in AUTOCAST_DEVICE_TYPES or not torch.is_autocast_enabled(device.type):
        return tensors
    widest = tensors["sources"].dtype
    for t in tensors.values():
        widest = torch.promote_types(widest, t.dtype)
    return {name: t.to(widest) for name, t in tensors.items()}


@contextlib.contextmanager
def quiet_under_jit_trace():
    """Under ``torch.jit.trace`` sizes are traced tensors, and each test of one warns that its
    truth value is not recorded. For the argument checks and the reference's size branches that
    is right: they hold for the traced shapes, as the trace itself does."""
    if not torch.jit.is_tracing():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def validate(
    sources, flows, logits, target, *, residual, padding_mode, align_corners, needs_target: bool
) -> WarpBlendArgs:
    """Check every argument and return them normalised (logits as (B, K, H, W))."""
    named = {"sources": sources, "flows": flows, "logits": logits}
    if needs_target:
        named["target"] = target
    given = _checked_tensors(named)
    sources, flows = given["sources"], given["flows"]
    logits, target = given.get("logits"), given.get("target", target)
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if not isinstance(residual, bool) or not isinstance(align_corners, bool):
        raise ValueError(
            f"residual and align_corners must be bool, got residual={residual!r}, align_corners={align_corners!r}"
        )
    logits = _checked_shapes(sources, flows, logits, target if needs_target else None, named.get("logits"))
    C, H, W = sources.shape[2], flows.shape[3], flows.shape[4]
    check_footprint(sources, flows, logits, target if needs_target else None, C=C, H=H, W=W)
    return WarpBlendArgs(
        sources, flows, logits, target if needs_target else None, residual, padding_mode, align_corners
    )


def _checked_tensors(named: dict) -> dict[str, torch.Tensor]:
    """The given tensors by name, each a floating tensor, all on one device and (after autocast's
    promotion) of one dtype; TypeError / ValueError naming the argument otherwise."""
    for name, t in named.items():
        if t is None and name != "logits":
            raise TypeError(f"{name} must be a tensor, got None")
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    given = {name: t for name, t in named.items() if t is not None}
    for name, t in given.items():
        if t.dtype not in FLOATING_DTYPES:
            raise TypeError(f"{name} must be float32, float64, bfloat16 or float16, got {t.dtype}")
    devices = {name: t.device for name, t in given.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"all tensors must be on one device, got {listed}")
    given = _autocast_promote(given, given["sources"].device)
    dtypes = {name: t.dtype for name, t in given.items()}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise TypeError(f"all tensors must share one dtype, got {listed}; cast them with .to(dtype)")
    return given


def _checked_shapes(sources, flows, logits, target, logits_as_given):
    """logits as (B, K, H, W) (or None) once every shape agrees with sources' (B, K, C) and flows'
    (H, W); ValueError naming the argument otherwise."""
    if sources.dim() != 5:
        raise ValueError(f"sources must have shape (B, K, C, Hs, Ws), got {_shape(sources)}")
    B, K, C, Hs, Ws = sources.shape
    # As F.grid_sample: empty batches, channels and outputs give empty results; a source needs
    # pixels to sample from, and the softmax at least one source.
    if K < 1 or Hs < 1 or Ws < 1:
        raise ValueError(f"sources must have K, Hs, Ws >= 1, got {_shape(sources)}")
    if flows.dim() != 5 or flows.shape[0] != B or flows.shape[1] != K or flows.shape[2] != 2:
        raise ValueError(f"flows must have shape (B, K, 2, H, W) with B={B}, K={K} (from sources); got {_shape(flows)}")
    H, W = flows.shape[3], flows.shape[4]
    if logits is not None:
        if logits.dim() == 5 and logits.shape[2] == 1:
            logits = logits.squeeze(2)
        if _shape(logits) != (B, K, H, W):
            raise ValueError(
                f"logits must have shape (B, K, H, W) or (B, K, 1, H, W) with "
                f"B={B}, K={K}, H={H}, W={W}; got {_shape(logits_as_given)}"
            )
    if target is not None and _shape(target) != (B, C, H, W):
        raise ValueError(
            f"target must have shape (B, C, H, W) = {(B, C, H, W)} "
            f"(B, C from sources, H, W from flows); got {_shape(target)}"
        )
    return logits


# The CPU kernel addresses a source plane with int32 offsets (so that its tap gathers vectorise).
PLANE_INDEX_LIMIT = 2**31


# A CUDA call that needs under 1/16 of the card's memory is not checked: asking the driver for the
# free memory (cudaMemGetInfo) and the allocator for its statistics cost more host time per call
# than the fused forward's GPU time at the training shape (benchmarks/RESULTS.md, "host"). Such a
# call can only fail on a card already nearly full, and then the allocator's own error says so.
SMALL_SHARE = 16


def _device_total(device: torch.device) -> int:
    """Bytes of memory on a CUDA device (torch caches the device's properties)."""
    return torch.cuda.get_device_properties(device).total_memory


def _memory_limit(device: torch.device) -> tuple[int, str]:
    """Bytes a call may allocate on ``device``, and what that number is."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device), f"free on {device}"
    return _physical_memory()


@functools.cache
def _physical_memory() -> tuple[int, str]:
    """The machine's memory, read once: two sysconf calls were 10 us of every CPU call's host time."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "physical memory"
    except (ValueError, OSError, AttributeError):  # no sysconf: no limit known
        return 2**63, "unknown"


def check_footprint(sources, flows, logits, target, *, C: int, H: int, W: int) -> None:
    """ValueError before any allocation when a call cannot fit: a source plane past the kernels'
    int32 offsets, or outputs and gradients larger than the device's memory."""
    if torch.compiler.is_compiling():  # traced shapes; the compiled call checks nothing at run time
        return
    Hs, Ws = sources.shape[3], sources.shape[4]
    span = (Hs - 1) * abs(sources.stride(3)) + (Ws - 1) * abs(sources.stride(4)) + 1
    if span > PLANE_INDEX_LIMIT:
        raise ValueError(
            f"sources: one (Hs, Ws) = ({Hs}, {Ws}) plane spans {span} elements with strides "
            f"{tuple(sources.stride())}; the kernels address a plane with 32-bit offsets (at most "
            f"{PLANE_INDEX_LIMIT}); make sources contiguous or split the frames"
        )
    B = sources.shape[0]
    item = sources.element_size()
    acc = 8 if sources.dtype == torch.float64 else 4
    # The output, plus what a backward allocates: each gradient asked for (sources' accumulated in
    # the accumulation type first) and, for the loss, the recomputed blend is never materialised.
    need = (B if target is not None else B * C * H * W) * item
    if sources.requires_grad:
        need += sources.numel() * (item + acc)
    for t in (flows, logits, target):
        if t is not None and t.requires_grad:
            need += t.numel() * item
    need += _internal_copies(sources, flows, logits, target, acc)
    if sources.device.type == "cuda" and need < _device_total(sources.device) // SMALL_SHARE:
        return
    limit, what = _memory_limit(sources.device)
    if need > limit:
        raise ValueError(
            f"this call needs {need / 2**30:.1f} GiB for its output, gradients and internal copies, more "
            f"than the {limit / 2**30:.1f} GiB of {what}; split the batch (or make expanded inputs "
            "contiguous at the size you need)"
        )


def _internal_copies(sources, flows, logits, target, acc: int) -> int:
    """Bytes the kernels allocate besides outputs and gradients. The CPU kernels read flows,
    logits and target contiguous (an expanded, zero-stride flows of 1 element becomes B K 2 H W),
    and sources too when their gradient is asked for; the CUDA kernels read strides, but their
    deterministic source gradient keeps 4 tap contributions and indices per output pixel."""
    item = sources.element_size()
    total = 0
    if sources.device.type == "cpu":
        for t in (flows, logits, target):
            if t is not None and not t.is_contiguous():
                total += t.numel() * item
        if sources.requires_grad and not sources.is_contiguous():
            total += sources.numel() * item
    elif sources.device.type == "cuda" and sources.requires_grad and torch.are_deterministic_algorithms_enabled():
        B, K, C = sources.shape[:3]
        H, W = flows.shape[3], flows.shape[4]
        total += B * K * H * W * 4 * (C * acc + 4)
    return total
