"""Loader throughput: the DALI CPU pipeline against the PIL DataLoader, at identical output.

    pytest benchmarks/bench_data.py --benchmark-only      # timings + frames/s summary
    pytest benchmarks/bench_data.py --benchmark-disable   # each case once (smoke)

Both providers read the same plan (``fabnet.data.sampling``): per sample K = 3 sources and a
target of one track, the paper's random square crop (170-190 of 256 px, one box per sample),
resized to S and delivered as float32 RGB in [0, 1], B = 32. Output is (32, 3, S, S) targets
and (32, 3, 3, S, S) sources, so a batch is 128 decoded, cropped and resized frames.

Data: a synthetic root of 256 px JPEGs (the size of VoxCeleb face crops) rendered once per
session, 64 frames that the page cache holds, so the timing is decode + resample, not disk.
The shared ``record()`` summary (GB/s against the copy bandwidth) does not apply: a loader is
bound by JPEG decoding, not memory traffic, so this file prints its own frames/s table.
One timed round is one epoch of ``BATCHES`` batches through the public ``make_loader``,
including what an epoch costs each backend: the PIL DataLoader starts its workers, DALI
resets its iterator (the pipeline is built once, in the warm-up epoch).

Settings: PIL ``num_workers`` = DALI ``num_threads`` = the CPU count (2 here), one worker or
thread per core for both. A sweep of 1, 2 and 3 on this shared 2-core machine (S = 256, one
epoch each, frames/s) gave PIL 319 / 312 / 269 and DALI 507 / 492 / 404: 1 and 2 within noise
for both, 3 slower for both, so neither side is starved or oversubscribed by the choice.
``FABNET_BENCH_WORKERS`` overrides both to compare other machines.

The DALI CPU pipeline decodes only the crop box plus a filter margin
(``fn.decoders.image_slice``; see ``fabnet.data.dali_backend``); Pillow has no region decode
but decodes at 1/2, 1/4 or 1/8 scale in the DCT when the crop is at least twice S (the S = 64
case), which DALI's CPU decoder does not. Each side uses what its library offers.
"""

from __future__ import annotations

import os
import warnings

import pytest

from fabnet.data import DataWarning, make_loader
from fabnet.data.dali_backend import available as dali_available

B, K = 32, 3
SIZES = (256, 64)
BATCHES = 6  # per timed epoch: 768 frames, about 2-4 s per round on 2 cores at S = 256
ROUNDS = 5
WORKERS = int(os.environ.get("FABNET_BENCH_WORKERS", min(8, os.cpu_count() or 1)))
PROVIDERS = ["pil", "dali"]

FPS: dict[int, dict[str, float]] = {}  # size -> provider -> frames per second (timed runs only)


@pytest.fixture(scope="session")
def bench_root(tmp_path_factory) -> str:
    from fabnet.data.synth import synthesize

    root = str(tmp_path_factory.mktemp("bench_data") / "root")
    # One ray per pixel: the renderer's anti-aliasing does not matter to a decoder's speed.
    synthesize(
        root,
        identities=8,
        tracks_per_identity=1,
        frames_per_track=8,
        size=256,
        seed=0,
        supersample=1,
        progress=False,
        previews=False,
    )
    return root


class _Summary:
    """A plugin printing the frames/s table at the end of the session (after pytest-benchmark's)."""

    @staticmethod
    def pytest_terminal_summary(terminalreporter):
        if not FPS:
            return
        tr = terminalreporter
        tr.section("fabnet: data loader frames/s")
        tr.write_line(f"B={B} K={K}, {os.cpu_count()} CPUs, PIL num_workers = DALI num_threads = {WORKERS}")
        for size, fps in FPS.items():
            pil, dali = fps.get("pil", float("nan")), fps.get("dali", float("nan"))
            tr.write_line(
                f"S={size:<4} PIL {pil:8.0f} frames/s   DALI {dali:8.0f} frames/s   DALI / PIL {dali / pil:.2f}x"
            )


@pytest.fixture(scope="module", autouse=True)
def fps_summary(request):
    # A hook defined in this file would not be seen (only conftest files and plugins are), and
    # output written during a test's teardown is captured: register the summary as a plugin.
    manager = request.config.pluginmanager
    if not manager.has_plugin("fabnet-bench-data"):
        manager.register(_Summary(), "fabnet-bench-data")
    yield


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_loader_throughput(benchmark, provider, size, bench_root):
    if provider == "dali" and not dali_available():
        pytest.skip("nvidia-dali is not installed (pip install nvidia-dali-cuda130)")
    disabled = getattr(benchmark, "disabled", False)
    batches = 1 if disabled else BATCHES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        loader = make_loader(
            bench_root,
            split="all",
            batch_size=B,
            num_sources=K,
            size=size,
            backend=provider,
            crop="random",
            shuffle=True,
            drop_last=True,
            epoch_length=B * batches,
            num_workers=WORKERS,
            num_threads=WORKERS,
        )
    group = f"loader B={B} K={K} S={size} cpu"
    benchmark.group = group

    def epoch():
        n = 0
        for batch in loader:
            n += batch["target"].shape[0] + batch["sources"].shape[0] * batch["sources"].shape[1]
        return n, batch

    # One warm-up epoch: DALI builds its pipeline, the page cache fills. Five timed epochs.
    frames, last = benchmark.pedantic(epoch, rounds=ROUNDS, iterations=1, warmup_rounds=0 if disabled else 1)
    assert frames == B * (K + 1) * batches
    assert last["target"].shape == (B, 3, size, size) and last["sources"].shape == (B, K, 3, size, size)
    assert float(last["sources"].min()) >= 0 and float(last["sources"].max()) <= 1
    benchmark.extra_info["frames_per_round"] = frames
    stats = getattr(benchmark, "stats", None)
    if stats:
        fps = frames / stats.stats.median
        benchmark.extra_info["frames_per_s"] = round(fps, 1)
        FPS.setdefault(size, {})[provider] = fps
