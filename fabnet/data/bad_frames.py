"""Frames that break after indexing (deleted, truncated, replaced): skipped, named, counted.

Both loader backends replace a sample whose frames cannot be read by another sample of its
batch (a batch with no readable sample is dropped) and report the files here. Each file is
named in one warning; when the skipped samples of one epoch pass ``LIMIT`` of its samples the
epoch stops with ``TooManyBadFrames``, since the data root then no longer is what was indexed.
"""

from __future__ import annotations

import warnings

from fabnet.data.index import DataWarning

# 5 % of an epoch: a few broken files are survivable noise; more means the root changed under
# the run (a sync in progress, a disk failing) and training on the rest would be training on
# a different data set.
LIMIT = 0.05


class TooManyBadFrames(RuntimeError):
    """More than ``LIMIT`` of an epoch's samples had unreadable frames."""


class BadFrames:
    """The unreadable frames of one loader: ``add`` per batch, ``new_epoch`` per epoch."""

    def __init__(self, samples_per_epoch: int, limit: float = LIMIT):
        self.samples_per_epoch = max(int(samples_per_epoch), 1)
        self.limit = limit
        self.seen: dict[str, str] = {}  # path -> reason, over the loader's life
        self.skipped = 0  # samples skipped this epoch

    def new_epoch(self) -> None:
        self.skipped = 0

    def add(self, bad: list[tuple[str, str]], skipped_samples: int) -> None:
        """Record ``bad`` (path, reason) pairs and the samples they cost; warn once per path."""
        for path, reason in bad:
            if path not in self.seen:
                self.seen[path] = reason
                warnings.warn(
                    f"skipping unreadable frame {path} ({reason}); its sample is replaced", DataWarning, stacklevel=3
                )
        self.skipped += skipped_samples
        if self.skipped > self.limit * self.samples_per_epoch:
            examples = "; ".join(f"{p} ({r})" for p, r in list(self.seen.items())[:3])
            raise TooManyBadFrames(
                f"{self.skipped} of this epoch's {self.samples_per_epoch} samples had unreadable frames, more "
                f"than {self.limit:.0%}: the data root changed after it was indexed? e.g. {examples}"
            )
