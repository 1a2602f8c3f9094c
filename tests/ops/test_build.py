"""The build: setup.py's choices (C++ standard, compiler, CUDA toolkit) and the build record.

setup.py is imported as a module (setuptools runs it as __main__, so importing it builds nothing).
Whole installs in fresh environments are checked by .ci/run's build stage, not here.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import torch

from fabnet.ops import build_info, extension
from tests.ops.setup_script import toolchain


@pytest.fixture(scope="module")
def setup_module():
    """buildtools.toolchain: the checks setup.py runs before it builds."""
    return toolchain()


def _write(path: Path, text: str = "", executable: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize("guard,expected", [("202002L", "c++20"), ("201703L", "c++17")])
def test_cxx_standard_read_from_aten_header(setup_module, tmp_path, guard, expected):
    _write(
        tmp_path / "inc" / "ATen" / "ATen.h",
        f"#pragma once\n#if !defined(_MSC_VER) && __cplusplus < {guard}\n#error too old\n#endif\n",
    )
    assert setup_module._required_cxx_standard([str(tmp_path / "none"), str(tmp_path / "inc")]) == expected


def test_cxx_standard_of_the_installed_torch_compiles_its_headers(setup_module):
    """The standard chosen is the one the installed torch's ATen.h accepts."""
    from torch.utils.cpp_extension import include_paths

    std = setup_module._required_cxx_standard(include_paths())
    major = int(torch.__version__.split(".")[1])
    assert std == ("c++20" if major >= 14 else "c++17")


