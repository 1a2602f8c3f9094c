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
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)  # buildtools/, beside this file (also in the sdist)

from buildtools.cpu_target import (  # noqa: E402
    DEFAULT_CPU_ARCH,
    X86_LEVELS,
    _baseline_level,
    _cpu_summary,
)
from buildtools.toolchain import (  # noqa: E402
    DEFAULT_CUDA_ARCHS,
    _arch_summary,
    _check_host_compiler,
    _cuda_plan,
    _import_target_torch,
    _log,
    _required_cxx_standard,
)

BUILD_INFO = "_build_info.json"


# --- the extension --------------------------------------------------------------------------------


def _cpu_plan() -> tuple[list[str], list[tuple[str, str]], dict]:
    """(compiler flags, macros, build-record fields) of the CPU kernels.

    The CPU kernel is written as `omp simd` loops over blocks of pixels, so the tap gathers become
    vector gathers; how wide depends on the target. The library itself targets a portable baseline
    (a wheel or an image built on an AVX-512 host must not die of SIGILL on an AVX2 one), and the
    kernels are compiled twice more, for x86-64-v3 and x86-64-v4, and chosen at run time
    (csrc/cpu/isa_*.cpp, warp_blend.cpp). -fno-trapping-math lets gcc if-convert float compares (no
    code here reads FP exception flags). -g0: no debug info, 6.8 MB of the library's 7.3 MB with it.
    """
    flags = ["-O3", "-fopenmp", "-fno-trapping-math", "-g0"]
    on_x86 = platform.machine() in ("x86_64", "AMD64")
    cpu_arch = os.environ.get("FABNET_CPU_ARCH", DEFAULT_CPU_ARCH if on_x86 else "")
    level = _baseline_level(cpu_arch) if on_x86 else ""
    macros = [("FABNET_CPU_BASELINE", f'"{cpu_arch or "default"}"')]
    if cpu_arch:
        flags.append(f"-march={cpu_arch}")
    # A baseline at or above a variant's level makes that variant pointless: it is not compiled.
    if level in ("x86-64-v3", "x86-64-v4"):
        macros.append(("FABNET_CPU_BASELINE_AT_LEAST_V3", "1"))
    if level == "x86-64-v4":
        macros.append(("FABNET_CPU_BASELINE_AT_LEAST_V4", "1"))
    base_index = X86_LEVELS.index(level) if level else 0
    dispatch = [v for v in ("x86-64-v3", "x86-64-v4") if on_x86 and X86_LEVELS.index(v) > base_index]
    return flags, macros, {"cpu_arch": cpu_arch or "default", "cpu_level": level, "cpu_dispatch": dispatch}


def _extension(cpp_extension, torch, std: str, cuda_home: str | None, cuda_why: str, info: dict):
    """The fabnet._C Extension: the CPU kernels, and the CUDA kernels when ``cuda_home``."""
    cxx_flags, macros, cpu = _cpu_plan()
    cxx_flags.insert(1, f"-std={std}")
    info.update(cpu)
    cpp_sources = ["csrc/fabnet.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    link = ["-fopenmp", "-Wl,--strip-debug"]
    cpu_text = _cpu_summary(cpu["cpu_arch"], cpu["cpu_dispatch"])
    if cuda_home is None:
        _log(
            f"building fabnet._C for torch {torch.__version__} (-std={std}): CPU kernels only ({cpu_text}); "
            f"no CUDA kernels: {cuda_why}"
        )
        return cpp_extension.CppExtension(
            "fabnet._C", cpp_sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=link, define_macros=macros
        )
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
    nvcc_flags = ["-O3", f"-std={std}", "--use_fast_math", "-lineinfo"]
    arch_list = os.environ["TORCH_CUDA_ARCH_LIST"]
    info.update(cuda=torch.version.cuda, cuda_archs=[a.strip() for a in re.split(r"[;\s]+", arch_list) if a.strip()])
    _log(
        f"building fabnet._C for torch {torch.__version__} (-std={std}): CPU kernels ({cpu_text}) and CUDA "
        f"kernels for {_arch_summary(arch_list)} ({cuda_why})"
    )
    return cpp_extension.CUDAExtension(
        "fabnet._C",
        cpp_sources + cuda_sources,
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=link,
        define_macros=[("FABNET_WITH_CUDA", "1"), *macros],
    )


def _build_command(cpp_extension, info: dict):
    """torch's BuildExtension (ninja), writing _build_info.json beside the library: fabnet.ops
    reads it before loading _C."""

    class BuildExtWithInfo(cpp_extension.BuildExtension):
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

    return BuildExtWithInfo.with_options(use_ninja=True)


def _extensions():
    """([fabnet._C], {"build_ext": its command}), or nothing with FABNET_NO_EXTENSION=1."""
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
    info = {"torch": torch.__version__, "cxx_std": std, "cuda": None, "cuda_archs": []}
    ext = _extension(cpp_extension, torch, std, cuda_home, cuda_why, info)
    return [ext], {"build_ext": _build_command(cpp_extension, info)}


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
        packages=find_packages(include=["fabnet", "fabnet.*"]),
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
# (extract-frames, tracks), "export" (.safetensors), "parquet" (embed --out x.parquet),
# "dali-cuda12" / "dali-cuda13" (the DALI data backend: the build matching torch's CUDA), "triton"
# (the Triton kernels), "test", and "all" (train, video, export, parquet, triton, test).
EXTRAS = {
    "train": ["pillow", "tqdm", "matplotlib", "tensorboard"],
    # OpenCV's face cascades ship in the 4.x wheels only
    "video": ["av", "opencv-python-headless<5"],
    "export": ["safetensors"],
    "parquet": ["pyarrow"],
    "dali-cuda12": ["nvidia-dali-cuda120"],
    "dali-cuda13": ["nvidia-dali-cuda130"],
    "triton": ["triton"],
    "test": ["pytest", "pytest-benchmark", "onnx", "onnxscript", "onnxruntime", "scikit-image"],
}
EXTRAS["all"] = sorted({p for name in ("train", "video", "export", "parquet", "triton", "test") for p in EXTRAS[name]})


# setuptools runs this file as __main__; tests import it for its helpers.
if __name__ == "__main__":
    main()
