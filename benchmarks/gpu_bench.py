"""The GPU measurements of benchmarks/gpu_check.sh, in one process under one deadline.

    python -m benchmarks.gpu_bench --out DIR [--deadline SECONDS]   # on a CUDA GPU
    python -m benchmarks.gpu_bench --out DIR --smoke                # tiny shapes on the CPU

Sections, in this order by default: parity, host, kernels, op, train, drop_in, deterministic,
op_more (the deadline cuts the tail, so what the targets need comes first):

0. ``host``: where a call's host time goes (cProfile, the device queries); ``kernels``: the op at
   the training shape split into GPU time (torch.profiler, every kernel's device time) and host
   time per call, so the kernels meet the copy bandwidth without the Python dispatch in between.

1. ``op`` / ``op_more``: ``warp_blend_l1`` (residual, border, align_corners: FAb-Net's options) at
   the training shape (32, 3, 3, 256, 256) in fp32 and bf16 with smooth near-identity flows (what
   the decoders produce); ``op_more``: the same with random coordinates (every gather a cache
   miss), then (8, 3, 3, 128, 128) and a feature map (8, 2, 64, 128, 128). Modes: forward;
   forward+backward for flows and logits; the same with the sources' gradient too. Providers:
   cuda, triton, eager (grid_sample + softmax + L1) and torch.compile of the eager code (at the
   training shape). Each row: median / min ms, GB/s against the fewest bytes, the fraction of the
   copy bandwidth measured at the start, and the peak memory above the inputs.
2. ``drop_in``: ``fabnet.ops.grid_sample`` against ``F.grid_sample`` at (32, 3, 256, 256) and
   (8, 64, 128, 128), fp32 and bf16, forward and forward+backward (grid only; input and grid).
3. ``deterministic``: under ``torch.use_deterministic_algorithms(True)``, what ``F.grid_sample``'s
   backward does, fabnet's result twice (bitwise equal or not) and its time against the atomic path.
4. ``train``: one FAb-Net step at S = 256, B = 32, K = 3 with the cuda, triton and reference ops,
   fp32 and bf16 autocast.
5. ``parity``: the relative error of cuda and triton against a float64 reference on the bench's
   own inputs (the full parity suite is tests/ops, run before this by gpu_check.sh).

Timing (all but ``kernels``): after two warm-up calls (compilation stays out), CUDA events around
batches of back-to-back calls, as a training loop issues them; median and minimum of 7 batches.
Results go to DIR/bench.json after every row, so a
run stopped from outside keeps what it measured; DIR/bench.md is the table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fabnet import ops
from fabnet.ops.reference import identity_grid, warp_blend_l1_reference

OPTIONS = dict(residual=True, padding_mode="border", align_corners=True)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TRAIN_SHAPE = (32, 3, 3, 256, 256)


class Bench:
    """Runs measurements until ``deadline`` (time.monotonic()) and keeps every row on disk."""

    def __init__(self, out: Path, device: torch.device, deadline: float, repeat_s: float = 0.4):
        self.out, self.device, self.deadline, self.repeat_s = out, device, deadline, repeat_s
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self.copy_gbps = float("nan")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time_calls(self, fn) -> tuple[float, float]:
        """(median, min) seconds per call of ``fn()``, after two warm-up calls.

        On a GPU, calls run back to back between two events in batches of ``n`` (n sized so that a
        batch takes ~20 ms), as a training loop issues them: the host queues the next call while
        the GPU runs this one, so a call costs the larger of its host and its GPU time. Median and
        minimum over the batches."""
        fn()
        fn()
        self.sync()
        if self.device.type != "cuda":
            times: list[float] = []
            spent = time.monotonic()
            while len(times) < 5 or (len(times) < 50 and time.monotonic() - spent < self.repeat_s):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return statistics.median(times), min(times)
        one = self._batch(fn, 1)
        n = max(1, min(200, int(0.02 / max(one, 1e-6))))
        batches = [self._batch(fn, n) for _ in range(7)]
        return statistics.median(batches), min(batches)

    def _batch(self, fn, n: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / n

    def peak_above(self, fn) -> float:
        """MiB allocated at the peak of one ``fn()`` call above what was allocated before it."""
        if self.device.type != "cuda":
            return float("nan")
        self.sync()
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        fn()
        self.sync()
        return (torch.cuda.max_memory_allocated(self.device) - before) / 2**20

    def measure(self, section: str, case: str, provider: str, fn, nbytes: int = 0, **extra) -> dict | None:
        """Time ``fn`` and record a row; a failure is recorded as the row's error, not raised."""
        if self.left() <= 0:
            return None
        row = dict(section=section, case=case, provider=provider, **extra)
        try:
            median, minimum = self.time_calls(fn)
            row.update(median_ms=median * 1e3, min_ms=minimum * 1e3, peak_mib=self.peak_above(fn))
            if nbytes:
                row.update(GBps=nbytes / median / 1e9, of_copy=nbytes / median / 1e9 / self.copy_gbps)
        except Exception as err:  # a provider that fails is a finding of the run
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
        self.rows.append(row)
        self.save()
        return row

    def note(self, text: str) -> None:
        print(text, flush=True)
        self.notes.append(text)
        self.save()

    def save(self) -> None:
        doc = dict(device=device_line(self.device), copy_GBps=self.copy_gbps, rows=self.rows, notes=self.notes)
        (self.out / "bench.json").write_text(json.dumps(doc, indent=1, default=float))


