"""The ``fabnet`` command line.

Each subpackage owns its subcommands: a module listed in ``_COMMAND_MODULES`` exposes
``register(subparsers)``, which adds its parsers and sets ``func`` to a callable taking the
parsed ``argparse.Namespace`` and returning an exit code. Heavy imports happen inside those
callables and the subpackages export their names lazily (``fabnet._lazy``), so ``fabnet --help``
imports neither torch nor PIL: 0.18 s instead of 1.9 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

_COMMAND_MODULES = (
    "fabnet.info",  # info
    "fabnet.data.cli",  # synth, extract-frames
    "fabnet.train.cli",  # train
    "fabnet.probe.cli",  # embed, probe, retrieve
    "fabnet.model.cli",  # export
    "fabnet.demo.cli",  # demo, study
)


def build_parser() -> argparse.ArgumentParser:
    from fabnet import __version__

    parser = argparse.ArgumentParser(
        prog="fabnet",
        description="FAb-Net: self-supervised facial-attribute embeddings from face tracks.",
    )
    parser.add_argument("--version", action="version", version=f"fabnet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:  # a subpackage not present in this build
            if err.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


# What bad input raises (a missing file, a value out of range, a refused checkpoint): the user
# gets one line and exit code 2, as for argparse's own errors; anything else is a bug and keeps
# its traceback. FABNET_DEBUG=1 shows the traceback of these too.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # `fabnet ... | head`: the reader left before the summary; the work is done, nothing to report.
        # stdout goes to /dev/null so that Python's flush at exit does not raise the same error again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # as a process killed by SIGPIPE
    except USER_ERRORS as err:
        if os.environ.get("FABNET_DEBUG") == "1":
            raise
        print(f"fabnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        extra = EXTRA_OF_MODULE.get((err.name or "").split(".")[0])
        if extra is None or os.environ.get("FABNET_DEBUG") == "1":
            raise
        install = f'pip install "fabnet[{extra}]" (from a checkout: pip install ".[{extra}]")'
        print(f"fabnet {args.command}: error: it needs {err.name}, which is not installed: {install}", file=sys.stderr)
        return 2
    except ImportError as err:
        # fabnet's own "X needs Y, which is not importable: pip install ..." (--data-backend dali
        # without DALI, tracks without OpenCV); an import error without that hint is a bug.
        if "pip install" not in str(err) or os.environ.get("FABNET_DEBUG") == "1":
            raise
        print(f"fabnet {args.command}: error: {err}", file=sys.stderr)
        return 2


# The modules of the optional extras (setup.py's EXTRAS): a command that needs one names its extra.
EXTRA_OF_MODULE = {
    "PIL": "train",
    "tqdm": "train",
    "matplotlib": "train",
    "av": "video",
    "cv2": "video",
    "tensorboard": "train",
    "safetensors": "export",
    "pyarrow": "parquet",
    "triton": "triton",
    "nvidia": "dali-cuda13",
}


if __name__ == "__main__":
    sys.exit(main())
