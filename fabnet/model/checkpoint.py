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

A file is also checked before its contents are trusted: its zip records may not expand beyond
``MAX_EXPANSION`` times the file (torch.save stores them uncompressed; a deflated 255 KB record
can inflate to 256 MB) nor past the machine's memory; ``model_config`` must hold every key with
a value of the right type; the weights must be finite; and where a model is built from them
they must fit it. Each refusal is one ValueError naming the file and what is wrong.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import pickle
import re
import shutil
import signal
import tempfile
import threading
import zipfile

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


# torch.save stores records uncompressed; a little slack for files re-zipped by other tools.
MAX_EXPANSION = 4


def _check_expansion(path: str) -> None:
    """ValueError when loading ``path`` would allocate far more than the file holds (a
    decompression bomb) or more than the machine has; read from the zip directory alone."""
    if not zipfile.is_zipfile(path):
        return  # torch's legacy format: no compression, so no more than the file's size
    try:
        with zipfile.ZipFile(path) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise ValueError(f"{path!r} is not a readable fabnet checkpoint (its zip directory: {err})") from None
    size = os.path.getsize(path)
    limit = max(MAX_EXPANSION * size, size + 2**20)
    if expanded > limit:
        raise ValueError(
            f"{path!r} refused: its records expand to {expanded / 2**20:.0f} MiB from {size / 2**20:.1f} MiB on "
            f"disk ({expanded / max(size, 1):.0f}x; torch.save writes them uncompressed); it was not written "
            "by fabnet"
        )
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if expanded > memory:
        raise ValueError(
            f"{path!r} refused: loading it needs {expanded / 2**30:.1f} GiB, more than this machine's "
            f"{memory / 2**30:.1f} GiB"
        )


# model_config: key -> (type, check, what it must be). Older files may lack width and
# confidence_range (the defaults then apply, see build_model).
_CONFIG_FIELDS = {
    "size": (int, lambda v: 32 <= v <= 256 and v & (v - 1) == 0, "a power of two in [32, 256]"),
    "num_sources": (int, lambda v: v >= 1, "an integer >= 1"),
    "embedding_dim": (int, lambda v: 1 <= v <= 65536, "an integer in [1, 65536]"),
    "width": (int, lambda v: 1 <= v <= 4096, "an integer in [1, 4096]"),
    "confidence_range": (float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
}
_OPTIONAL_CONFIG = ("width", "confidence_range")


def _check_contents(state: dict, path: str) -> None:
    """ValueError naming what is malformed: model_config's keys and types, the weights' types
    and finiteness."""
    config = state.get("model_config")
    if not isinstance(config, dict):
        raise ValueError(f"{path!r} has no model_config dict (got {type(config).__name__}); it cannot rebuild a model")
    for key, (kind, ok, what) in _CONFIG_FIELDS.items():
        if key not in config:
            if key in _OPTIONAL_CONFIG:
                continue
            raise ValueError(f"{path!r}: model_config lacks {key!r} ({what})")
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or not ok(value):
            raise ValueError(f"{path!r}: model_config[{key!r}] must be {what}, got {value!r}")
    weights = state["model"]
    if not isinstance(weights, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in weights.items()):
        raise ValueError(f"{path!r}: 'model' must map parameter names to tensors")
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(
            f"{path!r} holds non-finite weights ({_few(bad, 3)}): its embeddings and metrics would be NaN; use "
            "an earlier checkpoint"
        )


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
    _check_expansion(path)
    try:
        with torch.serialization.safe_globals(_LEGACY_NUMPY_GLOBALS):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = _UNSUPPORTED_GLOBAL.search(str(err))
        if found is None:  # not a refusal: bytes that are no checkpoint at all
            raise ValueError(_unreadable(path, err)) from None
        offending = found.group(1)
        raise UnsafeCheckpointError(
            f"{path!r} refused: it holds {offending}, which only unpickling arbitrary code could "
            "rebuild; fabnet checkpoints hold tensors, numbers, strings and containers only. If you "
            "wrote this file yourself and trust it, re-save it without that object (load it with "
            "torch.load(path, weights_only=False) and torch.save only what fabnet needs)"
        ) from None
    except Exception as err:  # truncated or foreign bytes: torch.load's own message names neither file nor cause
        raise ValueError(_unreadable(path, err)) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise ValueError(f"{path!r} is not a fabnet checkpoint (expected a dict with format={FORMAT!r})")
    _check_contents(state, path)
    return state


def _unreadable(path: str, err: BaseException) -> str:
    """One line for bytes torch.load cannot read. torch's own text for them is several lines
    advising ``weights_only=False``, which would not help and is unsafe: only its cause is kept."""
    text = str(err)
    cause = re.search(r"WeightsUnpickler error: \s*(.+?)\s*(?:\n|$)", text)
    detail = cause.group(1) if cause else (text.strip().splitlines() or [type(err).__name__])[0]
    return (
        f"{path!r} is not a readable fabnet checkpoint ({type(err).__name__}: {detail[:120]}); was it cut off "
        "while being copied, or is it another kind of file?"
    )


def check_compatible(
    state: dict,
    *,
    size: int,
    num_sources: int | None = None,
    width: int | None = None,
    path: str = "checkpoint",
    arg: str = "--resume",
) -> None:
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


def build_model(state: dict, path: str = "checkpoint", **kwargs) -> FabNet:
    """A FabNet with the checkpoint's configuration and weights (``kwargs``: op_backend etc.);
    ``path`` names the file in errors."""
    # Files written before confidence_range was stored used the paper's tanh logits (r = 1).
    config = {"confidence_range": PAPER_CONFIDENCE_RANGE, **state["model_config"], "width": checkpoint_width(state)}
    model = FabNet(**config, **kwargs)
    _load_fitting(model, state["model"], path, state)
    return model


def _load_fitting(module: torch.nn.Module, weights: dict, path: str, state: dict) -> None:
    """``module.load_state_dict(weights)``, or one ValueError saying what does not fit."""
    missing, unexpected = _key_mismatch(module.state_dict(), weights)
    if missing or unexpected:
        config = state.get("model_config", {})
        raise ValueError(
            f"{path!r}: its weights do not fit the model its model_config describes ({config}): missing or "
            f"of another shape {_few(missing)}, unexpected {_few(unexpected)}"
        )
    module.load_state_dict(weights)


def encoder_from_state(state: dict, path: str = "checkpoint") -> Encoder:
    """The encoder of a loaded checkpoint, its weights in (train mode, as built); ``path`` names
    the file in errors."""
    cfg = state["model_config"]
    encoder = Encoder(cfg["size"], cfg.get("embedding_dim", 256), width=checkpoint_width(state))
    prefix = "encoder."
    weights = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    _load_fitting(encoder, weights, path, state)
    return encoder


def load_encoder(checkpoint_path: str, map_location="cpu") -> Encoder:
    """The trained encoder of a checkpoint: eval mode, requires_grad False. (B, 3, S, S) -> (B, 256)."""
    state = load_checkpoint(checkpoint_path, map_location)
    encoder = encoder_from_state(state, checkpoint_path)
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
