"""Medians of the fused CPU op in one process, for comparing two builds run alternately.

    python benchmarks/time_fused.py LABEL          # one line: LABEL | op shape: median, min ...

pytest-benchmark compares providers inside one process; two builds of fabnet._C cannot share
one (their ops have the same names), so a comparison of builds runs this file once per build,
alternating, and reads the medians. The calls are bench_warp_blend.py's fused ones: FAb-Net's
options, fp32, flows and logits gradients; 300 calls at (8, 3, 3, 128, 128), 25 at
(32, 3, 3, 256, 256), after 5 warm-up calls each.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from fabnet import ops

OPTIONS = dict(residual=True, padding_mode="border", align_corners=True)
SHAPES = {(8, 3, 3, 128, 128): 300, (32, 3, 3, 256, 256): 25}


def _inputs(B, K, C, H, W):
    g = torch.Generator().manual_seed(0)
    sources = torch.rand(B, K, C, H, W, generator=g)
    flows = (torch.rand(B, K, 2, H, W, generator=g) * 2 - 1) * 0.1
    return sources, flows, torch.randn(B, K, H, W, generator=g), torch.rand(B, C, H, W, generator=g)


def _time(fn, calls: int) -> tuple[float, float]:
    for _ in range(5):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def _calls(shape):
    """The forward and the forward+backward call at ``shape``, as closures over their inputs."""
    sources, flows, logits, target = _inputs(*shape)
    leaves = flows.clone().requires_grad_(), logits.clone().requires_grad_()

    def forward():
        with torch.no_grad():
            ops.warp_blend_l1(sources, flows, logits, target, **OPTIONS, backend="cpu")

    def forward_backward():
        loss = ops.warp_blend_l1(sources, *leaves, target, **OPTIONS, backend="cpu")
        torch.autograd.grad(loss.sum(), leaves)

    return {"forward": forward, "forward+backward": forward_backward}


def main(label: str) -> str:
    parts = []
    for shape, calls in SHAPES.items():
        for name, fn in _calls(shape).items():
            median, least = _time(fn, calls)
            parts.append(f"{name} {'x'.join(map(str, shape))}: median {median:.3f} ms, min {least:.3f}")
    return f"{label} | " + "; ".join(parts)


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "this build"))
