"""What setup.py builds with: the torch to compile against, the host compiler, the CUDA toolkit.

Each check ends in one BuildError line that says what to do, for the known causes of failure (no
torch where the build runs, a compiler too old for torch's C++ standard, a toolkit that does not
match torch's CUDA). Plain Python: setup.py loads it before anything is built.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


class BuildError(SystemExit):
    """A known reason the extension cannot be built: one message, no traceback."""

    def __init__(self, message: str):
        super().__init__(f"\nfabnet setup: error: {message}\n")


def _log(message: str) -> None:
    print(f"fabnet setup: {message}", file=sys.stderr, flush=True)


# --- the torch to build against -------------------------------------------------------------------


def _target_torch_site() -> str | None:
    """The folder holding the torch that ``sys.executable`` imports outside pip's build environment.

    pip runs the build with PYTHONPATH pointing at its temporary environment and PYTHONNOUSERSITE
    set; a child interpreter without them sees the environment the package is installed into.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    code = "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))"
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = proc.stdout.strip().splitlines()
    return lines[-1] if proc.returncode == 0 and lines else None


def _in_pip_build_environment() -> bool:
    return "pip-build-env" in os.environ.get("PYTHONPATH", "")


def _in_isolated_venv() -> bool:
    """Whether this runs in `python -m build`'s own temporary venv (build-env-XXXX), whose python
    cannot see the environment the wheel is for: no torch to compile against there."""
    return os.path.basename(sys.prefix).startswith("build-env-")


def _rerun_advice() -> str:
    """What to run instead, for the frontend that is running this build."""
    if _in_isolated_venv():
        return (
            "`python -m build` builds in a venv of its own, without your torch: run it as `python -m "
            "build --no-isolation` in the environment that has torch, setuptools, wheel and ninja"
        )
    if _in_pip_build_environment():
        return "build with `pip install --no-build-isolation .` (or -e .)"
    return "then run `pip install -e .` again"


def _import_target_torch():
    """torch as the installed package will import it; BuildError when there is none."""
    site = _target_torch_site() if _in_pip_build_environment() else None
    if site is not None and site not in sys.path:
        # Appended, not prepended: setuptools and ninja stay those of the build environment.
        sys.path.append(site)
    try:
        import torch
    except ImportError as err:
        raise BuildError(
            f"torch is not installed for {sys.executable} ({err}). fabnet's kernels are compiled "
            "against the torch that will import them: install torch first (e.g. `pip install "
            f"torch`); {_rerun_advice()}; or set FABNET_NO_EXTENSION=1 to install without kernels "
            "(fabnet.ops then runs the PyTorch reference)."
        ) from None
    if site is not None and not os.path.realpath(torch.__file__).startswith(os.path.realpath(site)):
        raise BuildError(
            f"the build environment's torch ({torch.__file__}) is not the one {sys.executable} "
            f"imports (in {site}); build with `pip install --no-build-isolation .` (or -e .)"
        )
    return torch


def _required_cxx_standard(include_dirs: list[str]) -> str:
    """The C++ standard torch's headers demand (ATen.h: `__cplusplus < 202002L` is C++20)."""
    for folder in include_dirs:
        header = os.path.join(folder, "ATen", "ATen.h")
        if os.path.exists(header):
            with open(header, encoding="utf-8", errors="replace") as f:
                m = re.search(r"__cplusplus\s*<\s*(\d{6})L", f.read())
            if m:
                year = int(m.group(1)) // 100
                return f"c++{year % 100:02d}"
    return "c++17"  # torch 2.4 - 2.13 require C++17 and say so the same way


# --- the host compiler ----------------------------------------------------------------------------


