"""A saved run configuration as the starting values of ``fabnet train``'s options.

``fabnet train --config RUN/config.json`` starts from the ``TrainConfig`` a run saved; ``--resume``
without ``--config`` starts from the one its checkpoint holds, so a run continues without retyping
its flags. Options given on the command line override the file. What belongs to one invocation and
not to a run's design (``resume``, ``overwrite``, ``stop_after``, ``progress``) is never taken
from a file.
"""

from __future__ import annotations

import dataclasses
import json
import os

# TrainConfig field -> (option's argparse dest, the option's value for the field's value). The
# fields missing here are spelled as their option (``lr`` is --lr).
RENAMED = {
    "num_sources": ("sources", lambda v: v),
    "val_at_start": ("no_initial_val", lambda v: not v),
    "figures": ("no_figures", lambda v: not v),
    "identity_init": ("random_init", lambda v: not v),
    "tensorboard": ("no_tensorboard", lambda v: not v),
}
NOT_CARRIED = ("resume", "overwrite", "stop_after", "progress")
# TrainConfig fields without a command-line option: carried from the file as they are.
FILE_ONLY = ("lr_factor", "figure_samples")


def read_config(path: str) -> dict:
    """The TrainConfig dict in ``path`` (a run's config.json); ValueError naming what is wrong."""
    from fabnet.train.config import TrainConfig

    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config {path!r} does not exist or is not a file")
    try:
        with open(path) as f:
            blob = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"--config {path!r} is not readable JSON: {err}") from None
    if not isinstance(blob, dict):
        raise ValueError(f"--config {path!r} must hold a JSON object of TrainConfig fields, got {type(blob).__name__}")
    blob.pop("fabnet_version", None)  # recorded by the run, not an option
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(blob) - fields)
    if unknown:
        raise ValueError(f"--config {path!r} has fields fabnet train does not know: {', '.join(unknown)}")
    return blob


def options_from_config(config: dict) -> tuple[dict, dict]:
    """(argparse dest -> value, file-only TrainConfig fields) for a TrainConfig dict."""
    options, extra = {}, {}
    for name, value in config.items():
        if name in NOT_CARRIED:
            continue
        if name in FILE_ONLY:
            extra[name] = value
        elif name in RENAMED:
            dest, to_option = RENAMED[name]
            options[dest] = to_option(value)
        else:
            options[name] = value
    return options, extra


__all__ = ["read_config", "options_from_config", "NOT_CARRIED"]
