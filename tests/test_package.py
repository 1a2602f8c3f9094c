"""The package's import surface: lazy subpackage exports and a torch-free ``fabnet --help``."""

import importlib
import subprocess
import sys

import pytest

SUBPACKAGES = ("fabnet.data", "fabnet.model", "fabnet.train", "fabnet.probe")


def test_cli_parser_imports_no_torch_triton_or_pil():
    # A fresh interpreter: this test process has imported torch long ago.
    code = ("import sys, fabnet.cli as c\n"
            "c.build_parser().parse_args(['train', '--data', 'd', '--out', 'o'])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'triton', 'PIL')))")  # fmt: skip
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
