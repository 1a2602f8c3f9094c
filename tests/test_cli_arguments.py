"""Every command refuses bad option values before any work: `fabnet CMD: error: ...`, exit 2."""

from __future__ import annotations

import argparse
import math

import pytest

from fabnet import arguments
from fabnet.cli import main


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    data = base / "data"
    data.mkdir()
    afile = base / "file.txt"
    afile.write_text("not a directory")
    return {
        "data": str(data),
        "file": str(afile),
        "under_file": str(afile / "sub"),
        "missing": str(base / "nope"),
        "out": str(base / "out"),
    }


# (argv with {placeholders}, what stderr must hold)
CASES = [
    # embed / probe / retrieve: existence and ranges
    (
        ["embed", "--checkpoint", "{missing}", "--data", "{data}", "--out", "{out}/e.npz"],
        "argument --checkpoint: '{missing}' does not exist or is not a file",
    ),
    (
        ["embed", "--pixels", "8", "--data", "{missing}", "--out", "{out}/e.npz"],
        "argument --data: '{missing}' does not exist or is not a directory",
    ),
    (["embed", "--pixels", "8", "--data", "{data}", "--out", "{under_file}/e.npz"], "argument --out: "),
    (["embed", "--pixels", "8", "--data", "{data}", "--out", "{data}"], "expected a file name ending in .npz, .pt"),
    (["embed", "--pixels", "8", "--data", "{data}", "--out", "{out}/e.csv"], "ending in .npz, .pt, .parquet"),
    (["retrieve", "--pixels", "8", "--data", "{data}", "--out", "{out}/r.jpg"], "ending in .png, .pdf, .svg"),
    (
        ["embed", "--pixels", "8", "--data", "{data}", "--out", "{out}/e.npz", "--batch-size", "0"],
        "argument --batch-size: expected an integer >= 1, got 0",
    ),
    (
        ["embed", "--pixels", "8", "--data", "{data}", "--out", "{out}/e.npz", "--crop", "7"],
        "argument --crop: expected center, full or a fraction in (0, 1], got 7",
    ),
    (
        ["probe", "--pixels", "8", "--data", "{data}", "--task", "pose", "--lr", "-1"],
        "argument --lr: expected a finite number > 0, got -1",
    ),
    (
        ["probe", "--pixels", "8", "--data", "{data}", "--task", "pose", "--lr", "nan"],
        "argument --lr: expected a finite number > 0, got nan",
    ),
    (
        ["probe", "--pixels", "8", "--data", "{data}", "--task", "pose", "--max-epochs", "0"],
        "argument --max-epochs: expected an integer >= 1, got 0",
    ),
    (
        ["probe", "--pixels", "8", "--data", "{data}", "--task", "pose", "--json", "{under_file}/m.json"],
        "argument --json: ",
    ),
    (
        ["retrieve", "--pixels", "8", "--data", "{data}", "--out", "{out}/r.png", "--k", "0"],
        "argument --k: expected an integer >= 1, got 0",
    ),
    (
        ["retrieve", "--pixels", "8", "--data", "{data}", "--out", "{out}/r.png", "--queries", "-2"],
        "argument --queries: expected an integer >= 1, got -2",
    ),
    # train
    (
        ["train", "--data", "{data}", "--out", "{out}/run", "--log-every", "0"],
        "argument --log-every: expected an integer >= 1, got 0",
    ),
    (
        ["train", "--data", "{data}", "--out", "{out}/run", "--device", "xyz"],
        "argument --device: expected auto, cpu, cuda or cuda:N, got 'xyz'",
    ),
    (
        ["train", "--data", "{data}", "--out", "{out}/run", "--momentum", "nan"],
        "argument --momentum: expected a finite number >= 0 and < 1, got nan",
    ),
    (
        ["train", "--data", "{data}", "--out", "{out}/run", "--lr", "inf"],
        "argument --lr: expected a finite number > 0, got inf",
    ),
    (
        ["train", "--data", "{data}", "--out", "{out}/run", "--checkpoint-every", "-1"],
        "argument --checkpoint-every: expected an integer >= 0, got -1",
    ),
    (
        ["train", "--data", "{data}", "--out", "{out}/run", "--weight-decay", "-0.1"],
        "argument --weight-decay: expected a finite number >= 0, got -0.1",
    ),
    (
        ["train", "--data", "{data}", "--out", "{out}/run", "--steps", "0"],
        "argument --steps: expected an integer >= 1, got 0",
    ),
    (["train", "--data", "{data}", "--out", "{file}"], "argument --out: '{file}' exists and is not a directory"),
    (["train", "--data", "{data}", "--out", "{under_file}"], "cannot be created: '{file}' is a file"),
    # demo, synth, extract-frames
    (["demo", "--out", "{file}"], "argument --out: '{file}' exists and is not a directory"),
    (["demo", "--lr", "0"], "argument --lr: expected a finite number > 0, got 0"),
    (["study", "--out", "{file}"], "argument --out: '{file}' exists and is not a directory"),
    (["study", "--steps", "0"], "argument --steps: expected an integer >= 1, got 0"),
    (["study", "--preset", "tiny"], "argument --preset: invalid choice: 'tiny'"),
    (["synth", "{out}/s", "--size", "100000"], "argument --size: expected an integer in [16, 1024]"),
    (["synth", "{file}"], "argument OUT: '{file}' exists and is not a directory"),
    (["extract-frames", "{missing}", "{out}/f"], "argument VIDEOS: '{missing}' does not exist"),
    (["extract-frames", "{data}", "{out}/f", "--fps", "0"], "--fps: expected a finite number > 0 and <= 1000, got 0"),
    (["extract-frames", "{data}", "{out}/f", "--fps", "1e308"], "--fps: expected a finite number > 0 and <= 1000"),
    (["extract-frames", "{data}", "{out}/f", "--size", "100000"], "argument --size: expected an integer in [0, 4096]"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_value_is_refused_before_work(paths, capsys, monkeypatch, tmp_path, argv, message):
    # A case that wrongly passes would start work under a default --out: keep it out of the checkout.
    monkeypatch.chdir(tmp_path)
    argv = [a.format(**paths) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert f"fabnet {argv[0]}: error: " in err and message.format(**paths) in err, err
    assert "Traceback" not in err


def test_finite_float_bounds():
    momentum = arguments.finite_float(0.0, 1.0, high_open=True)
    assert momentum("0") == 0.0 and momentum("0.99") == 0.99
    for bad in ("1", "-0.1", "nan", "inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            momentum(bad)
    assert math.isclose(arguments.positive_float("1e-3"), 1e-3)


def test_require_int_names_the_argument():
    assert arguments.require_int("size", 8, 8) == 8
    for bad in (0, True, 2.0, "3"):
        with pytest.raises(ValueError, match=r"^size must be an integer >= 1, got "):
            arguments.require_int("size", bad)


def test_writable_dir_does_not_create(tmp_path):
    target = tmp_path / "a" / "b"
    assert arguments.writable_dir(str(target)) == str(target)
    assert not target.exists()


COMMANDS = ("info", "synth", "extract-frames", "tracks", "train", "embed", "probe", "retrieve", "demo", "study")
COMMANDS += ("export",)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_plain_text(command, capsys):
    """No reStructuredText quoting, no doubled percent signs: --help reads as it prints."""
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and out
    assert "``" not in out and "%%" not in out, out


@pytest.mark.parametrize("command", ["synth", "extract-frames", "tracks", "train", "embed", "demo", "study"])
def test_every_long_command_takes_no_progress(command):
    """One switch for progress bars everywhere: --no-progress (--quiet is still read, unlisted)."""
    from fabnet.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = {s: a for a in subparsers.choices[command]._actions for s in a.option_strings}
    assert options["--no-progress"].dest == "progress" and options["--quiet"].dest == "progress"
    assert options["--quiet"].help == argparse.SUPPRESS


def test_dali_backend_without_dali_is_one_line(paths, capsys, monkeypatch, tmp_path):
    from fabnet.data import dali_backend
    from fabnet.data.synth import synthesize

    monkeypatch.setattr(dali_backend, "available", lambda: False)
    root = str(tmp_path / "data")
    synthesize(root, identities=6, tracks_per_identity=2, frames_per_track=4, size=32, progress=False)
    argv = ["train", "--data", root, "--out", str(tmp_path / "run"), "--size", "32", "--data-backend", "dali"]
    assert main(argv + ["--device", "cpu", "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "fabnet train: error: backend='dali' needs NVIDIA DALI" in err and "Traceback" not in err, err


def test_a_closed_pipe_is_no_traceback(tmp_path):
    """`fabnet info | head -1`: the reader closes the pipe before fabnet prints; no traceback."""
    import os
    import pathlib
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1])}
    code = "import time, sys; time.sleep(1); from fabnet.cli import main; sys.exit(main(['info']))"
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    child.stdout.close()
    err = child.stderr.read().decode()
    assert child.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