def _check_host_compiler(std: str, torch_version: str) -> str:
    """The C++ compiler, checked to compile ``std``; BuildError naming the fix otherwise."""
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx.split()[0]) is None:
        raise BuildError(
            f"no C++ compiler found ({cxx!r} is not on PATH): install one (Debian / "
            "Ubuntu: `apt-get install g++`) or set CXX to its path"
        )
    with tempfile.TemporaryDirectory() as tmp:
        probe = os.path.join(tmp, "probe.cpp")
        with open(probe, "w") as f:
            f.write("#include <vector>\nint main() { return std::vector<int>{}.size(); }\n")
        proc = subprocess.run([*cxx.split(), f"-std={std}", "-fsyntax-only", probe], capture_output=True, text=True)
    if proc.returncode != 0:
        version = subprocess.run([*cxx.split(), "--version"], capture_output=True, text=True)
        first = (version.stdout.splitlines() or ["unknown version"])[0]
        raise BuildError(
            f"the C++ compiler {cxx!r} ({first}) cannot compile -std={std}, which torch "
            f"{torch_version}'s headers require: install a newer one (g++ >= 10 for "
            "C++20) and point CXX at it"
        )
    return cxx


# --- the CUDA toolkit -----------------------------------------------------------------------------


def _has_cuda_headers(home: str) -> bool:
    return os.path.isfile(os.path.join(home, "include", "cuda_runtime.h"))


def _cuda_home_candidates() -> list[str]:
    """Where a toolkit may be, in order: nvcc's own folder, then the usual install places."""
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        # The nvcc on PATH may be a wrapper script (/usr/local/bin/nvcc): its folder's parent is a
        # toolkit only if it has the headers, which the caller checks.
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    versioned = glob.glob("/usr/local/cuda-*")
    candidates += sorted(versioned, key=lambda p: [int(x) for x in re.findall(r"\d+", p)], reverse=True)
    candidates.append("/opt/cuda")
    return list(dict.fromkeys(candidates))


def _find_cuda_home() -> tuple[str | None, str]:
    """(toolkit folder or None, what was looked at). CUDA_HOME / CUDA_PATH win when set."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            home = os.environ[var]
            if not _has_cuda_headers(home):
                raise BuildError(
                    f"{var}={home} has no include/cuda_runtime.h: point {var} at a CUDA "
                    "toolkit (the folder with bin/nvcc and include/), or unset it"
                )
            return home, f"{var}={home}"
    candidates = _cuda_home_candidates()
    for home in candidates:
        if _has_cuda_headers(home) and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return home, home
    return None, ", ".join(candidates)


def _nvcc_version(home: str) -> str | None:
    try:
        out = subprocess.run(
            [os.path.join(home, "bin", "nvcc"), "--version"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def _cuda_plan(torch) -> tuple[str | None, str]:
    """(CUDA_HOME to build the CUDA kernels with, or None; why)."""
    force = os.environ.get("FABNET_FORCE_CUDA")
    if not glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")):
        return None, "no CUDA sources"
    if force == "0":
        return None, "FABNET_FORCE_CUDA=0"
    if torch.version.cuda is None:
        if force == "1":
            raise BuildError(
                f"FABNET_FORCE_CUDA=1, but torch {torch.__version__} is a CPU build: "
                "install a CUDA build of torch first"
            )
        return None, f"torch {torch.__version__} is a CPU build"
    home, looked = _find_cuda_home()
    if home is None:
        why = (
            f"torch has CUDA {torch.version.cuda}, but no CUDA toolkit with include/cuda_runtime.h "
            f"and bin/nvcc was found (looked in {looked}); set CUDA_HOME to build the CUDA kernels"
        )
        if force == "1":
            raise BuildError(why)
        return None, why
    nvcc = _nvcc_version(home)
    if nvcc is None or nvcc.split(".")[0] != torch.version.cuda.split(".")[0]:
        why = (
            f"nvcc {nvcc or '(no version)'} in {home} does not match torch's CUDA "
            f"{torch.version.cuda} (the major versions must agree); set CUDA_HOME to a CUDA "
            f"{torch.version.cuda.split('.')[0]}.x toolkit"
        )
        if force == "1":
            raise BuildError(why)
        return None, why
    return home, f"CUDA_HOME={home}, nvcc {nvcc}, torch CUDA {torch.version.cuda}"


def _arch_summary(arch_list: str) -> str:
    archs = [a.strip() for a in re.split(r"[;\s]+", arch_list) if a.strip()]
    sass = ", ".join("sm_" + a.replace("+PTX", "").replace(".", "") for a in archs)
    ptx = [a.replace("+PTX", "").replace(".", "") for a in archs if a.endswith("+PTX")]
    return sass + (f" + PTX compute_{', compute_'.join(ptx)}" if ptx else "")
