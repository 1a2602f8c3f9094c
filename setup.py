"""Builds fabnet and its extension fabnet._C against the torch of the environment it installs into.

    pip install -e .                       # or `pip install .`; both work with build isolation
    pip install --no-build-isolation -e .  # the same, without pip's temporary build environment

The C++ CPU kernels are always built. The CUDA kernels (csrc/cuda/*.cu) are built when that torch
is a CUDA build and a CUDA toolkit of the same major version is found. Knobs (environment):

    FABNET_FORCE_CUDA=1    build the CUDA kernels or fail saying why; =0 skips them
    TORCH_CUDA_ARCH_LIST   GPU architectures (default "8.0;9.0+PTX": A100, H100, PTX for newer)
    CUDA_HOME              the CUDA toolkit (default: the first of nvcc's own folder,
                           /usr/local/cuda, /usr/local/cuda-*, /opt/cuda with include/cuda_runtime.h)
    FABNET_CPU_ARCH        -march of the build's baseline (default x86-64-v2, which any x86-64 CPU
                           of the last 15 years runs; the kernels are also compiled for x86-64-v3
                           and x86-64-v4 and chosen at run time); `native` or `x86-64-v4` opts in
                           to a library that runs only on CPUs like this one
    FABNET_NO_EXTENSION=1  no extension: fabnet.ops runs the PyTorch reference
    CXX                    the host C++ compiler (default c++)

Under pip's build isolation the build environment holds no torch (pyproject.toml does not ask
for one): the extension would otherwise be compiled against whatever torch pip downloads there,
not the one the environment imports. The torch of the interpreter pip runs for is found and
used instead. A known cause of failure (no compiler, a compiler older than torch's headers need,
no torch) stops the build with one line that says what to do.
"""

import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"
BUILD_INFO = "_build_info.json"


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
    import importlib.util

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


def _cpu_summary(cpu_arch: str, dispatch: list[str]) -> str:
    variants = f", with {' and '.join(dispatch)} variants chosen at run time" if dispatch else ""
    return f"-march={cpu_arch or 'default'}{variants}"


# --- the extension --------------------------------------------------------------------------------


def _extensions():
    if os.environ.get("FABNET_NO_EXTENSION") == "1":
        _log("FABNET_NO_EXTENSION=1: building no extension (fabnet.ops runs the PyTorch reference)")
        return [], {}
    torch = _import_target_torch()
    from torch.utils.cpp_extension import include_paths

    std = _required_cxx_standard(include_paths())
    _check_host_compiler(std, torch.__version__)
    cuda_home, cuda_why = _cuda_plan(torch)
    if cuda_home is not None:
        # Before cpp_extension is imported: it reads CUDA_HOME once, at import.
        os.environ["CUDA_HOME"] = cuda_home
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
    from torch.utils import cpp_extension

    if cuda_home is not None:
        cpp_extension.CUDA_HOME = cuda_home

    # The CPU kernel is written as `omp simd` loops over blocks of pixels, so the tap gathers
    # become vector gathers; how wide depends on the target. The library itself targets a
    # portable baseline (a wheel or an image built on an AVX-512 host must not die of SIGILL on an
    # AVX2 one), and the kernels are compiled twice more, for x86-64-v3 and x86-64-v4, and chosen
    # at run time (csrc/cpu/isa_*.cpp, warp_blend.cpp). -fno-trapping-math lets gcc if-convert
    # float compares (no code here reads FP exception flags). -g0: no debug info, 6.8 MB of the
    # library's 7.3 MB with it.
    cxx_flags = ["-O3", f"-std={std}", "-fopenmp", "-fno-trapping-math", "-g0"]
    on_x86 = platform.machine() in ("x86_64", "AMD64")
    cpu_arch = os.environ.get("FABNET_CPU_ARCH", DEFAULT_CPU_ARCH if on_x86 else "")
    level = _baseline_level(cpu_arch) if on_x86 else ""
    macros = [("FABNET_CPU_BASELINE", f'"{cpu_arch or "default"}"')]
    if cpu_arch:
        cxx_flags.append(f"-march={cpu_arch}")
    # A baseline at or above a variant's level makes that variant pointless: it is not compiled.
    if level in ("x86-64-v3", "x86-64-v4"):
        macros.append(("FABNET_CPU_BASELINE_AT_LEAST_V3", "1"))
    if level == "x86-64-v4":
        macros.append(("FABNET_CPU_BASELINE_AT_LEAST_V4", "1"))
    base_index = X86_LEVELS.index(level) if level else 0
    dispatch = [v for v in ("x86-64-v3", "x86-64-v4") if on_x86 and X86_LEVELS.index(v) > base_index]
    cpp_sources = ["csrc/fabnet.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    info = {
        "torch": torch.__version__,
        "cxx_std": std,
        "cpu_arch": cpu_arch or "default",
        "cpu_level": level,
        "cpu_dispatch": dispatch,
        "cuda": None,
        "cuda_archs": [],
    }
    if cuda_home is not None:
        cuda_sources = sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
        nvcc_flags = ["-O3", f"-std={std}", "--use_fast_math", "-lineinfo"]
        ext = cpp_extension.CUDAExtension(
            "fabnet._C",
            cpp_sources + cuda_sources,
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=["-fopenmp", "-Wl,--strip-debug"],
            define_macros=[("FABNET_WITH_CUDA", "1"), *macros],
        )
        arch_list = os.environ["TORCH_CUDA_ARCH_LIST"]
        info.update(
            cuda=torch.version.cuda, cuda_archs=[a.strip() for a in re.split(r"[;\s]+", arch_list) if a.strip()]
        )
        _log(
            f"building fabnet._C for torch {torch.__version__} (-std={std}): CPU kernels "
            f"({_cpu_summary(cpu_arch, dispatch)}) and CUDA kernels for {_arch_summary(arch_list)} "
            f"({cuda_why})"
        )
    else:
        ext = cpp_extension.CppExtension(
            "fabnet._C",
            cpp_sources,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp", "-Wl,--strip-debug"],
            define_macros=macros,
        )
        _log(
            f"building fabnet._C for torch {torch.__version__} (-std={std}): CPU kernels only "
            f"({_cpu_summary(cpu_arch, dispatch)}); no CUDA kernels: {cuda_why}"
        )

    class BuildExtWithInfo(cpp_extension.BuildExtension):
        """Writes _build_info.json beside the library: fabnet.ops reads it before loading _C."""

        def build_extension(self, extension):
            super().build_extension(extension)
            path = os.path.join(os.path.dirname(self.get_ext_fullpath(extension.name)), BUILD_INFO)
            with open(path, "w") as f:
                json.dump(info, f, indent=1)

        def copy_extensions_to_source(self):
            # Editable installs build into a temporary folder and copy the library into the
            # source tree; the build record must travel with it.
            super().copy_extensions_to_source()
            package_dir = self.get_finalized_command("build_py").get_package_dir("fabnet")
            with open(os.path.join(package_dir, BUILD_INFO), "w") as f:
                json.dump(info, f, indent=1)

    return [ext], {"build_ext": BuildExtWithInfo.with_options(use_ninja=True)}


