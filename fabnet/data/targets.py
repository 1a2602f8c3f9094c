"""Targets of the probe tasks from frame records: what each task reads from the labels.

=============  ==========================================
task           target
=============  ==========================================
landmarks      (2L,) x, y in [0, 1] of the eval crop
pose           (3,) yaw, pitch, roll in degrees
expression     class index
attributes     (A,) 0 / 1
=============  ==========================================

Landmarks are given in pixels of the stored image; the encoder sees the crop ``box``, so they are
moved into that crop and divided by its side ("normalised coordinates"). A data job, used by the
probes (fabnet.probe.tasks) and by the supervised baseline's training (fabnet.train).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TASKS = ("landmarks", "pose", "expression", "attributes")


@dataclass
class TaskData:
    """Targets of one task for a list of records, with the rows that have a label.

    keep: (N,) bool, True where the record has a usable label; y: targets of the kept rows.
    """

    task: str
    keep: np.ndarray
    y: np.ndarray


def check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}; got {task!r}")


def task_targets(task: str, records, boxes=None) -> TaskData:
    """Targets of ``task`` for ``records`` (objects with pose / landmarks / expression / attributes).

    boxes: (N, 4) x0, y0, x1, y1 of the square crop each frame was embedded from (landmarks
        only; None = the whole image, from ``record.width``).
    """
    check_task(task)
    n = len(records)
    if task == "pose":
        y = np.stack([np.asarray(r.pose, np.float64) for r in records]) if n else np.zeros((0, 3))
        keep = ~np.isnan(y).any(axis=1)
        return TaskData(task, keep, y[keep])
    if task == "expression":
        y = np.array([int(r.expression) for r in records], np.int64)
        keep = y >= 0
        return TaskData(task, keep, y[keep])
    if task == "attributes":
        widths = {len(r.attributes) for r in records}
        if len(widths) > 1:
            raise ValueError(f"records have different numbers of attributes: {sorted(widths)}")
        a = widths.pop() if widths else 0
        y = np.stack([np.asarray(r.attributes, np.float64) for r in records]) if n else np.zeros((0, a))
        keep = ~np.isnan(y).all(axis=1) if a else np.zeros(n, bool)
        return TaskData(task, keep, y[keep])
    # landmarks
    counts = {len(r.landmarks) for r in records}
    if len(counts) > 1:
        raise ValueError(f"records have different numbers of landmarks: {sorted(counts)}")
    num = counts.pop() if counts else 0
    lm = (
        np.stack([np.asarray(r.landmarks, np.float64).reshape(num, 2) for r in records]) if n else np.zeros((0, num, 2))
    )
    if boxes is None:
        boxes = np.array([[0, 0, r.width, r.width] for r in records], np.float64).reshape(-1, 4)
    boxes = np.asarray(boxes, np.float64)
    side = (boxes[:, 2] - boxes[:, 0])[:, None, None]
    lm = (lm - boxes[:, None, :2]) / side
    keep = ~np.isnan(lm).any(axis=(1, 2)) if num else np.zeros(n, bool)
    return TaskData(task, keep, lm[keep].reshape(int(keep.sum()), 2 * num))


__all__ = ["TASKS", "TaskData", "check_task", "task_targets"]
