"""What fabnet._C was built for, read from the record setup.py writes beside it.

``fabnet/_build_info.json``: {"torch": "2.14.1+cu130", "cxx_std": "c++20", "cpu_arch": "x86-64-v2"
(the -march of the library), "cpu_level": "x86-64-v2" (the x86-64 level that needs; "" when the
-march is not a level), "cpu_dispatch": ["x86-64-v3", "x86-64-v4"] (the variants chosen at run
time), "cuda": "13.0" or null, "cuda_archs": ["8.0", "9.0+PTX"]}. It is read before the library
is loaded, so that a ``_C`` built for another torch is named as such instead of failing with an
undefined C++ symbol (or, worse, loading against a changed ABI), and one built for a CPU level
this CPU lacks is refused instead of dying of SIGILL at the first op. setup.py loads this file
too (it imports nothing but the standard library).
"""

from __future__ import annotations

import json
import os
import re

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_build_info.json")
REBUILD_COMMAND = "pip install -e ."


def read(path: str = PATH) -> dict | None:
    """The build record, or None when there is none (an extension built by other means)."""
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def torch_mismatch(info: dict | None, torch_version: str) -> str | None:
    """Why a ``_C`` described by ``info`` cannot load beside ``torch_version`` (None: it can)."""
    if info is None or "torch" not in info or info["torch"] == torch_version:
        return None
    return (
        f"fabnet._C was built for torch {info['torch']}, but this interpreter imports torch "
        f"{torch_version}; rebuild it against this torch with `{REBUILD_COMMAND}` in the fabnet "
        "checkout"
    )


def _parse_arch(entry: str) -> tuple[int, int, bool]:
    """ "9.0+PTX" -> (9, 0, True); "8.6" -> (8, 6, False); "sm_90" / "90" are accepted too."""
    text = entry.strip().lower()
    ptx = text.endswith("+ptx")
    digits = re.findall(r"\d+", text.replace("+ptx", ""))
    if len(digits) >= 2:
        return int(digits[0]), int(digits[1]), ptx
    number = digits[0] if digits else "0"
    return int(number[:-1] or 0), int(number[-1]), ptx


def cuda_arch_reason(archs: list[str], capability: tuple[int, int], device: str = "cuda") -> str | None:
    """Why code built for ``archs`` cannot run on a GPU of compute ``capability`` (None: it can).

    A cubin for sm_XY runs on a GPU of the same major version X and minor >= Y; PTX for
    compute_XY is compiled by the driver for any GPU of capability >= X.Y.
    """
    major, minor = capability
    for entry in archs:
        a_major, a_minor, ptx = _parse_arch(entry)
        if a_major == major and a_minor <= minor:
            return None
        if ptx and (a_major, a_minor) <= (major, minor):
            return None
    built = ", ".join(archs) or "no architecture"
    return (
        f"fabnet._C carries CUDA code for {built}, none of which runs on {device} (compute "
        f'capability {major}.{minor}); rebuild with TORCH_CUDA_ARCH_LIST="{major}.{minor}" '
        f"{REBUILD_COMMAND}"
    )


X86_LEVELS = ("x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4")
# The CPU flags (/proc/cpuinfo) each level adds to the one before.
_LEVEL_FLAGS = {
    "x86-64-v2": {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"},
    "x86-64-v3": {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},
    "x86-64-v4": {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
}


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str] | None:
    """The flags of this machine's first CPU (None where they cannot be read: not Linux)."""
    try:
        with open(cpuinfo) as f:
            line = next(line for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return None
    return set(line.split(":", 1)[1].split())


def host_x86_level(flags: set[str] | None = None) -> str:
    """The highest x86-64 level a CPU with ``flags`` runs ("" when the flags are unknown)."""
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return ""
    level = "x86-64"
    for name in X86_LEVELS[1:]:
        if not _LEVEL_FLAGS[name] <= flags:
            break
        level = name
    return level


def cpu_level_mismatch(info: dict | None, flags: set[str] | None = None) -> str | None:
    """Why a ``_C`` described by ``info`` cannot run on this CPU (None: it can, or it cannot be
    told: no record, no level recorded, flags unreadable)."""
    needed = (info or {}).get("cpu_level")
    host = host_x86_level(flags)
    if not needed or not host or needed not in X86_LEVELS:
        return None
    if X86_LEVELS.index(needed) <= X86_LEVELS.index(host):
        return None
    have = flags if flags is not None else cpu_flags() or set()
    levels = X86_LEVELS[X86_LEVELS.index(host) + 1 : X86_LEVELS.index(needed) + 1]
    missing = sorted(set().union(*(_LEVEL_FLAGS[n] for n in levels)) - have)
    return (
        f"fabnet._C was built for {needed} (-march={info.get('cpu_arch')}), which this CPU ({host}) cannot run "
        f"(it lacks {', '.join(missing[:6])}); rebuild it here with `{REBUILD_COMMAND}` (the default build "
        "runs on any x86-64-v2 CPU)"
    )
