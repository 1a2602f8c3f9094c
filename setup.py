"""Builds fabnet and its extension fabnet._C.

The C++ CPU kernels are always built. The CUDA kernels (csrc/cuda/*.cu) are built when torch has
CUDA and nvcc is found, or when FABNET_FORCE_CUDA=1; TORCH_CUDA_ARCH_LIST picks the
architectures (default "8.0;9.0"). Set FABNET_NO_EXTENSION=1 to install the pure-Python package
(fabnet.ops then runs the PyTorch reference). Build with:

    pip install --no-build-isolation -e .
"""

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _log(message: str) -> None:
    print(f"fabnet setup: {message}", file=sys.stderr)


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
    # -O3 and -march=x86-64-v2 (SSE4.2, every x86-64 CPU since 2009) let gcc vectorise the
    # per-pixel loops; -ffp-contract=fast allows FMA where the target has it.
    cxx_flags = ["-O3", "-std=c++17", "-fopenmp" if sys.platform.startswith("linux") else "-O3"]
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
                           extra_link_args=["-fopenmp"] if sys.platform.startswith("linux") else [])
        _log(f"building fabnet._C with CPU kernels only ({why}; FABNET_FORCE_CUDA=1 forces CUDA): "
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
