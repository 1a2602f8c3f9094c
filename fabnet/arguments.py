"""Argument checks shared by fabnet's commands and functions.

The argparse types (``type=``) return the parsed value or raise ``ArgumentTypeError`` with what
was expected and what came; argparse then prints ``fabnet CMD: error: argument --X: ...`` and
exits 2 before any work starts. ``require_int`` is the same check for Python callers (a
ValueError naming the argument). Torch-free, so ``fabnet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import os
import re

__all__ = [
    "require_int",
    "add_progress_flag",
    "plain_text",
    "int_at_least",
    "int_in",
    "positive_int",
    "non_negative_int",
    "finite_float",
    "positive_float",
    "non_negative_float",
    "existing_dir",
    "existing_file",
    "existing_path",
    "writable_dir",
    "writable_file",
    "output_file",
    "refuse_inputs_as_outputs",
    "device",
    "power_of_two_in",
]


def require_int(name: str, value, minimum: int = 1) -> int:
    """``value`` when it is an integer >= ``minimum``, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _fail(message: str):
    raise argparse.ArgumentTypeError(message)


def int_in(minimum: int | None = None, maximum: int | None = None, why: str = ""):
    """An integer in [minimum, maximum] (either bound may be None); ``why`` explains the bound."""
    expected = (
        "an integer"
        + (f" >= {minimum}" if minimum is not None and maximum is None else "")
        + (f" in [{minimum}, {maximum}]" if minimum is not None and maximum is not None else "")
        + (f" <= {maximum}" if maximum is not None and minimum is None else "")
    )
    suffix = f" ({why})" if why else ""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            _fail(f"expected {expected}, got {text!r}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            _fail(f"expected {expected}{suffix}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in "invalid <name> value" messages
    return parse


def int_at_least(minimum: int):
    return int_in(minimum)


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def finite_float(
    low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False
):
    """A finite number within the bounds (open or closed); NaN and infinities are refused."""
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    expected = "a finite number" + (" " + " and ".join(parts) if parts else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            _fail(f"expected {expected}, got {text!r}")
        if not math.isfinite(value):
            _fail(f"expected {expected}, got {text}")
        if low is not None and (value <= low if low_open else value < low):
            _fail(f"expected {expected}, got {value:g}")
        if high is not None and (value >= high if high_open else value > high):
            _fail(f"expected {expected}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


positive_float = finite_float(0.0, low_open=True)
non_negative_float = finite_float(0.0)


def plain_text(doc: str) -> str:
    """A module docstring as --help prints it: no reStructuredText double backquotes."""
    return doc.replace("``", "")


def add_progress_flag(parser) -> None:
    """``--no-progress``, every command's one switch for its progress bars (``args.progress``).

    ``--quiet``, the old spelling of synth and extract-frames, is still read but no longer listed.
    """
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument("--quiet", dest="progress", action="store_false", help=argparse.SUPPRESS)


def existing_dir(text: str) -> str:
    if not os.path.isdir(text):
        _fail(f"{text!r} does not exist or is not a directory")
    return text


def existing_file(text: str) -> str:
    if not os.path.isfile(text):
        _fail(f"{text!r} does not exist or is not a file")
    return text


def existing_path(text: str) -> str:
    if not os.path.exists(text):
        _fail(f"{text!r} does not exist")
    return text


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def writable_dir(text: str) -> str:
    """A directory that exists and is writable, or can be created (nothing is created here)."""
    if os.path.exists(text):
        if not os.path.isdir(text):
            _fail(f"{text!r} exists and is not a directory")
        if not os.access(text, os.W_OK | os.X_OK):
            _fail(f"{text!r} is not writable")
        return text
    base = _nearest_existing(text)
    if not os.path.isdir(base):
        _fail(f"{text!r} cannot be created: {base!r} is a file")
    if not os.access(base, os.W_OK | os.X_OK):
        _fail(f"{text!r} cannot be created: {base!r} is not writable")
    return text


def writable_file(text: str) -> str:
    """A file that can be written: not a directory, its folder writable or creatable."""
    if os.path.isdir(text):
        _fail(f"{text!r} is a directory; give a file name")
    if os.path.exists(text) and not os.access(text, os.W_OK):
        _fail(f"{text!r} is not writable")
    folder = os.path.dirname(os.path.abspath(text))
    try:
        writable_dir(folder)
    except argparse.ArgumentTypeError as err:
        _fail(f"{text!r} cannot be written: {err}")
    return text


def output_file(*extensions: str):
    """A writable file whose name ends in one of ``extensions`` (".png", ...): the writers pick
    the format from it, and a name they cannot write would fail only after the work is done."""

    def parse(text: str) -> str:
        if not text.lower().endswith(extensions):
            _fail(f"{text!r}: expected a file name ending in {', '.join(extensions)}")
        return writable_file(text)

    parse.__name__ = "file name"
    return parse


def refuse_inputs_as_outputs(outputs: dict[str, str | None], inputs: dict[str, str | None]) -> None:
    """ValueError when an output path is an input file or lies inside an input directory
    (``fabnet embed --out CKPT`` would overwrite the trained model). Paths are compared after
    resolving links, so two spellings of one file are one file."""
    for out_name, out in outputs.items():
        if not out:
            continue
        target = os.path.realpath(out)
        for in_name, given in inputs.items():
            if not given:
                continue
            source = os.path.realpath(given)
            inside = os.path.isdir(source) and os.path.commonpath([source, target]) == source
            if target == source or (inside and os.path.exists(target)):
                what = "is" if target == source else "is a file inside"
                raise ValueError(
                    f"{out_name} {out!r} {what} the input {in_name} {given!r}; writing it would destroy "
                    f"the input: choose another {out_name}"
                )


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def device(text: str) -> str:
    """ "auto", "cpu", "cuda" or "cuda:N" (whether that device exists is checked when used)."""
    if not _DEVICE.match(text):
        _fail(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def power_of_two_in(minimum: int, maximum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            _fail(f"expected a power of two in [{minimum}, {maximum}], got {text!r}")
        if not (minimum <= value <= maximum and value & (value - 1) == 0):
            _fail(f"expected a power of two in [{minimum}, {maximum}], got {value}")
        return value

    parse.__name__ = "integer"
    return parse
