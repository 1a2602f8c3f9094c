"""The four probe tasks: which labels they read from frame records and how they are scored.

=============  ==========  ======================================  ==============================
task           kind        target                                  test metrics
=============  ==========  ======================================  ==============================
landmarks      regression  (2L,) x, y in [0, 1] of the eval crop   ``nme_iod_pct`` (+ per face)
pose           regression  (3,) yaw, pitch, roll in degrees        ``mae_deg`` + ``mae_<angle>``
expression     multiclass  class index                             ``auc_mean`` + ``auc_<class>``
attributes     multilabel  (A,) 0 / 1                              ``auc_mean`` + ``auc_<attr>``
=============  ==========  ======================================  ==============================

Landmarks are given in pixels of the stored image; the probe sees the crop the encoder saw
(``box``), so they are moved into that crop and divided by its side ("normalised coordinates").
The inter-ocular error does not depend on that scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fabnet.probe.metrics import multiclass_auc, multilabel_auc, nme_iod, pose_mae

TASKS = ("landmarks", "pose", "expression", "attributes")
MAIN_METRIC = {"landmarks": "nme_iod_pct", "pose": "mae_deg", "expression": "auc_mean", "attributes": "auc_mean"}
LOWER_IS_BETTER = {"nme_iod_pct": True, "mae_deg": True, "auc_mean": False}
KIND = {"landmarks": "regression", "pose": "regression", "expression": "multiclass", "attributes": "multilabel"}
DEFAULT_POSE_NAMES = ("yaw", "pitch", "roll")
DEFAULT_OUTER_EYE_CORNERS = (6, 9)


@dataclass
class TaskData:
    """Targets of one task for a list of records, with the rows that have a label.

    keep: (N,) bool, True where the record has a usable label; y: targets of the kept rows.
    """

    task: str
    keep: np.ndarray
    y: np.ndarray


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}; got {task!r}")


def task_targets(task: str, records, boxes=None) -> TaskData:
    """Targets of ``task`` for ``records`` (objects with pose / landmarks / expression / attributes).

    boxes: (N, 4) x0, y0, x1, y1 of the square crop each frame was embedded from (landmarks
        only; None = the whole image, from ``record.width``).
    """
    _check_task(task)
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


def evaluate(task: str, pred: np.ndarray, y: np.ndarray, *, pose_names=DEFAULT_POSE_NAMES,
             class_names=None, outer_eye_corners=DEFAULT_OUTER_EYE_CORNERS) -> dict[str, float]:  # fmt: skip
    """Test metrics of ``task`` for predictions ``pred`` (probe output) against targets ``y``.

    landmarks: pred, y (N, 2L) normalised coordinates -> ``nme_iod_pct`` (mean over faces) and
        ``nme_iod_pct_median``. pose: (N, 3) degrees -> ``mae_<angle>`` and their mean ``mae_deg``.
    expression: pred (N, C) probabilities, y (N,) -> ``auc_<class>`` (one-vs-rest), ``auc_mean``,
        ``accuracy``. attributes: pred, y (N, A) -> ``auc_<attr>``, ``auc_mean``.
    The mean AUC skips classes without both positives and negatives in the test split.
    """
    _check_task(task)
    out: dict[str, float] = {"num_test": int(len(y))}
    if task == "landmarks":
        p = np.asarray(pred).reshape(len(pred), -1, 2)
        t = np.asarray(y).reshape(len(y), -1, 2)
        per_face = nme_iod(p, t, tuple(outer_eye_corners))
        out["nme_iod_pct"] = float(np.nanmean(per_face))
        out["nme_iod_pct_median"] = float(np.nanmedian(per_face))
        return out
    if task == "pose":
        mae = pose_mae(pred, y)
        for name, v in zip(pose_names, mae):
            out[f"mae_{name}"] = float(v)
        out["mae_deg"] = float(np.mean(mae))
        return out
    if task == "expression":
        aucs = multiclass_auc(y, pred)
        out["accuracy"] = float(np.mean(np.argmax(pred, axis=1) == y))
    else:
        aucs = multilabel_auc(y, pred)
    names = class_names or [str(i) for i in range(len(aucs))]
    for name, v in zip(names, aucs):
        out[f"auc_{name}"] = float(v)
    out["auc_mean"] = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")
    return out


__all__ = ["KIND", "LOWER_IS_BETTER", "MAIN_METRIC", "TASKS", "TaskData", "evaluate", "task_targets"]
