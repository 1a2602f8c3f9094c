"""What fabnet._C was built for, read from the record setup.py writes beside it.

``fabnet/_build_info.json``: {"torch": "2.14.1+cu130", "cxx_std": "c++20", "cpu_arch": "x86-64-v4",
"cuda": "13.0" or null, "cuda_archs": ["8.0", "9.0+PTX"]}. It is read before the library is
loaded, so that a ``_C`` built for another torch is named as such instead of failing with an
undefined C++ symbol (or, worse, loading against a changed ABI).
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
