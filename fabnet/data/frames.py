"""``load_frames``: single frames as a tensor, for embedding extraction (no augmentation)."""

from __future__ import annotations

import numpy as np
import torch

from fabnet.data.files import open_image
from fabnet.data.pil_backend import read_crop
from fabnet.data.sampling import crop_box


def load_frames(paths, size: int, crop="center") -> torch.Tensor:
    """(N, 3, S, S) float32 RGB in [0, 1], the same pixels the loaders give for that crop.

    paths: N image paths. size: S. crop: "center" (the centred 180/256 square, the scale the
    model saw in training, default), "full" (the largest centred square) or a centred fraction.
    Landmarks map into these pixels with ``fabnet.data.sampling.crop_landmarks``.
    """
    if crop == "random":
        raise ValueError("load_frames takes a fixed crop ('center', 'full' or a fraction), got 'random'")
    paths = list(paths)
    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(paths):
        with open_image(p) as im:
            box = crop_box(im.size[0], im.size[1], crop)
        out[i] = read_crop(p, box, size)
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
