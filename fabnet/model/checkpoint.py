"""Checkpoint files: atomic writes, configuration checks, loading the encoder for probes.

A checkpoint is a ``torch.save``d dict:

    format        "fabnet-checkpoint/1"
    model_config  {"size", "num_sources", "embedding_dim", "width"}: rebuilds ``FabNet`` (files
                  without "width" were written at the default, 64)
    model         FabNet state dict (unwrapped: no DDP "module." prefix)
    step, epoch   optimiser steps done; epoch the data loader is in
    batch_in_epoch  batches of ``epoch`` already consumed (the data position)
    optimizer, scheduler, curriculum   their state dicts (training checkpoints)
    rng           {"torch", "numpy", "python"} generator states of rank 0
    train_config  the TrainConfig as a dict
    best_val      best validation loss so far (inf before the first validation)

Only ``format``, ``model_config`` and ``model`` are needed to load a model.
"""

from __future__ import annotations

import os
import tempfile

import torch

from fabnet.model.fabnet import FabNet
from fabnet.model.networks import DEFAULT_WIDTH, Encoder

FORMAT = "fabnet-checkpoint/1"


def save_checkpoint(state: dict, path: str) -> str:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, os.replace.

    A reader (or a process killed mid-write) sees either the old file or the new one, never half.
    """
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """The checkpoint dict at ``path``; FileNotFoundError/ValueError with what to do next."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r} (pass the path of a .pt file written by "
                                "`fabnet train`, e.g. RUN/checkpoints/last.pt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated or foreign bytes: torch.load's own message names neither file nor cause
        raise ValueError(f"{path!r} is not a readable fabnet checkpoint (torch.load failed: {type(err).__name__}: "
                         f"{err}); was it cut off while being copied?") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise ValueError(f"{path!r} is not a fabnet checkpoint (expected a dict with format={FORMAT!r})")
    return state


def check_compatible(state: dict, *, size: int, num_sources: int | None = None, width: int | None = None,
                     path: str = "checkpoint", arg: str = "--resume") -> None:  # fmt: skip
    """ValueError naming the argument when a checkpoint was trained for another size, K or width."""
    cfg = state["model_config"]
    trained_width = checkpoint_width(state)
    if width is not None and trained_width != width:
        raise ValueError(f"{arg} {path!r} was trained with --width {trained_width}, but --width is {width}; "
                         f"pass --width {trained_width} or another checkpoint")
    if cfg["size"] != size:
        raise ValueError(f"{arg} {path!r} was trained with --size {cfg['size']}, but --size is {size}; "
                         f"pass --size {cfg['size']} or another checkpoint")
    if num_sources is not None and cfg["num_sources"] != num_sources:
        raise ValueError(f"{arg} {path!r} was trained with --sources {cfg['num_sources']}, but --sources is "
                         f"{num_sources}; pass --sources {cfg['num_sources']} or another checkpoint")


def checkpoint_width(state: dict) -> int:
    """The network width a checkpoint was trained with (64 for files written before it was stored)."""
    return int(state["model_config"].get("width", DEFAULT_WIDTH))


def build_model(state: dict, **kwargs) -> FabNet:
    """A FabNet with the checkpoint's configuration and weights (``kwargs``: op_backend etc.)."""
    model = FabNet(**{**state["model_config"], "width": checkpoint_width(state)}, **kwargs)
    model.load_state_dict(state["model"])
    return model


def load_encoder(checkpoint_path: str, map_location="cpu") -> Encoder:
    """The trained encoder of a checkpoint: eval mode, requires_grad False. (B, 3, S, S) -> (B, 256)."""
    state = load_checkpoint(checkpoint_path, map_location)
    cfg = state["model_config"]
    encoder = Encoder(cfg["size"], cfg.get("embedding_dim", 256), width=checkpoint_width(state))
    prefix = "encoder."
    encoder.load_state_dict({k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)})
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder.to(map_location) if isinstance(map_location, (str, torch.device)) else encoder


def init_from(model: FabNet, state: dict, *, path: str = "checkpoint") -> list[str]:
    """Load encoder and flow decoder (and the confidence decoder when both have one) from ``state``.

    For the K-source stage started from the 1-source model: the confidence decoder stays new when
    the checkpoint has none. Returns the names of the loaded submodules.
    """
    check_compatible(state, size=model.size, width=model.width, path=path, arg="--init")
    weights = state["model"]
    loaded = []
    for name in ("encoder", "flow_decoder", "confidence_decoder"):
        module = getattr(model, name)
        sub = {k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(name + ".")}
        if module is None or not sub:
            continue
        module.load_state_dict(sub)
        loaded.append(name)
    return loaded