# Commands that compile fabnet._C; the others (sdist, egg_info, dist_info: metadata and the
# source archive) need no torch and no compiler.
BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install", "bdist_egg"}


def _version() -> str:
    """fabnet.__version__, the one place the version is written."""
    with open(os.path.join(ROOT, "fabnet", "__init__.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def _long_description() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def main():
    builds = any(arg in BUILD_COMMANDS for arg in sys.argv[1:])
    ext_modules, cmdclass = _extensions() if builds else ([], {})
    setup(
        name="fabnet",
        version=_version(),
        description="FAb-Net self-supervised facial-attribute embeddings with a fused warp/blend/L1 kernel",
        long_description=_long_description(),
        long_description_content_type="text/markdown",
        author="the fabnet authors",
        license="BSD-3-Clause",
        license_files=["LICENSE"],
        keywords=["self-supervised learning", "face", "embedding", "grid_sample", "pytorch", "cuda", "triton"],
        project_urls={
            "Paper (BMVC 2018)": "https://arxiv.org/abs/1808.06882",
        },
        classifiers=[
            "Development Status :: 4 - Beta",
            "Intended Audience :: Science/Research",
            "Intended Audience :: Developers",
            "Operating System :: POSIX :: Linux",
            "Programming Language :: C++",
            "Programming Language :: Python :: 3",
            "Programming Language :: Python :: 3 :: Only",
            "Environment :: GPU :: NVIDIA CUDA",
            "Topic :: Scientific/Engineering :: Artificial Intelligence",
            "Topic :: Scientific/Engineering :: Image Recognition",
            "Typing :: Typed",
        ],
        python_requires=">=3.10",
        packages=find_packages(include=["fabnet", "fabnet.*"]) + ["fabnet.kernels"],
        package_dir={"fabnet.kernels": "kernels"},
        package_data={"fabnet": ["py.typed"]},
        ext_modules=ext_modules,
        cmdclass=cmdclass,
        # The op needs torch (numpy for its tests' users, and the probes); everything the command
        # line needs is an extra, so that a project taking only fabnet.ops installs only these.
        install_requires=["torch>=2.4", "numpy"],
        extras_require=EXTRAS,
        entry_points={"console_scripts": ["fabnet=fabnet.cli:main"]},
    )


# Extras by use: "train" (fabnet synth / train / embed / probe / retrieve / demo / study), "video"
# (extract-frames), "dali-cuda12" / "dali-cuda13" (the DALI data backend: the build matching
# torch's CUDA), "triton" (the Triton kernels), "test", and "all" (train, video, triton, test).
EXTRAS = {
    "train": ["pillow", "tqdm", "matplotlib"],
    "video": ["av"],
    "dali-cuda12": ["nvidia-dali-cuda120"],
    "dali-cuda13": ["nvidia-dali-cuda130"],
    "triton": ["triton"],
    "test": ["pytest", "pytest-benchmark", "onnx", "onnxscript", "onnxruntime"],
}
EXTRAS["all"] = sorted({p for name in ("train", "video", "triton", "test") for p in EXTRAS[name]})


# setuptools runs this file as __main__; tests import it for its helpers.
if __name__ == "__main__":
    main()
