"""Checkpoint files: atomic writes, configuration checks, loading the encoder for probes.

A checkpoint is a ``torch.save``d dict:

    format        "fabnet-checkpoint/1"
    model_config  {"size", "num_sources", "embedding_dim", "width", "confidence_range"}: rebuilds
                  ``FabNet`` (files without "width" were written at the default, 64; without
                  "confidence_range", with the paper's tanh logits, 1)
    model         FabNet state dict (unwrapped: no DDP "module." prefix)
    step, epoch   optimiser steps done; epoch the data loader is in
    batch_in_epoch  batches of ``epoch`` already consumed (the data position)
    optimizer, scheduler, curriculum   their state dicts (training checkpoints)
    rng           {"torch", "numpy", "python", "cuda"} generator states of rank 0, as tensors
                  and plain values (``rng_state`` / ``set_rng_state`` in fabnet.train.state)
    train_config  the TrainConfig as a dict
    best_val      best validation loss so far (inf before the first validation)

Only ``format``, ``model_config`` and ``model`` are needed to load a model.

Files are read with ``torch.load(weights_only=True)``: tensors, numbers, strings and containers
only, so that a crafted file cannot run code when it is loaded. Files written before the numpy
generator state was stored as plain values hold it as a numpy array; exactly the numpy types
that array needs are allowed besides (``_LEGACY_NUMPY_GLOBALS``), nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import shutil
import signal
import tempfile
import threading

import numpy as np
import torch

from fabnet.model.fabnet import PAPER_CONFIDENCE_RANGE, FabNet
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
    # mkstemp creates the file 0600; a checkpoint gets the permissions any new file would get.
    os.fchmod(fd, 0o666 & ~_umask())
    try:
        with _signals_deferred(), os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _cut_short(err):
            raise CheckpointWriteError(path, err) from None
        raise
    return path


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT / SIGTERM until the block ends, then deliver them: a Ctrl-C inside torch.save
    surfaced as a short write ("unexpected pos"), and a checkpoint write takes well under a second."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for sig in received:
            os.kill(os.getpid(), sig)


class CheckpointWriteError(OSError):
    """A checkpoint write cut short (no space left, a file-size limit); the old file is kept."""

    def __init__(self, path: str, cause: BaseException):
        folder = os.path.dirname(path)
        try:
            free = f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free there"
        except OSError:
            free = "free space unknown"
        reason = getattr(cause, "strerror", None) or "the write was cut short"
        super().__init__(
            getattr(cause, "errno", None) or errno.ENOSPC,
            f"no space left on device writing {path} ({reason}: the disk is full or a "
            f"file-size limit was reached; {free}); the previous checkpoint there, if any, "
            "is kept",
        )

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno N]"
        return self.strerror


def _cut_short(err: BaseException) -> bool:
    """Whether a failed torch.save ran out of room: an OSError of a full disk or a size limit, or
    torch's own wording for the same (its writer reports a short write as "unexpected pos")."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    return isinstance(err, RuntimeError) and ("unexpected pos" in str(err) or "file write failed" in str(err))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# What np.random.get_state()'s array pickles as (files written before the state became a list).
_LEGACY_NUMPY_GLOBALS = [np.ndarray, np.dtype, type(np.dtype(np.uint32))]
try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct
_LEGACY_NUMPY_GLOBALS.append(_reconstruct)

# torch.load's wording varies by version: "Unsupported global: GLOBAL a.b" (2.4 - 2.5),
# "unsupported GLOBAL a.b whose module a is blocked" (2.6 on).
_UNSUPPORTED_GLOBAL = re.compile(r"(?i)unsupported(?: global:)? GLOBAL ([\w.]+)")


