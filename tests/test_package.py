"""The package's import surface: lazy subpackage exports and a torch-free ``fabnet --help``."""

import importlib
import subprocess
import sys

import pytest

SUBPACKAGES = ("fabnet.data", "fabnet.model", "fabnet.train", "fabnet.probe")


def test_cli_parser_imports_no_torch_triton_or_pil():
    # A fresh interpreter: this test process has imported torch long ago.
    code = (
        "import sys, fabnet.cli as c\n"
        "c.build_parser().parse_args(['train', '--data', 'd', '--out', 'o'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'triton', 'PIL')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"building the CLI parser imported {out[:200]}"


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "fabnet", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("synth", "extract-frames", "train", "embed", "probe", "retrieve", "demo", "study"):
        assert command in out


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_every_export_resolves_to_its_definition(package):
    mod = importlib.import_module(package)
    assert mod.__all__, package
    for name in mod.__all__:
        value = getattr(mod, name)
        source = importlib.import_module(mod._EXPORTS[name])
        assert value is getattr(source, name), f"{package}.{name}"
        assert name in dir(mod)


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_unknown_attribute_names_the_package(package):
    mod = importlib.import_module(package)
    with pytest.raises(AttributeError, match=rf"module '{package}' has no attribute 'no_such_name'"):
        mod.no_such_name  # noqa: B018


def test_from_import_of_exports():
    from fabnet.data import load_index, synthesize
    from fabnet.model import DEFAULT_WIDTH, FabNet
    from fabnet.probe import TASKS, fit_probe
    from fabnet.train import TrainConfig, train

    assert callable(load_index) and callable(synthesize) and callable(fit_probe) and callable(train)
    assert DEFAULT_WIDTH == 64 and FabNet.__name__ == "FabNet" and TrainConfig.__name__ == "TrainConfig"
    assert "pose" in TASKS


# --- identity, extras, info -------------------------------------------------------------------

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def _setup():
    from tests.ops.setup_script import setup_script

    return setup_script()


def test_one_version_written_once():
    import fabnet

    assert _setup()._version() == fabnet.__version__
    out = subprocess.run([sys.executable, "-m", "fabnet", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"fabnet {fabnet.__version__}"
    assert f"version: {fabnet.__version__}" in (REPO / "CITATION.cff").read_text()
    assert f"## {fabnet.__version__} " in (REPO / "CHANGELOG.md").read_text()


def test_licence_citation_and_typing_marker_are_shipped():
    assert "BSD 3-Clause License" in (REPO / "LICENSE").read_text()
    citation = (REPO / "CITATION.cff").read_text()
    assert "Self-supervised learning of a facial attribute embedding from video" in citation
    assert "family-names: Wiles" in citation and "arXiv:1808.06882" in citation
    assert (REPO / "fabnet" / "py.typed").exists()
    manifest = (REPO / "MANIFEST.in").read_text()
    for line in (
        "recursive-include csrc *.h *.cuh *.cu *.cpp",
        "include fabnet/py.typed",
        "exclude fabnet/_build_info.json",
    ):
        assert line in manifest


def test_the_op_needs_neither_pil_nor_tqdm_nor_matplotlib():
    """What `pip install .` installs (torch, numpy) is all `import fabnet.ops` and an op call need."""
    code = (
        "import sys\n"
        "for name in ('PIL', 'tqdm', 'matplotlib', 'av', 'triton', 'nvidia'): sys.modules[name] = None\n"
        "import torch, fabnet.ops as ops\n"
        "print(tuple(ops.warp_blend(torch.rand(1, 2, 3, 5, 5), torch.zeros(1, 2, 2, 4, 4)).shape))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("(1, 3, 4, 4)")
    extras = _setup().EXTRAS
    assert {"train", "video", "dali-cuda12", "dali-cuda13", "triton", "test", "all"} <= set(extras)
    assert extras["dali-cuda12"] == ["nvidia-dali-cuda120"] and extras["dali-cuda13"] == ["nvidia-dali-cuda130"]


def test_a_command_without_its_extra_names_the_extra(tmp_path):
    code = (
        "import sys\n"
        "sys.modules['tqdm'] = None\n"
        "from fabnet.cli import main\n"
        f"sys.exit(main(['synth', {str(tmp_path / 'd')!r}, '--identities', '1']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2
    assert 'needs tqdm, which is not installed: pip install "fabnet[train]"' in out.stderr
    assert out.stderr.count("\n") == 1


def test_fabnet_info_says_what_a_bug_report_needs():
    import json

    import torch

    import fabnet

    out = subprocess.run([sys.executable, "-m", "fabnet", "info"], capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"fabnet {fabnet.__version__} (") and f"torch {torch.__version__}" in out
    assert "backends of fabnet.ops for cpu tensors:" in out and "reference  available" in out
    assert "optional packages: " in out
    raw = subprocess.run([sys.executable, "-m", "fabnet", "info", "--json"], capture_output=True, text=True, check=True)
    info = json.loads(raw.stdout)
    assert info["fabnet"] == fabnet.__version__ and info["torch"] == torch.__version__
    assert set(info["backends"]["cpu"]) == {"cuda", "triton", "cpu", "reference"}
    if info["build"]:
        assert "CPU: -march=" in out and info["build"]["cpu_arch"] in out


def test_sdist_builds_without_torch_or_a_compiler():
    """Metadata and the source archive need neither: setup.py builds the extension only for the
    commands that compile (python -m build's isolated sdist step has no torch)."""
    assert "sdist" not in _setup().BUILD_COMMANDS and "egg_info" not in _setup().BUILD_COMMANDS
    assert {"build_ext", "bdist_wheel", "editable_wheel"} <= _setup().BUILD_COMMANDS
