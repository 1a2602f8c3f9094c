"""setup.py imported as a module, and its build helpers (buildtools/): setuptools runs setup.py as
__main__, so importing it builds nothing."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@cache
def toolchain():
    """buildtools/toolchain.py: the torch, compiler and CUDA toolkit checks setup.py runs."""
    import sys

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import buildtools.toolchain

    return buildtools.toolchain


@cache
def setup_script():
    spec = importlib.util.spec_from_file_location("fabnet_setup", REPO / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cxx_standard() -> str:
    """The -std the build uses with the installed torch ("c++17" when torch is absent)."""
    try:
        from torch.utils.cpp_extension import include_paths
    except ImportError:
        return "c++17"
    return setup_script()._required_cxx_standard(include_paths())
