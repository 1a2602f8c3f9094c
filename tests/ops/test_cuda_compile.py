"""The CUDA kernels' machine code, read on a machine without a GPU.

Every csrc/cuda/*.cu is compiled by nvcc for sm_80 and sm_90 with setup.py's flags and read back
with cuobjdump (tests/ops/machine_code.py): what a GPU would pay for is asserted here, so a change
that costs an H100 occupancy, spills, or splits a packed store fails on a CPU machine. The
budgets, with the reasons behind them, are in docs/perf/cuda-kernels.md. The binding
(csrc/cuda/warp_blend_binding.cpp) is checked with the host compiler against torch's headers.
Skipped only where nvcc or cuobjdump is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ops import machine_code as mc
from tests.ops.setup_script import cxx_standard

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "csrc"
CXX_STD = cxx_standard()  # what torch's headers require: C++20 from torch 2.14 on
NVCC = mc.nvcc()
pytestmark = pytest.mark.skipif(
    NVCC is None or mc.cuobjdump() is None, reason="needs nvcc (CUDA toolkit) and cuobjdump (toolkit or triton)"
)

# Kernels the launchers need; each must be in the cubins of every architecture.
EXPECTED_KERNELS = (
    "warp_blend_forward_cuda_kernel",
    "warp_blend_backward_cuda_kernel",
    "warp_blend_l1_finalize_cuda_kernel",
)
# The kernels FAb-Net trains with (fp32 and half types, 32-bit offsets) get at least 50 %
# occupancy: 4 resident blocks of 256 threads, at most 64 registers a thread.
REGISTER_BUDGET = 64


@pytest.fixture(scope="module")
def kernels() -> tuple[mc.Kernel, ...]:
    return mc.all_kernels()


def _table(kernels) -> str:
    return mc.markdown(tuple(kernels))


def _select(kernels, arch, pattern):
    chosen = [k for k in kernels if k.arch == arch and re.search(pattern, mc.short_name(k.name))]
    assert chosen, f"no sm_{arch} kernel matches {pattern!r}:\n{_table(k for k in kernels if k.arch == arch)}"
    return chosen


@pytest.mark.parametrize("arch", mc.ARCHS)
def test_every_kernel_is_built(kernels, arch):
    names = [k.name for k in kernels if k.arch == arch]
    for name in EXPECTED_KERNELS:
        assert any(name in n for n in names), f"{name} missing for sm_{arch}: {names}"


@pytest.mark.parametrize("arch", mc.ARCHS)
def test_no_kernel_uses_local_memory(kernels, arch):
    """No spills (nor local arrays): a stack frame turns register accesses into memory round trips."""
    spilling = [k for k in kernels if k.arch == arch and k.stack]
    assert not spilling, f"local memory on sm_{arch}:\n{_table(spilling)}"


@pytest.mark.parametrize("arch", mc.ARCHS)
def test_training_kernels_reach_half_occupancy(kernels, arch):
    chosen = _select(kernels, arch, r"(forward|backward)_cuda_kernel<(float|half|bf16), .*int32>")
    over = [k for k in chosen if k.registers > REGISTER_BUDGET or k.occupancy < 0.5]
    assert not over, f"over {REGISTER_BUDGET} registers or under 50 % occupancy on sm_{arch}:\n{_table(over)}"


@pytest.mark.parametrize("arch", mc.ARCHS)
def test_packed_blend_stores_are_128_bits(kernels, arch):
    """4 floats (2 doubles) of the blend leave in one STG.E.128; half types in one STG.E.64."""
    cases = (
        (r"forward_cuda_kernel<(float, 4|double, 2), false", "128"),
        (r"forward_cuda_kernel<(half|bf16), 4, false", "64"),
    )
    for pattern, wide in cases:
        for k in _select(kernels, arch, pattern):
            packed = k.stores_128 if wide == "128" else k.stores_64
            assert packed > 0 and k.stores_narrow == 0, f"unpacked blend stores:\n{_table([k])}"


@pytest.mark.parametrize("arch", mc.ARCHS)
def test_32_bit_index_kernels_divide_in_32_bits(kernels, arch):
    """Row and column come from a multiply-high, never the 64-bit division routine."""
    offenders = [k for k in _select(kernels, arch, r"int32>") if k.divides_64]
    assert not offenders, f"64-bit division in 32-bit-index kernels:\n{_table(offenders)}"
    # The 64-bit kernels do divide in 64 bits: the count above can see one.
    assert all(k.divides_64 for k in _select(kernels, arch, r"(forward|backward)_cuda_kernel<.*int64>"))


@pytest.mark.parametrize("arch", mc.ARCHS)
def test_backward_reads_inputs_through_the_read_only_cache(kernels, arch):
    """Inputs load as LDG.E.CONSTANT; the only other loads re-read the thread's own flow and logit
    gradients for channel tiles after the first (3 per source)."""
    for k in _select(kernels, arch, r"backward_cuda_kernel<"):
        assert k.readonly_loads > 0 and k.plain_loads <= 3, f"plain loads in the backward:\n{_table([k])}"


@pytest.mark.parametrize("arch", mc.ARCHS)
def test_backward_exponentiates_each_logit_once(kernels, arch):
    """Softmax weights are cached per pixel: MUFU.EX2 sites are the cache fill and the fallback for
    more than 8 sources, not one per pass and channel tile (60 in the float kernel before)."""
    over = [k for k in _select(kernels, arch, r"backward_cuda_kernel<(float|half|bf16)") if k.exponentials > 8]
    assert not over, f"exponentials recomputed in the backward:\n{_table(over)}"


@pytest.mark.parametrize("arch", mc.ARCHS)
def test_ptx_is_emitted_for_newer_gpus(tmp_path, arch):
    """setup.py ships PTX for the newest architecture so later GPUs can JIT it: the kernels lower to it."""
    for cu in mc.CU_FILES:
        ptx = tmp_path / f"{cu.stem}.ptx"
        cmd = [NVCC, "-ptx", str(cu), "-o", str(ptx), *mc.nvcc_flags(), f"-arch=compute_{arch}", f"-I{CSRC}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert ".entry" in ptx.read_text(), f"{cu.name}: no kernel entry in the PTX"


def test_readers_see_what_they_count():
    """The parsers themselves, on cuobjdump's formats: a count that cannot be non-zero proves nothing."""
    res = "Resource usage:\n Function _Z1kv:\n  REG:72 STACK:8 SHARED:32 LOCAL:0 CONSTANT[0]:600 TEXTURE:0\n"
    assert mc.parse_res_usage(res) == {"_Z1kv": (72, 8, 32)}
    sass = (
        "\t\tFunction : _Z1kv\n"
        "        /*0010*/                   LDG.E.128.CONSTANT R4, desc[UR4][R2.64] ;\n"
        "        /*0020*/                   LDG.E R6, desc[UR4][R2.64] ;\n"
        "        /*0030*/                   I2F.U64.RP R8, R6 ;\n"
        "        /*0040*/                   STG.E.128 desc[UR4][R2.64], R4 ;\n"
        "        /*0050*/                   STG.E desc[UR4][R2.64], R4 ;\n"
        "        /*0060*/                   MUFU.EX2 R4, R4 ;\n"
    )
    body = mc.split_sass(sass)["_Z1kv"]
    k = mc.Kernel("90", "_Z1kv", "k<float, 4, false, int32>", 72, 8, 32, 256, body)
    assert (k.readonly_loads, k.plain_loads, k.divides_64, k.stores_128, k.stores_narrow, k.exponentials) == (
        1,
        1,
        1,
        1,
        1,
        1,
    )
    assert k.occupancy == pytest.approx(24 / 64)  # 72 registers: 3 blocks of 8 warps


