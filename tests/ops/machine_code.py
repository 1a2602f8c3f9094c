"""Reads the CUDA kernels' machine code on a machine without a GPU.

Each csrc/cuda/*.cu file is compiled by nvcc to one cubin per architecture with setup.py's flags;
``cuobjdump -res-usage`` gives every kernel's registers, stack and shared memory, ``cuobjdump
-sass`` its instructions. From those this module derives what a GPU would pay for: theoretical
occupancy, whether stores are 128 bits wide, whether an index is divided in 64 bits (a software
routine of ~70 instructions: ``I2F.U64.RP``), whether loads take the read-only path.

    python -m tests.ops.machine_code            # markdown table for sm_80 and sm_90

tests/ops/test_cuda_compile.py asserts on the same numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "csrc"
CU_FILES = tuple(sorted((CSRC / "cuda").glob("*.cu")))
ARCHS = ("80", "90")

# Per-SM limits of sm_80 (A100) and sm_90 (H100/H200), from the CUDA occupancy calculator's tables.
MAX_WARPS_PER_SM = {"80": 64, "90": 64}
MAX_BLOCKS_PER_SM = {"80": 32, "90": 32}
REGISTERS_PER_SM = 65536
REGISTER_UNIT_PER_WARP = 256  # registers are granted to a warp in units of 256
SHARED_PER_SM = {"80": 164 * 1024, "90": 228 * 1024}
SHARED_RESERVED_PER_BLOCK = 1024
# Every kernel is launched with kThreads (csrc/cuda/device_functions.cuh) threads a block.
THREADS_PER_BLOCK = 256


def nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and Path(home, "bin", "nvcc").exists():
            return str(Path(home, "bin", "nvcc"))
    return None


def cuobjdump() -> str | None:
    """The toolkit's cuobjdump, else the one triton's wheel ships."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import triton
    except ImportError:
        return None
    shipped = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(shipped) if shipped.exists() else None


def nvcc_flags() -> list[str]:
    """setup.py's nvcc flags, plus the ones torch's BuildExtension adds to every CUDA file."""
    from tests.ops.setup_script import cxx_standard

    flags = ["-O3", f"-std={cxx_standard()}", "--use_fast_math", "-lineinfo"]
    try:
        from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

        flags += list(COMMON_NVCC_FLAGS)
    except ImportError:
        pass
    return flags


