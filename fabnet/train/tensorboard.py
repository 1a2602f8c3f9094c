"""TensorBoard event files beside metrics.jsonl: ``tensorboard --logdir RUN/tensorboard``.

Every record written to metrics.jsonl is also written as scalars (``SCALARS`` lists which), and
each figure step adds the sample panel (target | sources | generated, one row per sample) as an
image. A resumed run purges the events after its checkpoint's step, as metrics.jsonl drops its
records, so the curves do not fold back on themselves. Without the ``tensorboard`` package the
run goes on without event files and says so once.
"""

from __future__ import annotations

import os
import warnings

import torch

# metrics.jsonl kind -> [(record key, TensorBoard tag)]
SCALARS = {
    "train": [
        ("loss", "train/loss_window"),
        ("loss_batch", "train/loss_batch"),
        ("lr", "train/lr"),
        ("samples_per_s", "train/samples_per_s"),
    ],
    "val": [("val_loss", "val/loss"), ("best", "val/best"), ("zero_flow_loss", "val/no_warp_loss")],
}
SUBDIR = "tensorboard"


class TensorBoardLog:
    """Scalars and sample panels for RUN/tensorboard (rank 0 only: ``enabled``)."""

    def __init__(self, run_dir: str, enabled: bool, resume_step: int | None = None):
        self.writer = None
        self.dir = os.path.join(run_dir, SUBDIR)
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # torch's wrapper raises this when the tensorboard package is missing
            warnings.warn(
                f"no TensorBoard event files: {err} (pip install tensorboard); metrics.jsonl is written as always",
                stacklevel=2,
            )
            return
        # The checkpoint's own step is kept (as in metrics.jsonl); what a stopped run logged after it
        # is replaced by the resumed run. flush_secs 10: a killed run loses at most 10 s of curves
        # (SummaryWriter's default is 120).
        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(log_dir=self.dir, purge_step=purge, flush_secs=10)

    def record(self, record: dict) -> None:
        """The scalars of one metrics.jsonl record (others are ignored)."""
        if self.writer is None or "step" not in record:
            return
        step = int(record["step"])
        for key, tag in SCALARS.get(record.get("kind"), ()):
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag, float(value), step)
        if record.get("kind") == "train" and "window" in record:
            lo, hi = record["window"]
            self.writer.add_scalar("curriculum/window_low", float(lo), step)
            self.writer.add_scalar("curriculum/window_high", float(hi), step)
        if record.get("kind") == "val":
            self.writer.flush()

    def panel(self, step: int, target: torch.Tensor, sources: torch.Tensor, generated: torch.Tensor) -> None:
        """One image: per sample a row target (3, S, S) | K sources | generated, values in [0, 1]."""
        if self.writer is None:
            return
        self.writer.add_image("samples", sample_panel(target, sources, generated), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def sample_panel(target: torch.Tensor, sources: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """(3, B*S, (K+2)*S) from target (B, 3, S, S), sources (B, K, 3, S, S), generated (B, 3, S, S)."""
    b, k = sources.shape[:2]
    columns = [target, *sources.unbind(1), generated]
    rows = torch.cat([c.detach().float().cpu() for c in columns], dim=3)  # (B, 3, S, (K+2)S)
    return rows.permute(1, 0, 2, 3).reshape(3, -1, rows.shape[3]).clamp(0, 1)


__all__ = ["TensorBoardLog", "sample_panel", "SCALARS"]