class UnsafeCheckpointError(ValueError):
    """A checkpoint that would need arbitrary Python objects (and so could run code) to load."""


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """The checkpoint dict at ``path``; FileNotFoundError/ValueError with what to do next.

    Raises UnsafeCheckpointError, naming the offending type, for a file that holds anything but
    tensors, numbers, strings and containers: it is not unpickled.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"checkpoint not found: {path!r} (pass the path of a .pt file written by "
            "`fabnet train`, e.g. RUN/checkpoints/last.pt)"
        )
    try:
        with torch.serialization.safe_globals(_LEGACY_NUMPY_GLOBALS):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = _UNSUPPORTED_GLOBAL.search(str(err))
        if found is None:  # not a refusal: bytes that are no checkpoint at all
            raise ValueError(
                f"{path!r} is not a readable fabnet checkpoint (torch.load failed: "
                f"{err}); was it cut off while being copied?"
            ) from err
        offending = found.group(1)
        raise UnsafeCheckpointError(
            f"{path!r} refused: it holds {offending}, which only unpickling arbitrary code could "
            "rebuild; fabnet checkpoints hold tensors, numbers, strings and containers only. If you "
            "wrote this file yourself and trust it, re-save it without that object (load it with "
            "torch.load(path, weights_only=False) and torch.save only what fabnet needs)"
        ) from None
    except Exception as err:  # truncated or foreign bytes: torch.load's own message names neither file nor cause
        raise ValueError(
            f"{path!r} is not a readable fabnet checkpoint (torch.load failed: {type(err).__name__}: "
            f"{err}); was it cut off while being copied?"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise ValueError(f"{path!r} is not a fabnet checkpoint (expected a dict with format={FORMAT!r})")
    return state


def check_compatible(state: dict, *, size: int, num_sources: int | None = None, width: int | None = None,
                     path: str = "checkpoint", arg: str = "--resume") -> None:  # fmt: skip
    """ValueError naming the argument when a checkpoint was trained for another size, K or width."""
    cfg = state["model_config"]
    trained_width = checkpoint_width(state)
    if width is not None and trained_width != width:
        raise ValueError(
            f"{arg} {path!r} was trained with --width {trained_width}, but --width is {width}; "
            f"pass --width {trained_width} or another checkpoint"
        )
    if cfg["size"] != size:
        raise ValueError(
            f"{arg} {path!r} was trained with --size {cfg['size']}, but --size is {size}; "
            f"pass --size {cfg['size']} or another checkpoint"
        )
    if num_sources is not None and cfg["num_sources"] != num_sources:
        raise ValueError(
            f"{arg} {path!r} was trained with --sources {cfg['num_sources']}, but --sources is "
            f"{num_sources}; pass --sources {cfg['num_sources']} or another checkpoint"
        )


def checkpoint_width(state: dict) -> int:
    """The network width a checkpoint was trained with (64 for files written before it was stored)."""
    return int(state["model_config"].get("width", DEFAULT_WIDTH))


def build_model(state: dict, **kwargs) -> FabNet:
    """A FabNet with the checkpoint's configuration and weights (``kwargs``: op_backend etc.)."""
    # Files written before confidence_range was stored used the paper's tanh logits (r = 1).
    config = {"confidence_range": PAPER_CONFIDENCE_RANGE, **state["model_config"], "width": checkpoint_width(state)}
    model = FabNet(**config, **kwargs)
    model.load_state_dict(state["model"])
    return model


def load_encoder(checkpoint_path: str, map_location="cpu") -> Encoder:
    """The trained encoder of a checkpoint: eval mode, requires_grad False. (B, 3, S, S) -> (B, 256)."""
    state = load_checkpoint(checkpoint_path, map_location)
    cfg = state["model_config"]
    encoder = Encoder(cfg["size"], cfg.get("embedding_dim", 256), width=checkpoint_width(state))
    prefix = "encoder."
    encoder.load_state_dict({k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)})
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
        sub = {k[len(name) + 1 :]: v for k, v in weights.items() if k.startswith(name + ".")}
        if module is None or not sub:
            continue
        missing, unexpected = _key_mismatch(module.state_dict(), sub)
        if missing or unexpected:
            raise ValueError(
                f"--init {path!r}: its {name} does not fit this model's: missing "
                f"{_few(missing)}, unexpected {_few(unexpected)}"
            )
        module.load_state_dict(sub)
        loaded.append(name)
    if "encoder" not in loaded or "flow_decoder" not in loaded:
        missing, unexpected = _key_mismatch(model.state_dict(), weights)
        raise ValueError(
            f"--init {path!r} holds no FAb-Net encoder and flow decoder (loaded: {_few(loaded)}); "
            f"missing {_few(missing)}, unexpected {_few(unexpected)}; pass a checkpoint written by "
            "`fabnet train`"
        )
    return loaded


def _key_mismatch(expected: dict, given: dict) -> tuple[list[str], list[str]]:
    """(keys of ``expected`` absent from ``given``, keys of ``given`` not in ``expected``); keys
    of both whose tensors differ in shape count as missing."""
    missing = [k for k, v in expected.items() if k not in given or tuple(given[k].shape) != tuple(v.shape)]
    unexpected = [k for k in given if k not in expected]
    return missing, unexpected


def _few(names: list[str], count: int = 4) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - count} more" if len(names) > count else ""
    return ", ".join(names[:count]) + more
