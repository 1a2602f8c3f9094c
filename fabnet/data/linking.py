"""Face detections per sampled frame -> face tracks: linking, shot cuts, gap filling, smoothing, square crops.

Plain NumPy, so every rule is tested without a video or a detector (tests/data/test_linking.py).

A track links a detection in sample ``i`` to the track's box in its last sample when their overlap
(IoU) is at least ``min_iou`` and their sides differ by at most ``max_size_ratio``; the best overlaps
are matched first. A track survives ``max_gap`` samples without a detection (the cascade misses a
frame now and then: the gap is filled by linear interpolation), and ends at a shot cut whatever the
overlap, because the face on the other side of a cut is a different shot and often a different person.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# A face moves less than half its width between samples at 5 per second in talking-head video: IoU
# of two equal boxes shifted by half a side is 1/3.
MIN_IOU = 0.3
MAX_SIZE_RATIO = 1.5
# Mean absolute difference of 32 x 32 grey thumbnails (0..1) between consecutive samples. On
# scikit-image's astronaut photograph (320 x 240 frames), a pan of 1 / 4 / 8 / 16 px between samples
# gives 0.010 / 0.040 / 0.074 / 0.127; cutting to another photograph (coffee) gives 0.27. 0.12 takes
# pans up to about 5 % of the frame's width per sample (25 % a second at 5 samples/s) as one shot; a
# faster whip pan splits the track, which costs frames but never joins two shots.
CUT_THRESHOLD = 0.12
THUMB = 32


@dataclass
class Track:
    """One face track: ``samples`` (n,) sample indices from first to last detection, ``boxes`` (n, 4)
    square crop boxes ``x0, y0, x1, y1`` in frame pixels, ``detected`` (n,) whether the sample had
    its own detection (False: interpolated), ``scores`` (n,) the detector's score (nan if none)."""

    samples: np.ndarray
    boxes: np.ndarray
    detected: np.ndarray
    scores: np.ndarray


