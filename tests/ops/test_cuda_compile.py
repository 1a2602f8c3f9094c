"""The CUDA kernels compile for sm_80 and sm_90 without register spills; the binding compiles.

A CPU twin of the GPU tests: ``nvcc -c`` of every csrc/cuda/*.cu with setup.py's flags and
``-Xptxas -v``; the ptxas report is parsed per kernel and architecture, and any spill store or
load fails the test (a spill turns a register access into a local-memory round trip in the inner
loop). The binding (csrc/cuda/warp_blend_binding.cpp) is checked with the host compiler against
torch's headers when they include the CUDA ones. Skipped only where nvcc is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ops.setup_script import cxx_standard

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "csrc"
CU_FILES = sorted((CSRC / "cuda").glob("*.cu"))
ARCHS = ("80", "90")
# setup.py's nvcc flags for the extension, plus the ones torch's BuildExtension adds to every
# CUDA file (no implicit half / bfloat16 conversions or operators, relaxed constexpr).
CXX_STD = cxx_standard()  # what torch's headers require: C++20 from torch 2.14 on
NVCC_FLAGS = ["-O3", f"-std={CXX_STD}", "--use_fast_math", "-lineinfo"]
try:
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    NVCC_FLAGS += list(COMMON_NVCC_FLAGS)
except ImportError:  # an older torch: its build adds what it has, the kernels need none of it
    pass
# Kernels the launchers need; each must appear in the report for every architecture.
EXPECTED_KERNELS = (
    "warp_blend_forward_cuda_kernel",
    "warp_blend_backward_cuda_kernel",
    "warp_blend_l1_finalize_cuda_kernel",
)


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and Path(home, "bin", "nvcc").exists():
            return str(Path(home, "bin", "nvcc"))
    return None


NVCC = _nvcc()
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found (install the CUDA toolkit)")

_ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>sm_\d+)'")
_SPILL = re.compile(
    r"(?P<stack>\d+) bytes stack frame, (?P<st>\d+) bytes spill stores, "
    r"(?P<ld>\d+) bytes spill loads"
)
_REGS = re.compile(r"Used (?P<regs>\d+) registers")


def parse_ptxas(report: str) -> list[dict]:
    """One dict per (kernel, arch): name, arch, registers, stack, spill_stores, spill_loads."""
    kernels: list[dict] = []
    current: dict | None = None
    for line in report.splitlines():
        if m := _ENTRY.search(line):
            current = {"name": m["name"], "arch": m["arch"]}
            kernels.append(current)
        elif current is not None and (m := _SPILL.search(line)):
            current.update(stack=int(m["stack"]), spill_stores=int(m["st"]), spill_loads=int(m["ld"]))
        elif current is not None and (m := _REGS.search(line)):
            current["registers"] = int(m["regs"])
    return kernels


def _demangle(names: list[str]) -> list[str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt:
        return names
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True)
    lines = out.stdout.splitlines()
    return lines if len(lines) == len(names) else names


@pytest.fixture(scope="module")
def ptxas_report(tmp_path_factory) -> dict[str, list[dict]]:
    """Compiles every .cu once for both architectures; {file name: parsed kernels}."""
    assert CU_FILES, "no csrc/cuda/*.cu files"
    out_dir = tmp_path_factory.mktemp("nvcc")
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    reports = {}
    for cu in CU_FILES:
        cmd = [
            NVCC,
            "-c",
            str(cu),
            "-o",
            str(out_dir / (cu.stem + ".o")),
            *NVCC_FLAGS,
            *gencode,
            "-Xptxas",
            "-v",
            f"-I{CSRC}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr[-6000:]}"
        kernels = parse_ptxas(proc.stderr)
        for k, pretty in zip(kernels, _demangle([k["name"] for k in kernels])):
            k["pretty"] = pretty
        reports[cu.name] = kernels
    return reports


def _table(kernels: list[dict]) -> str:
    return "\n".join(
        f"{k['arch']} {k.get('registers', '?'):>4} regs  spill st/ld "
        f"{k.get('spill_stores', '?')}/{k.get('spill_loads', '?')}  {k['pretty']}"
        for k in kernels
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_kernels_compile_without_spills(ptxas_report, arch):
    kernels = [k for ks in ptxas_report.values() for k in ks if k["arch"] == f"sm_{arch}"]
    print(f"\nptxas report, sm_{arch}:\n{_table(kernels)}")
    for name in EXPECTED_KERNELS:
        assert any(name in k["pretty"] or name in k["name"] for k in kernels), (
            f"{name} missing from the sm_{arch} report:\n{_table(kernels)}"
        )
    incomplete = [k for k in kernels if "registers" not in k or "spill_stores" not in k]
    assert not incomplete, f"unparsed ptxas entries:\n{_table(incomplete)}"
    spilling = [k for k in kernels if k["spill_stores"] or k["spill_loads"]]
    assert not spilling, f"register spills on sm_{arch}:\n{_table(spilling)}"


def test_parse_ptxas_reads_spills():
    """The parser itself: a spilling entry is reported as spilling (the check above can fail)."""
    report = (
        "ptxas info    : Compiling entry function '_Z1kv' for 'sm_80'\n"
        "ptxas info    : Function properties for _Z1kv\n"
        "    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
        "ptxas info    : Used 48 registers, used 0 barriers, 656 bytes cmem[0]\n"
    )
    (k,) = parse_ptxas(report)
    assert (k["arch"], k["registers"], k["spill_stores"], k["spill_loads"]) == ("sm_80", 48, 4, 12)


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