def device_line(device: torch.device) -> str:
    if device.type != "cuda":
        return f"cpu, torch {torch.__version__}"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    name = torch.cuda.get_device_name(device)
    cap = torch.cuda.get_device_capability(device)
    return (
        f"{name} (sm_{cap[0]}{cap[1]}), torch {torch.__version__}, CUDA {torch.version.cuda}, triton {triton_version}"
    )


def copy_bandwidth(bench: Bench, nbytes: int) -> float:
    """GB/s of a device-to-device copy, bytes read plus written (the memory ceiling of this run)."""
    src = torch.rand(nbytes // 4, device=bench.device)
    dst = torch.empty_like(src)
    median, _ = bench.time_calls(lambda: dst.copy_(src))
    return 2 * nbytes / median / 1e9


def nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def op_inputs(shape, device, dtype, flow_kind: str, seed: int = 0):
    """Fresh random sources, flows, logits, target. ``flow_kind``: "smooth" (residual offsets of
    about 2 % of the frame, varying over ~1/8 of it) or "random" (coordinates uniform over the frame)."""
    B, K, C, H, W = shape
    g = torch.Generator(device="cpu").manual_seed(seed)
    sources = torch.rand(B, K, C, H, W, generator=g)
    if flow_kind == "smooth":
        coarse = torch.randn(B * K, 2, 8, 8, generator=g) * 0.02
        flows = F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=True).reshape(B, K, 2, H, W)
    else:
        coords = torch.rand(B, K, 2, H, W, generator=g) * 2 - 1
        base = identity_grid(1, H, W, align_corners=True, dtype=torch.float32, device=torch.device("cpu"))
        flows = coords - base.permute(0, 3, 1, 2).unsqueeze(1)
    logits = torch.randn(B, K, H, W, generator=g)
    target = torch.rand(B, C, H, W, generator=g)
    return [t.to(device, dtype).contiguous() for t in (sources, flows, logits, target)]


