"""``fabnet info``: what a bug report needs, in one paste.

The versions (fabnet, Python, torch, CUDA), how fabnet._C was built (torch, C++ standard, CPU
baseline and variants, CUDA architectures), which CPU variant this machine runs, each backend
of the op with the reason it cannot serve, the GPUs, and the optional packages present.

    fabnet info          # text
    fabnet info --json   # the same as one JSON object
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

from fabnet.arguments import plain_text

OPTIONAL_PACKAGES = (
    "numpy",
    "pillow",
    "tqdm",
    "matplotlib",
    "av",
    "opencv-python-headless",
    "tensorboard",
    "safetensors",
    "pyarrow",
    "triton",
    "nvidia-dali-cuda130",
    "nvidia-dali-cuda120",
    "onnx",
    "onnxruntime",
)


def _version_of(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _usable(device: str) -> bool:
    import torch

    return device == "cpu" or torch.cuda.is_available()


def _sample_args(device: str):
    """A one-pixel call on ``device``, for the backends to say whether they would serve it."""
    import torch

    from fabnet.ops.checks import validate

    s, f = torch.zeros(1, 1, 1, 1, 1, device=device), torch.zeros(1, 1, 2, 1, 1, device=device)
    return validate(s, f, None, None, residual=False, padding_mode="zeros", align_corners=False, needs_target=False)


def collect() -> dict:
    """Everything ``fabnet info`` prints, as plain values."""
    import torch

    import fabnet
    from fabnet.ops import backends, extension

    gpus = (
        [
            {
                "name": torch.cuda.get_device_name(i),
                "capability": ".".join(map(str, torch.cuda.get_device_capability(i))),
            }
            for i in range(torch.cuda.device_count())
        ]
        if torch.cuda.is_available()
        else []
    )
    return {
        "fabnet": fabnet.__version__,
        "location": fabnet.__path__[0],
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "build": extension.BUILD_INFO,
        "extension": "loaded" if extension.available() else extension.LOAD_ERROR,
        "cpu_isa": extension.cpu_isa(),
        "cpu_isas": extension.cpu_isas(),
        "backends": {device: backends(_sample_args(device)) for device in ("cpu", "cuda") if _usable(device)},
        "gpus": gpus,
        "packages": {name: _version_of(name) for name in OPTIONAL_PACKAGES},
    }


def render(info: dict) -> str:
    """The text of ``fabnet info``."""
    build = info["build"] or {}
    lines = [
        f"fabnet {info['fabnet']} ({info['location']})",
        f"python {info['python']}, {info['platform']}",
        f"torch {info['torch']} (CUDA {info['torch_cuda'] or 'none'})",
        f"fabnet._C: {info['extension']}",
    ]
    if build:
        variants = ", ".join(build.get("cpu_dispatch") or []) or "none"
        cuda = f"CUDA {build['cuda']} for {', '.join(build['cuda_archs'])}" if build.get("cuda") else "no CUDA kernels"
        lines += [
            f"  built for torch {build.get('torch')}, -std={build.get('cxx_std')}",
            f"  CPU: -march={build.get('cpu_arch')} (needs {build.get('cpu_level') or 'what -march says'}), "
            f"variants chosen at run time: {variants}",
            f"  {cuda}",
        ]
    if info["cpu_isa"]:
        lines.append(f"CPU kernels in use: {info['cpu_isa']} (this CPU runs {', '.join(info['cpu_isas'])})")
    for device, by_backend in info["backends"].items():
        lines.append(f"backends of fabnet.ops for {device} tensors:")
        for name, reasons in by_backend.items():
            lines.append(f"  {name:10s} " + ("available" if not reasons else "no: " + "; ".join(reasons)))
    gpus = ", ".join(f"{g['name']} (sm {g['capability']})" for g in info["gpus"]) or "none visible"
    lines.append(f"GPUs: {gpus}")
    present = [f"{name} {version}" for name, version in info["packages"].items() if version]
    missing = [name for name, version in info["packages"].items() if not version]
    lines.append(f"optional packages: {', '.join(present) or 'none'}")
    if missing:
        lines.append(f"not installed: {', '.join(missing)}")
    return "\n".join(lines)


def cmd_info(args) -> int:
    info = collect()
    print(json.dumps(info, indent=1, default=str) if args.json else render(info))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="versions, build and backends: what a bug report needs",
        description=plain_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.set_defaults(func=cmd_info)


if __name__ == "__main__":
    sys.exit(cmd_info(argparse.Namespace(json="--json" in sys.argv)))