def _torch_include() -> Path | None:
    try:
        from torch.utils.cpp_extension import include_paths
    except ImportError:
        return None
    for p in include_paths():
        if Path(p, "c10", "cuda", "CUDAGuard.h").exists():
            return Path(p)
    return None


def _cuda_includes(tmp_path) -> list[str]:
    """The include flags nvcc itself uses (nvcc may be a wrapper script outside the toolkit)."""
    empty = tmp_path / "empty.cu"
    empty.write_text("")
    proc = subprocess.run(
        [NVCC, "--dryrun", "-c", str(empty), "-o", str(tmp_path / "empty.o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    flags = []
    for line in proc.stderr.splitlines():
        if m := re.search(r'\bINCLUDES="([^"]*)"', line):
            flags += [f for f in m.group(1).split() if f.startswith("-I")]
    return flags


def test_binding_compiles_against_torch_headers(tmp_path):
    """Host-compiler syntax check of the binding (torch's CPU wheels ship the c10/cuda headers)."""
    from torch.utils.cpp_extension import include_paths

    if _torch_include() is None:
        pytest.skip("this torch ships no c10/cuda headers")
    cuda_includes = _cuda_includes(tmp_path)
    if not any(Path(f[2:], "cuda_runtime.h").exists() for f in cuda_includes):
        pytest.skip(f"cuda_runtime.h not found in nvcc's include paths {cuda_includes}")
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no host C++ compiler")
    # The CPU wheel lacks the generated c10/cuda/impl/cuda_cmake_macros.h; on Linux it only
    # defines C10_CUDA_BUILD_SHARED_LIBS, which matters for Windows exports.
    cmd = [
        cxx,
        "-fsyntax-only",
        f"-std={CXX_STD}",
        "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",
        "-DFABNET_WITH_CUDA=1",
        *(f"-I{p}" for p in include_paths()),
        *cuda_includes,
        f"-I{CSRC}",
        str(CSRC / "cuda" / "warp_blend_binding.cpp"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr[-6000:]}"