def op_providers(device: torch.device) -> dict:
    # Each (shape, dtype, grad mode) is one more graph of the same function: above dynamo's
    # default limit of 8 it would silently run eager and the "compiled" rows would lie.
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))
    compiled = torch.compile(warp_blend_l1_reference, fullgraph=True, dynamic=False)
    providers = {}
    if device.type == "cuda":
        providers["cuda"] = lambda *a: ops.warp_blend_l1(*a, **OPTIONS, backend="cuda")
        providers["triton"] = lambda *a: ops.warp_blend_l1(*a, **OPTIONS, backend="triton")
    else:
        providers["cpu"] = lambda *a: ops.warp_blend_l1(*a, **OPTIONS, backend="cpu")
    providers["eager"] = lambda *a: warp_blend_l1_reference(*a, **OPTIONS)
    providers["compiled"] = lambda *a: compiled(*a, **OPTIONS)
    return providers


def op_call(fn, inputs, mode: str):
    """One call of mode "forward", "fwd+bwd" (flows, logits) or "fwd+bwd+src" (sources too)."""
    sources, flows, logits, target = inputs
    if mode == "forward":

        def call():
            with torch.no_grad():
                return fn(sources, flows, logits, target)

        return call, nbytes(*inputs)
    wanted = [flows, logits] if mode == "fwd+bwd" else [sources, flows, logits]
    wants = [any(t is w for w in wanted) for t in inputs]
    leaves = [t.detach().requires_grad_(want) for t, want in zip(inputs, wants)]
    grad_of = [leaf for leaf, want in zip(leaves, wants) if want]

    def call():
        return torch.autograd.grad(fn(*leaves).sum(), grad_of)

    return call, 2 * nbytes(*inputs) + nbytes(*wanted)


def op_section(bench: Bench, cases) -> None:
    providers = op_providers(bench.device)
    for case, shape, dtype_name, flow_kind, modes, compiled_modes in cases:
        inputs = op_inputs(shape, bench.device, DTYPES[dtype_name], flow_kind)
        for mode in modes:
            for provider, fn in providers.items():
                if provider == "compiled" and mode not in compiled_modes:
                    continue
                call, floor = op_call(fn, inputs, mode)
                row = bench.measure("op", f"{case} {dtype_name} {flow_kind} {mode}", provider, call, floor)
                if row is None:
                    return
                print(_row_text(row), flush=True)
        del inputs


def drop_in_section(bench: Bench, shapes, dtypes) -> None:
    """fabnet.ops.grid_sample against F.grid_sample (bilinear, zeros, align_corners=False)."""
    for shape in shapes:
        N, C, H, W = shape
        for dtype_name in dtypes:
            g = torch.Generator().manual_seed(1)
            image = torch.rand(N, C, H, W, generator=g).to(bench.device, DTYPES[dtype_name])
            base = identity_grid(N, H, W, align_corners=False, dtype=torch.float32, device=torch.device("cpu"))
            grid = (base + torch.randn(N, H, W, 2, generator=g) * 0.02).to(bench.device, DTYPES[dtype_name])
            for mode in ("forward", "fwd+bwd grid", "fwd+bwd both"):
                for provider, fn in (("fabnet", ops.grid_sample), ("F.grid_sample", F.grid_sample)):
                    call, floor = _sample_call(fn, image, grid, mode)
                    case = f"grid_sample {'x'.join(map(str, shape))} {dtype_name} {mode}"
                    row = bench.measure("drop_in", case, provider, call, floor)
                    if row is None:
                        return
                    print(_row_text(row), flush=True)


def _sample_call(fn, image, grid, mode):
    out_bytes = image.shape[0] * image.shape[1] * grid.shape[1] * grid.shape[2] * image.element_size()
    if mode == "forward":

        def call():
            with torch.no_grad():
                return fn(image, grid, align_corners=False)

        return call, nbytes(image, grid) + out_bytes
    both = mode == "fwd+bwd both"
    x = image.detach().requires_grad_(both)
    g = grid.detach().requires_grad_()
    wanted = [x, g] if both else [g]

    def call():
        return torch.autograd.grad(fn(x, g, align_corners=False).sum(), wanted)

    return call, 2 * nbytes(image, grid) + out_bytes + nbytes(*wanted)


