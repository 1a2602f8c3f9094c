"""What one epoch reads: per sample a track, K + 1 distinct frames of it and one crop box.

Both loader backends execute the same plan, so with the same seed and epoch they return the
same frames cropped by the same boxes (they differ only in JPEG decoding and resampling
rounding). The plan of an epoch is a pure function of (seed, epoch): shards take interleaved
slices of one global plan, which keeps them disjoint and equally long for distributed training.

Crop (the paper's augmentation): a square whose side is drawn from ``CROP_FRACTION`` = 170/256 to
190/256 of the image's shorter side, at a uniform position inside the image, then resized to S.
The SAME box is used for the target and its sources: a per-frame box would add a random global
zoom/shift between frames that the flow field would have to explain, but that carries no facial
attribute. ``crop="center"`` takes the centre square of side 180/256 (the training mean), so
evaluation sees faces at the training scale; ``crop="full"`` the whole (largest centred) square;
a float ``f`` the centred square of side ``f``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fabnet.data.labels import FrameRecord

CROP_FRACTION = (170 / 256, 190 / 256)  # 0.664 - 0.742 of the shorter side
CENTER_FRACTION = 180 / 256


@dataclass(frozen=True)
class Sample:
    """One training example: ``frames[0]`` is the target, ``frames[1:]`` the K sources."""

    frames: tuple[FrameRecord, ...]
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) pixels in the stored images, x1 exclusive


def parse_crop(crop) -> str | float:
    """Validate ``crop``: "random", "center", "full" or a float in (0, 1]."""
    if isinstance(crop, str):
        if crop not in ("random", "center", "full"):
            raise ValueError(f"crop must be 'random', 'center', 'full' or a fraction in (0, 1]; got {crop!r}")
        return crop
    if isinstance(crop, (int, float)) and 0 < crop <= 1:
        return float(crop)
    raise ValueError(f"crop must be 'random', 'center', 'full' or a fraction in (0, 1]; got {crop!r}")


def crop_box(width: int, height: int, crop, rng: np.random.Generator | None = None) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the square crop of a ``width`` x ``height`` image.

    crop: "random" (needs ``rng``; side and position drawn), "center", "full" or a fraction.
    """
    crop = parse_crop(crop)
    short = min(width, height)
    if crop == "random":
        frac = rng.uniform(*CROP_FRACTION)
        px, py = rng.random(), rng.random()
    else:
        frac = {"center": CENTER_FRACTION, "full": 1.0}.get(crop, crop)
        px = py = 0.5
    side = max(1, int(round(frac * short)))
    x0 = int(round(px * (width - side)))
    y0 = int(round(py * (height - side)))
    return x0, y0, x0 + side, y0 + side


def crop_landmarks(landmarks: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Landmarks (L, 2) in stored-image pixels -> pixels of the crop resized to ``size``."""
    x0, y0, x1, _ = box
    return (np.asarray(landmarks) - np.array([x0, y0], np.float32)) * (size / (x1 - x0))


def plan_epoch(
    tracks: list[list[FrameRecord]],
    num_sources: int,
    *,
    seed: int,
    epoch: int,
    length: int,
    shuffle: bool,
    crop,
    shard_id: int = 0,
    num_shards: int = 1,
) -> list[Sample]:
    """The samples of one epoch for one shard.

    tracks: lists of at least ``num_sources + 1`` frames each.
    length: samples in the epoch over all shards; tracks are visited in (shuffled) order,
        cycling when ``length`` exceeds their number.
    shuffle: a new track order, frame choice and crops per epoch; False repeats epoch 0's
        frames and crops with the tracks in index order (for validation).
    The frames of a track must share one image size (the box is computed on the target's). The
    plan is cut to a multiple of ``num_shards`` so every shard gets ``length // num_shards``
    samples.
    """
    # Without shuffling every epoch is the same (a fixed validation set): the epoch is ignored.
    rng = np.random.default_rng((seed, epoch if shuffle else 0))
    n = len(tracks)
    reps = -(-length // n)
    order = np.concatenate([rng.permutation(n) if shuffle else np.arange(n) for _ in range(reps)])[:length]
    per_shard = length // num_shards
    samples = []
    for j, ti in enumerate(order[: per_shard * num_shards]):
        track = tracks[ti]
        # Draw for every sample (also other shards') so the plan is identical on every rank.
        pick = rng.choice(len(track), num_sources + 1, replace=False)
        frames = tuple(track[k] for k in pick)
        box = crop_box(frames[0].width, frames[0].height, crop, rng)
        if j % num_shards == shard_id:
            samples.append(Sample(frames, box))
    return samples
