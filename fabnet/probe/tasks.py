"""The four probe tasks and how they are scored (their targets: fabnet.data.targets).

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

import numpy as np

from fabnet.data.targets import TASKS, TaskData, check_task, task_targets
from fabnet.probe.metrics import multiclass_auc, multilabel_auc, nme_iod, pose_mae

MAIN_METRIC = {"landmarks": "nme_iod_pct", "pose": "mae_deg", "expression": "auc_mean", "attributes": "auc_mean"}
LOWER_IS_BETTER = {"nme_iod_pct": True, "mae_deg": True, "auc_mean": False}
KIND = {"landmarks": "regression", "pose": "regression", "expression": "multiclass", "attributes": "multilabel"}
DEFAULT_POSE_NAMES = ("yaw", "pitch", "roll")
DEFAULT_OUTER_EYE_CORNERS = (6, 9)


def evaluate(
    task: str,
    pred: np.ndarray,
    y: np.ndarray,
    *,
    pose_names=DEFAULT_POSE_NAMES,
    class_names=None,
    outer_eye_corners=DEFAULT_OUTER_EYE_CORNERS,
) -> dict[str, float]:
    """Test metrics of ``task`` for predictions ``pred`` (probe output) against targets ``y``.

    landmarks: pred, y (N, 2L) normalised coordinates -> ``nme_iod_pct`` (mean over faces) and
        ``nme_iod_pct_median``. pose: (N, 3) degrees -> ``mae_<angle>`` and their mean ``mae_deg``.
    expression: pred (N, C) probabilities, y (N,) -> ``auc_<class>`` (one-vs-rest), ``auc_mean``,
        ``accuracy``. attributes: pred, y (N, A) -> ``auc_<attr>``, ``auc_mean``.
    The mean AUC skips classes without both positives and negatives in the test split.
    """
    check_task(task)
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