def deterministic_section(bench: Bench, op_shape, sample_shape) -> None:
    """What torch.use_deterministic_algorithms(True) does to F.grid_sample and to fabnet."""
    if bench.device.type != "cuda":
        bench.note("deterministic: CUDA only (the CPU kernels are deterministic by construction)")
        return
    before = torch.are_deterministic_algorithms_enabled()
    N, C, H, W = sample_shape
    image = torch.rand(N, C, H, W, device=bench.device, requires_grad=True)
    base = identity_grid(N, H, W, align_corners=False, dtype=torch.float32, device=bench.device)
    grid = (base + torch.randn(N, H, W, 2, device=bench.device) * 0.02).requires_grad_()
    try:
        torch.use_deterministic_algorithms(True)
        try:
            torch.autograd.grad(F.grid_sample(image, grid, align_corners=False).sum(), [image, grid])
            bench.note("deterministic: F.grid_sample's CUDA backward ran under use_deterministic_algorithms(True)")
        except RuntimeError as err:
            bench.note(f"deterministic: F.grid_sample's CUDA backward refused: {str(err).splitlines()[0][:200]}")
        runs = [torch.autograd.grad(ops.grid_sample(image, grid).sum(), [image, grid]) for _ in range(2)]
        same = all(torch.equal(a, b) for a, b in zip(*runs))
        bench.note(f"deterministic: fabnet.ops.grid_sample input+grid gradients twice: bitwise equal = {same}")
    finally:
        torch.use_deterministic_algorithms(before)
    providers = op_providers(bench.device)
    inputs = op_inputs(op_shape, bench.device, torch.float32, "smooth")
    case = f"{'x'.join(map(str, op_shape))} fp32 smooth fwd+bwd+src"
    for name, flag in (("cuda atomic", False), ("cuda deterministic", True)):
        torch.use_deterministic_algorithms(flag)
        try:
            call, floor = op_call(providers["cuda"], inputs, "fwd+bwd+src")
            row = bench.measure("deterministic", case, name, call, floor)
            if flag and row is not None:
                first, second = call(), call()
                row["bitwise_equal"] = all(torch.equal(a, b) for a, b in zip(first, second))
        finally:
            torch.use_deterministic_algorithms(before)
        if row is None:
            return
        print(_row_text(row), flush=True)


def device_time(fn, calls: int = 20) -> float:
    """Seconds of GPU kernel time per call of ``fn`` (torch.profiler: the sum of every kernel's,
    copy's and fill's device time), without the host's share."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    total_us = 0.0
    for entry in prof.key_averages():
        total_us += getattr(entry, "self_device_time_total", None) or getattr(entry, "self_cuda_time_total", 0.0)
    return total_us / 1e6 / calls


def host_time(fn, calls: int = 100) -> float:
    """Seconds of host time per call of ``fn`` when the GPU keeps up (its launches only)."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    spent = time.perf_counter() - t0
    torch.cuda.synchronize()
    return spent / calls


def kernels_section(bench: Bench, shape, dtypes) -> None:
    """The op at the training shape split into GPU time (profiler) and host time per call: the
    kernels against the copy bandwidth, and what the Python dispatch costs on this machine."""
    if bench.device.type != "cuda":
        bench.note("kernels: CUDA only")
        return
    providers = op_providers(bench.device)
    for dtype_name in dtypes:
        inputs = op_inputs(shape, bench.device, DTYPES[dtype_name], "smooth")
        for mode in ("forward", "fwd+bwd", "fwd+bwd+src"):
            for provider, fn in providers.items():
                if bench.left() <= 0:
                    return
                if provider == "compiled" and (dtype_name, mode) == ("bf16", "fwd+bwd+src"):
                    continue
                call, floor = op_call(fn, inputs, mode)
                row = dict(
                    section="kernels", case=f"{'x'.join(map(str, shape))} {dtype_name} {mode}", provider=provider
                )
                try:
                    gpu, host = device_time(call), host_time(call)
                    row.update(
                        median_ms=gpu * 1e3, min_ms=gpu * 1e3, host_ms=host * 1e3,
                        GBps=floor / gpu / 1e9, of_copy=floor / gpu / 1e9 / bench.copy_gbps,
                    )  # fmt: skip
                except Exception as err:
                    row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
                bench.rows.append(row)
                bench.save()
                print(_row_text(row) + (f", host {row['host_ms']:.3f} ms" if "host_ms" in row else ""), flush=True)