def test_missing_compiler_is_one_message(setup_module, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    with pytest.raises(setup_module.BuildError, match=r"no C\+\+ compiler found .*set CXX"):
        setup_module._check_host_compiler("c++17", "2.14.1")


def test_compiler_too_old_is_one_message(setup_module, monkeypatch, tmp_path):
    # A compiler that rejects the standard, as g++ 9 rejects -std=c++20's library.
    old = _write(
        tmp_path / "old-g++",
        "#!/bin/sh\n[ \"$1\" = --version ] && echo 'g++ (old) 9.1' && exit 0\n"
        "echo 'unrecognized command-line option' >&2; exit 1\n",
        executable=True,
    )
    monkeypatch.setenv("CXX", str(old))
    with pytest.raises(setup_module.BuildError, match=r"g\+\+ \(old\) 9\.1.*-std=c\+\+20.*torch 2\.14\.1"):
        setup_module._check_host_compiler("c++20", "2.14.1")


def test_host_compiler_accepts_the_standard(setup_module, monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    assert setup_module._check_host_compiler("c++17", torch.__version__) == "c++"


def _fake_toolkit(root: Path) -> Path:
    _write(root / "include" / "cuda_runtime.h")
    _write(root / "bin" / "nvcc", "#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.48'\n", executable=True)
    return root


def test_cuda_home_from_environment_wins(setup_module, monkeypatch, tmp_path):
    toolkit = _fake_toolkit(tmp_path / "cuda")
    monkeypatch.setenv("CUDA_HOME", str(toolkit))
    assert setup_module._find_cuda_home()[0] == str(toolkit)


def test_cuda_home_without_headers_is_refused(setup_module, monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    with pytest.raises(setup_module.BuildError, match=r"CUDA_HOME=.* has no include/cuda_runtime\.h"):
        setup_module._find_cuda_home()


def test_nvcc_wrapper_folder_is_not_a_toolkit(setup_module, monkeypatch, tmp_path):
    """An nvcc wrapper script on PATH (/usr/local/bin/nvcc) does not make /usr/local a toolkit."""
    wrapper_root = tmp_path / "local"
    toolkit = _fake_toolkit(tmp_path / "cuda-13.0")
    _write(wrapper_root / "bin" / "nvcc", f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n', executable=True)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", f"{wrapper_root / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(setup_module.glob, "glob", lambda pattern: [str(toolkit)])
    candidates = setup_module._cuda_home_candidates()
    assert candidates[0] == str(wrapper_root)  # looked at first, skipped: no headers
    home, _ = setup_module._find_cuda_home()
    assert home != str(wrapper_root)
    assert home is None or setup_module._has_cuda_headers(home)


def test_cuda_plan_for_a_cpu_torch(setup_module, monkeypatch):
    fake = type("T", (), {"__version__": "2.13.0+cpu", "version": type("V", (), {"cuda": None})})
    monkeypatch.delenv("FABNET_FORCE_CUDA", raising=False)
    home, why = setup_module._cuda_plan(fake)
    assert home is None and "CPU build" in why
    monkeypatch.setenv("FABNET_FORCE_CUDA", "1")
    with pytest.raises(setup_module.BuildError, match="FABNET_FORCE_CUDA=1, but torch 2.13.0"):
        setup_module._cuda_plan(fake)


def test_cuda_plan_refuses_another_major_version(setup_module, monkeypatch, tmp_path):
    toolkit = _fake_toolkit(tmp_path / "cuda")
    monkeypatch.setenv("CUDA_HOME", str(toolkit))
    monkeypatch.delenv("FABNET_FORCE_CUDA", raising=False)
    fake = type("T", (), {"__version__": "2.14.1+cu128", "version": type("V", (), {"cuda": "12.8"})})
    home, why = setup_module._cuda_plan(fake)
    assert home is None and "nvcc 13.0" in why and "12.8" in why
    fake.version.cuda = "13.0"
    home, why = setup_module._cuda_plan(fake)
    assert home == str(toolkit) and "nvcc 13.0" in why


def test_arch_summary(setup_module):
    assert setup_module._arch_summary("8.0;9.0+PTX") == "sm_80, sm_90 + PTX compute_90"


# --- the build record and the CUDA backend's reasons -------------------------------------------


def test_build_record_matches_this_torch():
    if not extension.available():
        pytest.skip("fabnet._C not built")
    info = build_info.read()
    assert info is not None, f"no build record at {build_info.PATH}: setup.py writes it beside _C"
    assert info["torch"] == torch.__version__
    assert bool(info["cuda_archs"]) == extension.built_with_cuda()


def test_extension_built_for_another_torch_is_named_not_loaded():
    reason = extension._load({"torch": "2.4.0+cpu"}, "2.14.1+cu130")
    assert "built for torch 2.4.0+cpu" in reason and "imports torch 2.14.1+cu130" in reason
    assert "pip install -e ." in reason


def test_build_record_unreadable_means_no_record(tmp_path):
    assert build_info.read(str(tmp_path / "missing.json")) is None
    bad = _write(tmp_path / "bad.json", "{not json")
    assert build_info.read(str(bad)) is None
    good = _write(tmp_path / "good.json", json.dumps({"torch": "2.13.0"}))
    assert build_info.read(str(good)) == {"torch": "2.13.0"}


@pytest.mark.parametrize(
    "archs,capability,runs",
    [
        (["8.0", "9.0+PTX"], (8, 0), True),  # A100: sm_80 cubin
        (["8.0", "9.0+PTX"], (8, 6), True),  # RTX 30xx: sm_80 cubin runs on 8.x with minor >= 0
        (["8.0", "9.0+PTX"], (9, 0), True),  # H100 / H200
        (["8.0", "9.0+PTX"], (12, 0), True),  # a newer GPU: the driver compiles compute_90 PTX
        (["8.0", "9.0"], (12, 0), False),  # ... which is not there without +PTX
        (["8.0", "9.0+PTX"], (7, 5), False),  # T4: older than every target
        (["8.6"], (8, 0), False),  # a cubin does not run on a lower minor version
    ],
)
def test_cuda_arch_reason(archs, capability, runs):
    reason = build_info.cuda_arch_reason(archs, capability, "cuda:0")
    assert (reason is None) == runs
    if not runs:
        assert f"compute capability {capability[0]}.{capability[1]}" in reason
        assert f'TORCH_CUDA_ARCH_LIST="{capability[0]}.{capability[1]}"' in reason


def test_cuda_backend_cannot_serve_without_a_device():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    reasons = extension.cuda_reasons()
    assert reasons, "the CUDA backend must say why it cannot serve here"
    if extension.built_with_cuda():
        assert reasons == ["no CUDA device is usable here (torch.cuda.is_available() is False)"]
    else:
        assert "built without CUDA kernels" in reasons[0]


# --- the CPU target ---------------------------------------------------------------------------

needs_objdump = pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")
on_x86 = platform.machine() in ("x86_64", "AMD64")


@pytest.mark.skipif(not extension.available(), reason="fabnet._C not built")
@needs_objdump
def test_the_library_keeps_its_recorded_cpu_target():
    """Every function of _C needs no more than its variant: the baseline's (recorded as
    cpu_level) or, for isa_v3 / isa_v4 symbols, that level. A wheel built on an AVX-512 machine
    then runs on an AVX2 one, which the old -march=x86-64-v4 default killed with SIGILL."""
    from tests.ops import cpu_machine_code

    info = extension.BUILD_INFO
    result = cpu_machine_code.summary(cpu_machine_code.library_path())
    assert result["beyond"] == [], result["beyond"][:5]
    if on_x86 and info.get("cpu_level") == "x86-64-v2":
        counts = result["counts"]
        assert counts[("x86-64-v2", "x86-64-v3")] == counts[("x86-64-v2", "x86-64-v4")] == 0
        # The variants are there and use what they were compiled for.
        assert info["cpu_dispatch"] == ["x86-64-v3", "x86-64-v4"]
        assert counts[("x86-64-v3", "x86-64-v3")] > 0 and counts[("x86-64-v4", "x86-64-v4")] > 0


@needs_objdump
@pytest.mark.skipif(not on_x86, reason="x86-64 instruction levels")
@pytest.mark.parametrize(
    "flag,level", [("-march=x86-64-v2", "x86-64-v2"), ("-mavx2", "x86-64-v3"), ("-mavx512f", "x86-64-v4")]
)
def test_the_machine_code_reader_sees_each_level(tmp_path, flag, level):
    """The check above is not vacuous: a loop compiled for a level is read as needing it."""
    from tests.ops import cpu_machine_code

    source = tmp_path / "loop.c"
    source.write_text(
        "void axpy(float* y, const float* x, float a, int n) { for (int i = 0; i < n; ++i) y[i] += a * x[i]; }\n"
    )
    library = tmp_path / "loop.so"
    subprocess.run(["cc", "-O3", flag, "-shared", "-fPIC", str(source), "-o", str(library)], check=True)
    needed = cpu_machine_code.functions(str(library))["axpy"]
    assert max(needed, key=cpu_machine_code.LEVELS.index) == level


@pytest.mark.skipif(not extension.available(), reason="fabnet._C not built")
def test_every_variant_this_cpu_runs_can_be_chosen():
    names = extension.cpu_isas()
    assert names and extension.cpu_isa() == names[0]  # the best, by default
    try:
        for name in names:
            extension.set_cpu_isa(name)
            assert extension.cpu_isa() == name
        with pytest.raises(ValueError, match=r"name must be 'auto' or one of \["):
            extension.set_cpu_isa("x86-64-v9")
    finally:
        extension.set_cpu_isa("auto")
    assert extension.cpu_isa() == names[0]


V3_FLAGS = {
    "sse4_2",
    "sse4_1",
    "ssse3",
    "popcnt",
    "cx16",
    "lahf_lm",
    "avx",
    "avx2",
    "bmi1",
    "bmi2",
    "f16c",
    "fma",
    "abm",
    "movbe",
    "xsave",
}


def test_a_library_for_a_higher_level_is_refused_by_name():
    """A _C built with FABNET_CPU_ARCH=x86-64-v4, loaded on an AVX2 CPU: one line instead of SIGILL."""
    info = {"torch": torch.__version__, "cpu_arch": "x86-64-v4", "cpu_level": "x86-64-v4"}
    reason = build_info.cpu_level_mismatch(info, V3_FLAGS)
    assert reason.startswith("fabnet._C was built for x86-64-v4 (-march=x86-64-v4), which this CPU (x86-64-v3)")
    assert "lacks avx512bw, avx512cd, avx512dq, avx512f, avx512vl" in reason and "pip install -e ." in reason
    assert (
        build_info.cpu_level_mismatch(info, V3_FLAGS | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})
        is None
    )
    assert build_info.cpu_level_mismatch({**info, "cpu_level": "x86-64-v2"}, V3_FLAGS) is None
    assert build_info.cpu_level_mismatch({**info, "cpu_level": ""}, set()) is None  # -march=native etc.


def test_the_loader_refuses_before_loading(monkeypatch):
    """extension._load consults the record first: the library is never opened."""
    monkeypatch.setattr(build_info, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": set(V3_FLAGS))
    info = {"torch": torch.__version__, "cpu_arch": "x86-64-v4", "cpu_level": "x86-64-v4"}
    assert "which this CPU (x86-64-v3) cannot run" in extension._load(info, torch.__version__)


@pytest.mark.parametrize(
    "prefix, pythonpath, advice",
    [
        ("/tmp/build-env-abc123", "", "python -m build --no-isolation"),
        ("/usr", "/tmp/pip-build-env-xyz/overlay", "pip install --no-build-isolation ."),
        ("/usr", "", "then run `pip install -e .` again"),
    ],
    ids=["python-m-build", "pip-isolated", "plain"],
)
def test_missing_torch_advice_fits_the_frontend(setup_module, monkeypatch, prefix, pythonpath, advice):
    """`python -m build` builds in a venv of its own, where pip's advice (--no-build-isolation)
    pointed the wrong way: each frontend gets its own command."""
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(setup_module.sys, "prefix", prefix)
    monkeypatch.setenv("PYTHONPATH", pythonpath)
    monkeypatch.setattr(setup_module, "_target_torch_site", lambda: None)
    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(setup_module.BuildError) as err:
        setup_module._import_target_torch()
    assert advice in str(err.value) and "FABNET_NO_EXTENSION=1" in str(err.value)
