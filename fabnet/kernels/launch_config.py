"""Launch sizes of the Triton kernels: pixels per program, warps, and whether 32-bit offsets fit."""

from __future__ import annotations

import torch
import triton

# Pixels per program and warps. The forward holds a BLOCK x BLOCK_C float32 accumulator plus the
# four tap tiles of one source: 256 x 4 over 8 warps is 4 elements per thread and tile. With 4
# warps (8 per thread) ptxas spilled the float32 blend kernel on sm_80 (96 registers, 16 bytes of
# spill stores, Triton 3.9); with 8 it takes 64 registers and no spills on sm_80 and sm_90
# (test_triton_compile.py compiles and checks every launch). The backward keeps the upstream
# tile and the blend alive across its second pass over K, so it takes 128 pixels over 4 warps
# (80-121 registers for 16/32-bit types, 146-157 for float64; no spills).
FORWARD_BLOCK = 256
FORWARD_WARPS = 8
BACKWARD_BLOCK = 128
BACKWARD_WARPS = 4
# Programs per SM below which a launch takes smaller programs: at (8, 3, 3, 128, 128) the forward
# makes 8 x 64 = 512 programs of 256 pixels, under 4 per SM of an H100's 132. Halving BLOCK and
# num_warps together keeps the pixels per thread, hence the registers, and doubles the programs.
MIN_PROGRAMS_PER_SM = 4
SMALLEST_BLOCK = 64


def _block(pixels: int, block: int) -> int:
    """A power-of-two block no larger than needed: tiny images do not run mostly-masked lanes."""
    return max(16, min(block, triton.next_power_of_2(max(pixels, 1))))


def launch_config(kind: str, batch: int, pixels: int, sms: int | None) -> tuple[int, int]:
    """(BLOCK, num_warps) for a launch over ``batch`` samples of ``pixels`` output pixels.

    The three configs per kernel, largest first: forward (256, 8) / (128, 4) / (64, 2), backward
    (128, 4) / (64, 2). The largest that still gives every SM ``MIN_PROGRAMS_PER_SM`` programs
    is taken; with ``sms`` None (no GPU: the interpreter, compile tests) the largest.
    """
    block, warps = (FORWARD_BLOCK, FORWARD_WARPS) if kind == "forward" else (BACKWARD_BLOCK, BACKWARD_WARPS)
    block = _block(pixels, block)

    def too_few(block):
        return sms and batch * triton.cdiv(pixels, block) < MIN_PROGRAMS_PER_SM * sms

    while too_few(block) and block > SMALLEST_BLOCK and warps > 1:
        block, warps = block // 2, warps // 2
    return block, warps


def _sm_count(t: torch.Tensor) -> int | None:
    if t.device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(t.device).multi_processor_count


def _fits_int32(sources, flows, logits, target, extra_elements: int = 0) -> bool:
    """Whether every offset the kernels form fits in int32 (as csrc/cuda/launch.cuh decides):
    each input's span, each contiguous output, the gathers' reach past a source plane."""
    limit = 2**31 - 1

    def span(t):
        if t is None or t.numel() == 0:
            return 0
        return 1 + sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride()))

    B, K, C, Hs, Ws = sources.shape
    H, W = flows.shape[3], flows.shape[4]
    reach = 2 * (abs(sources.stride(3)) + abs(sources.stride(4)))
    spans = (
        span(sources) + reach,
        span(flows),
        span(logits),
        span(target),
        B * K * C * Hs * Ws,
        B * K * 2 * H * W,
        B * C * H * W,
        extra_elements,
    )
    return max(spans) <= limit