def host_section(bench: Bench, shape) -> None:
    """Where a fabnet call's host time goes: cProfile of the CUDA forward, and the device queries."""
    import cProfile
    import io
    import pstats

    from fabnet.ops import checks

    if bench.device.type != "cuda":
        bench.note("host: CUDA only")
        return
    inputs = op_inputs(shape, bench.device, torch.float32, "smooth")
    for name, fn in (
        ("torch.cuda.mem_get_info", lambda: torch.cuda.mem_get_info(bench.device)),
        ("torch.cuda.memory_allocated", lambda: torch.cuda.memory_allocated(bench.device)),
        ("checks._memory_limit", lambda: checks._memory_limit(bench.device)),
        ("fabnet forward, cuda", lambda: ops.warp_blend_l1(*inputs, **OPTIONS, backend="cuda")),
        ("torch.ops.fabnet.warp_blend_l1 (no checks)", lambda: torch.ops.fabnet.warp_blend_l1(
            *inputs, OPTIONS["residual"], OPTIONS["padding_mode"], OPTIONS["align_corners"])),
    ):  # fmt: skip
        with torch.no_grad():
            bench.note(f"host: {name}: {host_time(fn) * 1e6:.0f} us per call")
    profiler = cProfile.Profile()
    with torch.no_grad():
        profiler.enable()
        for _ in range(200):
            ops.warp_blend_l1(*inputs, **OPTIONS, backend="cuda")
        profiler.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(18)
    print(text.getvalue(), flush=True)


def train_section(bench: Bench, size: int, batch: int, k: int, precisions) -> None:
    from benchmarks.bench_train_step import _step_fn

    backends = ["cuda", "triton", "reference"] if bench.device.type == "cuda" else ["cpu", "reference"]
    for precision in precisions:
        for backend in backends:
            case = f"train step S={size} B={batch} K={k} {precision}"
            try:
                step = _step_fn(
                    bench.device.type,
                    size,
                    batch,
                    k,
                    backend,
                    channels_last=bench.device.type == "cuda",
                    bf16=precision == "bf16",
                )
            except Exception as err:
                bench.rows.append(dict(section="train", case=case, provider=backend, error=repr(err)[:300]))
                continue
            row = bench.measure("train", case, backend, step)
            if row is None:
                return
            print(_row_text(row), flush=True)


