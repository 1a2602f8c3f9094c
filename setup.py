"""Builds fabnet and its extension fabnet._C.

The C++ CPU kernels are always built. The CUDA kernels (csrc/cuda/*.cu) are built when torch has
CUDA and nvcc is found, or when FABNET_FORCE_CUDA=1; TORCH_CUDA_ARCH_LIST picks the
architectures (default "8.0;9.0"). Set FABNET_NO_EXTENSION=1 to install the pure-Python package
(fabnet.ops then runs the PyTorch reference). Build with:

    pip install --no-build-isolation -e .
"""

import glob
import os
import platform
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _log(message: str) -> None:
    print(f"fabnet setup: {message}", file=sys.stderr)


def _host_x86_level() -> str:
    """The highest x86-64 micro-architecture level this machine supports ("" off x86-64)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        return "x86-64-v2"
    if {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"} <= flags:
        return "x86-64-v4"
    if {"avx2", "fma", "bmi2"} <= flags:
        return "x86-64-v3"
    return "x86-64-v2"


def _extensions():
    if os.environ.get("FABNET_NO_EXTENSION") == "1":
        _log("FABNET_NO_EXTENSION=1: building no extension")
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    cpp_sources = ["csrc/fabnet.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
    forced = os.environ.get("FABNET_FORCE_CUDA") == "1"
    nvcc = shutil.which("nvcc") or (CUDA_HOME and os.path.join(CUDA_HOME, "bin", "nvcc"))
    with_cuda = bool(cuda_sources) and (forced or (torch.version.cuda is not None and nvcc is not None))
    # The CPU kernel is written as `omp simd` loops over blocks of pixels, so the tap gathers
    # become vector gathers. The extension is always compiled on the machine that runs it, so it
    # targets that machine's x86-64 level: v4 (AVX-512) took the (8, 3, 3, 128, 128) forward from
    # 2.56 ms (v3, AVX2) to 1.32 ms on 2 EPYC cores. FABNET_CPU_ARCH overrides it ("x86-64-v3",
    # "native", or "x86-64" for a build that runs on any x86-64 CPU).
    # -fno-trapping-math lets gcc if-convert float compares (no code here reads FP exception flags).
    cxx_flags = ["-O3", "-std=c++17", "-fopenmp", "-fno-trapping-math"]
    arch = os.environ.get("FABNET_CPU_ARCH", _host_x86_level())
    if arch:
        cxx_flags.append(f"-march={arch}")
    extra = {"cxx": cxx_flags}
    sources = cpp_sources
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        extra["nvcc"] = ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo"]
        sources = cpp_sources + cuda_sources
        ext = CUDAExtension("fabnet._C", sources, extra_compile_args=extra,
                            define_macros=[("FABNET_WITH_CUDA", "1")])
        _log(f"building fabnet._C with CPU and CUDA kernels for TORCH_CUDA_ARCH_LIST="
             f"{os.environ['TORCH_CUDA_ARCH_LIST']}: {', '.join(sources)}")
    else:
        why = ("no CUDA sources" if not cuda_sources else
               "torch has no CUDA" if torch.version.cuda is None else "nvcc not found")
        ext = CppExtension("fabnet._C", sources, extra_compile_args=extra,
                           extra_link_args=["-fopenmp"])
        _log(f"building fabnet._C with CPU kernels only (-march={arch or 'default'}; {why}; FABNET_FORCE_CUDA=1 forces CUDA): "
             f"{', '.join(sources)}")
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="fabnet",
    version="0.1.0",
    description="FAb-Net self-supervised facial-attribute embeddings with a fused warp/blend/L1 kernel",
    python_requires=">=3.10",
    packages=find_packages(include=["fabnet", "fabnet.*"]) + ["fabnet.kernels"],
    package_dir={"fabnet.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    install_requires=["torch>=2.4", "numpy", "pillow", "tqdm", "matplotlib"],
    extras_require={
        "dali": ["nvidia-dali-cuda130"],
        "triton": ["triton"],
        "video": ["av"],
        "test": ["pytest", "pytest-benchmark"],
    },
    entry_points={"console_scripts": ["fabnet=fabnet.cli:main"]},
)
