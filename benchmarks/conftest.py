"""Shared benchmark fixtures: the device, its measured copy bandwidth, and a ratio summary.

Every benchmark records its median in ``RECORDS``; at the end of the session the summary prints,
per group, each provider's median, its speed-up over the eager reference and over
``torch.compile(reference)``, and its achieved GB/s as a fraction of the measured copy bandwidth.
"""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
import torch

# group -> provider -> (median seconds, minimal bytes)
RECORDS: dict[str, dict[str, tuple[float, int]]] = defaultdict(dict)
_BANDWIDTH: dict[str, float] = {}


def bench_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_copy_bandwidth(device: torch.device, nbytes: int = 256 << 20, repeats: int = 7) -> float:
    """Best-of-``repeats`` GB/s of ``dst.copy_(src)`` (bytes read + bytes written)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best / 1e9


@pytest.fixture(scope="session")
def device() -> torch.device:
    return bench_device()


@pytest.fixture(scope="session")
def copy_gbps(device) -> float:
    if device.type not in _BANDWIDTH:
        _BANDWIDTH[device.type] = measure_copy_bandwidth(device)
    return _BANDWIDTH[device.type]


def record(benchmark, group: str, provider: str, nbytes: int, copy_gbps: float) -> None:
    """Put bytes and GB/s in extra_info and remember the median and minimum for the summary."""
    benchmark.extra_info["min_bytes"] = nbytes
    benchmark.extra_info["copy_GBps"] = round(copy_gbps, 2)
    stats = getattr(benchmark, "stats", None)
    if not stats:  # --benchmark-disable: the function ran once, untimed
        return
    median = stats.stats.median
    gbps = nbytes / median / 1e9
    benchmark.extra_info["GBps"] = round(gbps, 2)
    benchmark.extra_info["fraction_of_copy"] = round(gbps / copy_gbps, 3)
    RECORDS[group][provider] = (median, stats.stats.min, nbytes)


def pytest_terminal_summary(terminalreporter):
    if not RECORDS:
        return
    tr = terminalreporter
    tr.section("fabnet: speed-ups and memory floor")
    for device, gbps in _BANDWIDTH.items():
        tr.write_line(f"copy bandwidth ({device}): {gbps:.1f} GB/s")
    # Ratios of medians, and of minima (the least disturbed call of each: on a shared machine the
    # median moves with the neighbours' load, the minimum much less).
    tr.write_line(
        f"{'group':<52} {'provider':<20} {'median ms':>10} {'vs eager':>9} "
        f"{'vs compile':>10} {'min ms':>8} {'vs eager':>9} {'GB/s':>8} {'of copy':>8}"
    )
    for group, providers in RECORDS.items():
        eager = providers.get("reference")
        compiled = providers.get("compiled_reference")
        gbps_floor = next(iter(_BANDWIDTH.values()), float("nan"))
        for provider, (median, minimum, nbytes) in providers.items():
            gbps = nbytes / median / 1e9
            vs_eager = f"{eager[0] / median:.2f}x" if eager else "-"
            vs_compile = f"{compiled[0] / median:.2f}x" if compiled else "-"
            vs_eager_min = f"{eager[1] / minimum:.2f}x" if eager else "-"
            tr.write_line(
                f"{group:<52} {provider:<20} {median * 1e3:>10.3f} {vs_eager:>9} "
                f"{vs_compile:>10} {minimum * 1e3:>8.3f} {vs_eager_min:>9} {gbps:>8.1f} "
                f"{gbps / gbps_floor:>8.1%}"
            )