def parity_section(bench: Bench, shape) -> None:
    """Relative error (‖out - ref‖ / ‖ref‖) of losses and gradients against float64 eager."""
    providers = [p for p in ("cuda", "triton") if bench.device.type == "cuda"] or ["cpu"]
    for dtype_name in ("fp32", "bf16"):
        inputs = op_inputs(shape, bench.device, DTYPES[dtype_name], "smooth", seed=7)
        wide = [t.double().requires_grad_(i > 0) for i, t in enumerate(inputs[:3])] + [inputs[3].double()]
        ref_loss = warp_blend_l1_reference(*wide, **OPTIONS)
        ref_grads = torch.autograd.grad(ref_loss.sum(), wide[1:3])
        for backend in providers:
            leaves = [t.detach().requires_grad_(i in (1, 2)) for i, t in enumerate(inputs)]
            loss = ops.warp_blend_l1(*leaves, **OPTIONS, backend=backend)
            grads = torch.autograd.grad(loss.sum(), leaves[1:3])
            errors = {
                name: float((got.double() - ref).norm() / ref.norm())
                for name, got, ref in zip(("loss", "d_flows", "d_logits"), (loss, *grads), (ref_loss, *ref_grads))
            }
            row = dict(section="parity", case=f"{'x'.join(map(str, shape))} {dtype_name}", provider=backend, **errors)
            bench.rows.append(row)
            bench.save()
            print(f"parity {row['case']} {backend}: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))


def _row_text(row: dict) -> str:
    if "error" in row:
        return f"{row['section']} {row['case']} {row['provider']}: {row['error']}"
    gbps = f" {row['GBps']:.0f} GB/s ({row['of_copy']:.0%} of copy)" if "GBps" in row else ""
    return f"{row['section']} {row['case']} {row['provider']}: {row['median_ms']:.3f} ms{gbps}"


def markdown(doc: dict) -> str:
    """The rows as tables: per case, each provider's median, its speed-up over eager / compiled /
    F.grid_sample / the reference op, GB/s and fraction of copy, peak memory above the inputs."""
    lines = [f"Device: {doc['device']}; copy bandwidth {doc['copy_GBps']:.0f} GB/s (read + write).", ""]
    by_case: dict[tuple, dict] = {}
    for row in doc["rows"]:
        by_case.setdefault((row["section"], row["case"]), {})[row["provider"]] = row
    lines += [
        "| section | case | provider | median ms | min ms | vs eager | vs compiled | GB/s | of copy | peak MiB "
        "| host ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (section, case), rows in by_case.items():
        if section == "parity":
            continue
        base = rows.get("eager") or rows.get("F.grid_sample") or rows.get("reference") or rows.get("cuda atomic")
        compiled = rows.get("compiled")
        for provider, row in rows.items():
            if "error" in row:
                lines.append(f"| {section} | {case} | {provider} | {row['error']} | | | | | | | |")
                continue
            ratio = lambda other, row=row: (  # noqa: E731
                f"{other['median_ms'] / row['median_ms']:.2f}x" if other and "median_ms" in other else "-"
            )
            gbps = f"{row['GBps']:.0f}" if "GBps" in row else "-"
            share = f"{row['of_copy']:.0%}" if "of_copy" in row else "-"
            peak = f"{row['peak_mib']:.0f}" if not math.isnan(row.get("peak_mib", math.nan)) else "-"
            host = f"{row['host_ms']:.3f}" if "host_ms" in row else "-"
            lines.append(
                f"| {section} | {case} | {provider} | {row['median_ms']:.3f} | {row['min_ms']:.3f} | "
                f"{ratio(base)} | {ratio(compiled)} | {gbps} | {share} | {peak} | {host} |"
            )
    parity = [r for r in doc["rows"] if r["section"] == "parity"]
    if parity:
        lines += ["", "| parity vs float64 eager | provider | loss | d_flows | d_logits |", "|---|---|---:|---:|---:|"]
        lines += [
            f"| {r['case']} | {r['provider']} | {r['loss']:.1e} | {r['d_flows']:.1e} | {r['d_logits']:.1e} |"
            for r in parity
        ]
    if doc["notes"]:
        lines += [""] + [f"- {n}" for n in doc["notes"]]
    return "\n".join(lines)


def plan(smoke: bool) -> dict:
    """Shapes per section. The smoke plan runs every code path at sizes a CPU does in seconds."""
    if smoke:
        small = (2, 3, 3, 16, 16)
        return dict(
            op=[("smoke", small, "fp32", "smooth", ["forward", "fwd+bwd", "fwd+bwd+src"], ["forward"])],
            op_more=[("smoke", small, "fp32", "random", ["forward", "fwd+bwd", "fwd+bwd+src"], ["forward"])],
            drop_in=dict(shapes=[(2, 3, 16, 16)], dtypes=["fp32"]),
            deterministic=dict(op_shape=small, sample_shape=(2, 3, 16, 16)),
            train=dict(size=32, batch=2, k=2, precisions=["fp32"]),
            parity=small,
            copy_bytes=16 << 20,
        )
    train = "32x3x3x256x256"
    all_modes = ["forward", "fwd+bwd", "fwd+bwd+src"]
    # torch.compile is asked only where the targets compare with it (the training shape): each
    # new shape, dtype or grad mode is a recompilation of ~10-20 s. Random coordinates reuse the
    # smooth case's graphs (same shapes), so they cost no compilation.
    return dict(
        op=[
            (train, TRAIN_SHAPE, "fp32", "smooth", all_modes, all_modes),
            (train, TRAIN_SHAPE, "bf16", "smooth", all_modes, ["forward", "fwd+bwd"]),
        ],
        op_more=[
            (train, TRAIN_SHAPE, "fp32", "random", all_modes, all_modes),
            (train, TRAIN_SHAPE, "bf16", "random", all_modes, ["forward", "fwd+bwd"]),
            ("8x3x3x128x128", (8, 3, 3, 128, 128), "fp32", "smooth", all_modes, []),
            ("8x2x64x128x128", (8, 2, 64, 128, 128), "fp32", "smooth", all_modes, []),
            ("8x3x3x128x128", (8, 3, 3, 128, 128), "bf16", "smooth", all_modes, []),
            ("8x2x64x128x128", (8, 2, 64, 128, 128), "bf16", "smooth", all_modes, []),
        ],
        drop_in=dict(shapes=[(32, 3, 256, 256), (8, 64, 128, 128)], dtypes=["fp32", "bf16"]),
        deterministic=dict(op_shape=TRAIN_SHAPE, sample_shape=(32, 3, 256, 256)),
        train=dict(size=256, batch=32, k=3, precisions=["fp32", "bf16"]),
        parity=TRAIN_SHAPE,
        copy_bytes=1 << 30,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for bench.json and bench.md")
    parser.add_argument("--deadline", type=float, default=240.0, help="seconds for everything (default 240)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: every code path once")
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["parity", "host", "kernels", "op", "train", "drop_in", "deterministic", "op_more"],
        help="which, in this order (default: the ones the targets need first)",
    )
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device; --smoke runs the CPU plan", file=sys.stderr)
        return 3
    args.out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.out, device, time.monotonic() + args.deadline, repeat_s=0.02 if args.smoke else 0.4)
    shapes = plan(args.smoke)
    bench.copy_gbps = copy_bandwidth(bench, shapes["copy_bytes"])
    print(f"{device_line(device)}; copy {bench.copy_gbps:.0f} GB/s", flush=True)
    sections = {
        "parity": lambda: parity_section(bench, shapes["parity"]),
        "host": lambda: host_section(bench, shapes["parity"]),
        "kernels": lambda: kernels_section(bench, shapes["parity"], ["fp32", "bf16"]),
        "op": lambda: op_section(bench, shapes["op"]),
        "op_more": lambda: op_section(bench, shapes["op_more"]),
        "drop_in": lambda: drop_in_section(bench, **shapes["drop_in"]),
        "deterministic": lambda: deterministic_section(bench, **shapes["deterministic"]),
        "train": lambda: train_section(bench, **shapes["train"]),
    }
    for name in args.sections:
        if bench.left() <= 0:
            bench.note(f"{name}: not run, the deadline of {args.deadline:.0f} s had passed")
            continue
        start = time.monotonic()
        try:
            sections[name]()
        except Exception as err:  # one broken section must not cost the others
            bench.note(f"{name}: stopped by {type(err).__name__}: {str(err)[:300]}")
        print(f"gpu_bench: {name} took {time.monotonic() - start:.0f} s", flush=True)
    doc = json.loads((args.out / "bench.json").read_text())
    (args.out / "bench.md").write_text(markdown(doc) + "\n")
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