@dataclasses.dataclass
class Kernel:
    """One kernel of one cubin, as cuobjdump reports it."""

    arch: str  # "80" or "90"
    mangled: str
    name: str  # demangled
    registers: int
    stack: int  # bytes of local memory per thread (spills, local arrays)
    shared: int  # bytes of static shared memory per block
    threads: int  # block size the launchers use
    sass: str

    def count(self, opcode: str) -> int:
        """Instructions whose opcode starts with `opcode` (``STG.E.128`` matches ``STG.E.128.STRONG``)."""
        return len(re.findall(rf"\b{re.escape(opcode)}(?=[\s.;])", self.sass))

    @property
    def stores_128(self) -> int:
        return self.count("STG.E.128")

    @property
    def stores_64(self) -> int:
        return self.count("STG.E.64")

    @property
    def stores_narrow(self) -> int:
        """Stores of 32 bits or less."""
        return len(re.findall(r"\bSTG\.E(?:\.U16|\.U8|\.S16|\.S8)?(?=\s)", self.sass))

    @property
    def exponentials(self) -> int:
        return self.count("MUFU.EX2")

    @property
    def divides_64(self) -> int:
        """64-bit integer divisions, which nvcc expands into a routine starting with I2F.U64.RP."""
        return self.count("I2F.U64.RP")

    @property
    def wide_multiplies(self) -> int:
        return self.count("IMAD.WIDE")

    @property
    def readonly_loads(self) -> int:
        return len(re.findall(r"\bLDG\.E[.\w]*\.CONSTANT\b", self.sass))

    @property
    def plain_loads(self) -> int:
        return len(re.findall(r"\bLDG\.E(?![.\w]*\.CONSTANT)[.\w]*\s", self.sass))

    @property
    def occupancy(self) -> float:
        """Theoretical occupancy: resident warps per SM over the maximum, at `threads` per block."""
        warps_per_block = -(-self.threads // 32)
        per_warp = -(-max(self.registers, 1) * 32 // REGISTER_UNIT_PER_WARP) * REGISTER_UNIT_PER_WARP
        by_registers = REGISTERS_PER_SM // (per_warp * warps_per_block)
        by_shared = SHARED_PER_SM[self.arch] // (self.shared + SHARED_RESERVED_PER_BLOCK)
        by_warps = MAX_WARPS_PER_SM[self.arch] // warps_per_block
        blocks = min(by_registers, by_shared, by_warps, MAX_BLOCKS_PER_SM[self.arch])
        return blocks * warps_per_block / MAX_WARPS_PER_SM[self.arch]


_RES = re.compile(
    r"Function (?P<mangled>\S+):\s*\n\s*REG:(?P<reg>\d+) STACK:(?P<stack>\d+) SHARED:(?P<shared>\d+)",
)
_SASS_FUNCTION = re.compile(r"^\s*Function : (?P<mangled>\S+)\s*$", re.M)


def _demangle(names: list[str]) -> list[str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return names
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True)
    lines = out.stdout.splitlines()
    return lines if len(lines) == len(names) else names


def parse_res_usage(text: str) -> dict[str, tuple[int, int, int]]:
    """{mangled name: (registers, stack bytes, shared bytes)} from ``cuobjdump -res-usage``."""
    return {m["mangled"]: (int(m["reg"]), int(m["stack"]), int(m["shared"])) for m in _RES.finditer(text)}


def split_sass(text: str) -> dict[str, str]:
    """{mangled name: its SASS} from ``cuobjdump -sass``."""
    marks = list(_SASS_FUNCTION.finditer(text))
    return {
        m["mangled"]: text[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        for i, m in enumerate(marks)
    }


def compile_kernels(cu: Path, arch: str, out_dir: Path, *, extra_flags: tuple[str, ...] = ()) -> list[Kernel]:
    """nvcc -cubin for one architecture, read back with cuobjdump."""
    compiler, dump = nvcc(), cuobjdump()
    if compiler is None or dump is None:
        raise RuntimeError(f"needs nvcc ({compiler}) and cuobjdump ({dump})")
    cubin = out_dir / f"{cu.stem}.sm_{arch}.cubin"
    cmd = [
        compiler,
        "-cubin",
        str(cu),
        "-o",
        str(cubin),
        *nvcc_flags(),
        f"-gencode=arch=compute_{arch},code=sm_{arch}",
        f"-I{CSRC}",
        *extra_flags,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-6000:]}")
    res = subprocess.run([dump, "-res-usage", str(cubin)], capture_output=True, text=True, check=True).stdout
    sass = subprocess.run([dump, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    usage, bodies = parse_res_usage(res), split_sass(sass)
    mangled = sorted(usage)
    return [
        Kernel(arch, m, pretty, *usage[m], THREADS_PER_BLOCK, bodies.get(m, ""))
        for m, pretty in zip(mangled, _demangle(mangled))
    ]


@functools.cache
def all_kernels() -> tuple[Kernel, ...]:
    """Every kernel of every csrc/cuda/*.cu for every architecture (compiled once per process)."""
    jobs = [(cu, arch) for cu in CU_FILES for arch in ARCHS]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = pool.map(lambda job: compile_kernels(job[0], job[1], Path(tmp)), jobs)
        return tuple(k for kernels in results for k in kernels)


def short_name(name: str) -> str:
    """`fabnet::cuda::(anonymous namespace)::forward_kernel<float, 4, true, int>(...)` -> the template."""
    name = re.sub(r"\(.*$", "", name.replace("(anonymous namespace)::", ""))
    name = re.sub(r"^void |fabnet::cuda::|_GLOBAL__N__\w+::", "", name)
    name = name.replace("__nv_bfloat16", "bf16").replace("__half", "half")
    return name.replace("long", "int64").replace("int,", "int32,").replace("int>", "int32>")


def markdown(kernels: tuple[Kernel, ...]) -> str:
    lines = [
        "| arch | kernel | registers | stack B | occupancy | STG.128 | STG.64 | narrower STG "
        "| 64-bit divides | IMAD.WIDE | MUFU.EX2 | read-only LDG | other LDG |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in sorted(kernels, key=lambda k: (k.arch, short_name(k.name))):
        lines.append(
            f"| sm_{k.arch} | `{short_name(k.name)}` | {k.registers} | {k.stack} | {k.occupancy:.0%} "
            f"| {k.stores_128} | {k.stores_64} | {k.stores_narrow} | {k.divides_64} | {k.wide_multiplies} "
            f"| {k.exponentials} | {k.readonly_loads} | {k.plain_loads} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(all_kernels()))
    sys.exit(0)
