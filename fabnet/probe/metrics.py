"""Evaluation metrics of the linear probes, in plain numpy.

- ``nme_iod``: landmark error normalised by the inter-ocular distance (300-W / MAFL style).
- ``pose_mae``: mean absolute error per angle, in the unit of the inputs (degrees here).
- ``roc_auc``: area under the ROC curve from the Mann-Whitney U statistic with mid-ranks, so
  tied scores count one half (the same value as the trapezoidal ROC area); ``multiclass_auc``
  (one-vs-rest) and ``multilabel_auc`` apply it per class.

Every function takes arrays (numpy or anything ``np.asarray`` accepts) and ignores NaN labels
where the docstring says so, because real label tables leave cells empty.
"""

from __future__ import annotations

import numpy as np


def interocular_distance(landmarks: np.ndarray, eye_corners: tuple[int, int]) -> np.ndarray:
    """(N,) distance between the two ``eye_corners`` landmarks of each face; landmarks: (N, L, 2)."""
    lm = np.asarray(landmarks, np.float64)
    a, b = eye_corners
    return np.linalg.norm(lm[:, a] - lm[:, b], axis=-1)


def nme_iod(pred: np.ndarray, target: np.ndarray, eye_corners: tuple[int, int]) -> np.ndarray:
    """(N,) per-face landmark error in percent of the inter-ocular distance.

    pred, target: (N, L, 2) in any common unit (pixels, normalised coordinates): the ratio does
    not depend on it. Per face: mean over the L landmarks of the Euclidean error, divided by
    the distance between the ``eye_corners`` of ``target`` (outer corners for 300-W / MAFL).
    Faces whose inter-ocular distance is 0 or NaN give NaN.
    """
    pred = np.asarray(pred, np.float64)
    target = np.asarray(target, np.float64)
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred and target must both be (N, L, 2); got {pred.shape} and {target.shape}")
    err = np.linalg.norm(pred - target, axis=-1).mean(axis=1)
    iod = interocular_distance(target, eye_corners)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(iod > 0, 100.0 * err / iod, np.nan)


def pose_mae(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(A,) mean absolute error per angle; pred, target: (N, A). Rows with a NaN target are skipped per angle."""
    pred = np.asarray(pred, np.float64)
    target = np.asarray(target, np.float64)
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"pred and target must both be (N, A); got {pred.shape} and {target.shape}")
    return np.nanmean(np.abs(pred - target), axis=0)


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x with ties given the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Start index of each run of equal values, and the mean rank of that run.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    mean_rank = (starts + 1 + ends) / 2.0  # ranks start+1 .. end, averaged
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (N,), ties counted as 1/2.

    AUC = P(score of a random positive > score of a random negative) + 0.5 P(equal), computed
    as the Mann-Whitney U from mid-ranks in O(N log N). NaN labels are ignored. Returns NaN
    when only one class is present (the area is undefined).
    """
    y = np.asarray(labels, np.float64).reshape(-1)
    s = np.asarray(scores, np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores must have the same length; got {y.shape} and {s.shape}")
    keep = ~np.isnan(y)
    y, s = y[keep] > 0.5, s[keep]
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _midranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def multiclass_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(C,) one-vs-rest AUC per class; labels: (N,) ints in [0, C) (negative = unknown), scores: (N, C)."""
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, np.float64)
    if s.ndim != 2 or s.shape[0] != len(y):
        raise ValueError(f"scores must be (N, C) with N = len(labels) = {len(y)}; got {s.shape}")
    keep = y >= 0
    return np.array([roc_auc((y[keep] == c).astype(np.float64), s[keep, c]) for c in range(s.shape[1])])


def multilabel_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(A,) AUC per column; labels: (N, A) 0/1 (NaN = unknown), scores: (N, A)."""
    y = np.asarray(labels, np.float64)
    s = np.asarray(scores, np.float64)
    if y.shape != s.shape or y.ndim != 2:
        raise ValueError(f"labels and scores must both be (N, A); got {y.shape} and {s.shape}")
    return np.array([roc_auc(y[:, a], s[:, a]) for a in range(y.shape[1])])


__all__ = ["interocular_distance", "multiclass_auc", "multilabel_auc", "nme_iod", "pose_mae", "roc_auc"]
