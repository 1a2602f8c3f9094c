"""The CPU target of the build: the baseline x86-64 level and the variants chosen at run time."""

from __future__ import annotations

import importlib.util
import os
import platform

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The portable default: SSE4.2 and POPCNT, in every x86-64 CPU since ~2009 (Nehalem, Bulldozer).
DEFAULT_CPU_ARCH = "x86-64-v2"
X86_LEVELS = ("x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4")


def _baseline_level(cpu_arch: str) -> str:
    """The x86-64 level a -march value requires ("" when it is not one of the levels: the build
    records no level, and fabnet.ops trusts the user who chose it)."""
    if cpu_arch == "native":
        return _host_x86_level()
    return cpu_arch if cpu_arch in X86_LEVELS else ""


def _load_build_info_module():
    """fabnet/ops/build_info.py, loaded by path: the build may not import fabnet (its __init__ would
    look for the very library being built), and that file needs only the standard library."""

    spec = importlib.util.spec_from_file_location(
        "_fabnet_build_info", os.path.join(ROOT, "fabnet", "ops", "build_info.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _host_x86_level() -> str:
    """The highest x86-64 micro-architecture level this machine supports ("" off x86-64)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return ""
    return _load_build_info_module().host_x86_level() or "x86-64-v2"


def _cpu_summary(cpu_arch: str, dispatch: list[str]) -> str:
    variants = f", with {' and '.join(dispatch)} variants chosen at run time" if dispatch else ""
    return f"-march={cpu_arch or 'default'}{variants}"