@dataclass
class _Open:
    samples: list = field(default_factory=list)
    raw: list = field(default_factory=list)  # (x0, y0, x1, y1)
    scores: list = field(default_factory=list)
    misses: int = 0


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """A (THUMB, THUMB) grey thumbnail in [0, 1] of an RGB uint8 frame (H, W, 3): block means."""
    grey = frame.astype(np.float32).mean(axis=2) / 255.0
    h, w = grey.shape
    block = (np.arange(h) * THUMB // h)[:, None] * THUMB + (np.arange(w) * THUMB // w)[None, :]
    sums = np.bincount(block.ravel(), grey.ravel(), THUMB * THUMB)
    counts = np.bincount(block.ravel(), minlength=THUMB * THUMB)
    return (sums / np.maximum(counts, 1)).reshape(THUMB, THUMB)


def is_cut(previous: np.ndarray | None, current: np.ndarray, threshold: float = CUT_THRESHOLD) -> bool:
    """A shot cut between two samples: their thumbnails' mean absolute difference above ``threshold``."""
    return previous is not None and float(np.abs(current - previous).mean()) > threshold


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Overlap of box ``a`` (4,) with each of ``b`` (N, 4), boxes ``x0, y0, x1, y1``: (N,)."""
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def link(
    detections: list[np.ndarray],
    cuts: list[bool],
    *,
    min_iou: float = MIN_IOU,
    max_size_ratio: float = MAX_SIZE_RATIO,
    max_gap: int = 5,
    min_length: int = 5,
    smooth: int = 2,
    margin: float = 0.25,
) -> list[Track]:
    """Tracks from ``detections[i]`` (N_i, 5: x0, y0, x1, y1, score) of sample ``i``; ``cuts[i]``: a
    shot cut just before sample ``i``. A track must hold ``min_length`` detections. Its boxes are
    linearly interpolated across gaps, smoothed by a centred moving average of half-width ``smooth``
    samples (narrowed at the ends, so a steady pan or zoom is followed without lag) over centre and
    side, then squared: side = max(w, h) * (1 + 2 * margin). Ordered by first sample."""
    if len(detections) != len(cuts):
        raise ValueError(f"detections and cuts must have one entry per sample, got {len(detections)} and {len(cuts)}")
    finished: list[_Open] = []
    active: list[_Open] = []
    for i, (dets, cut) in enumerate(zip(detections, cuts)):
        dets = np.asarray(dets, np.float64).reshape(-1, 5)
        if cut:
            finished += active
            active = []
        matched_tracks, matched_dets = _match(active, dets, min_iou, max_size_ratio)
        still = []
        for t, track in enumerate(active):
            if t in matched_tracks:
                d = dets[matched_tracks[t]]
                track.samples.append(i)
                track.raw.append(d[:4])
                track.scores.append(d[4])
                track.misses = 0
                still.append(track)
            elif track.misses + 1 > max_gap:
                finished.append(track)
            else:
                track.misses += 1
                still.append(track)
        for j in range(len(dets)):
            if j not in matched_dets:
                still.append(_Open([i], [dets[j, :4]], [dets[j, 4]]))
        active = still
    finished += active
    tracks = [_finish(t, smooth, margin) for t in finished if len(t.samples) >= min_length]
    return sorted(tracks, key=lambda t: int(t.samples[0]))


def _match(active, dets, min_iou, max_size_ratio) -> tuple[dict, set]:
    """Greedy best-overlap matching: {track index: detection index} and the matched detections."""
    pairs = []
    for t, track in enumerate(active):
        if len(dets) == 0:
            break
        last = track.raw[-1]
        overlaps = iou(last, dets[:, :4])
        side = max(last[2] - last[0], last[3] - last[1])
        sides = np.maximum(dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1])
        ratio = np.maximum(sides / side, side / sides)
        for j in np.flatnonzero((overlaps >= min_iou) & (ratio <= max_size_ratio)):
            pairs.append((overlaps[j], t, int(j)))
    matched_tracks, matched_dets = {}, set()
    for _, t, j in sorted(pairs, reverse=True):
        if t not in matched_tracks and j not in matched_dets:
            matched_tracks[t] = j
            matched_dets.add(j)
    return matched_tracks, matched_dets


def _finish(track: _Open, smooth: int, margin: float) -> Track:
    known = np.asarray(track.samples)
    raw = np.asarray(track.raw)
    samples = np.arange(known[0], known[-1] + 1)
    # centre x, centre y, side: interpolated over the gaps
    cx = np.interp(samples, known, (raw[:, 0] + raw[:, 2]) / 2)
    cy = np.interp(samples, known, (raw[:, 1] + raw[:, 3]) / 2)
    side = np.interp(samples, known, np.maximum(raw[:, 2] - raw[:, 0], raw[:, 3] - raw[:, 1]))
    cx, cy, side = (_centred_mean(v, smooth) for v in (cx, cy, side))
    half = side * (1 + 2 * margin) / 2
    boxes = np.stack([cx - half, cy - half, cx + half, cy + half], 1)
    detected = np.isin(samples, known)
    scores = np.full(len(samples), np.nan)
    scores[np.searchsorted(samples, known)] = track.scores
    return Track(samples, boxes, detected, scores)


def _centred_mean(values: np.ndarray, half_width: int) -> np.ndarray:
    """Moving mean over ``[i - k, i + k]`` with k = min(half_width, i, n - 1 - i): symmetric, so a
    linear trend passes unchanged, ends included."""
    n = len(values)
    c = np.concatenate([[0.0], np.cumsum(values)])
    i = np.arange(n)
    k = np.minimum(np.minimum(i, n - 1 - i), half_width)
    return (c[i + k + 1] - c[i - k]) / (2 * k + 1)


__all__ = ["Track", "link", "iou", "thumbnail", "is_cut", "MIN_IOU", "CUT_THRESHOLD"]
