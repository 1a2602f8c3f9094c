"""The PIL backend: a torch DataLoader whose workers decode, crop and resize whole batches.

Each worker item is a whole batch (``batch_size=None`` in the DataLoader), so there is one
inter-process message per batch instead of B, and no collate. Workers return uint8 and the
main process converts to float: a quarter of the shared-memory traffic (at B=32, K=3, S=256 a
float batch is 100 MB, uint8 25 MB).

Resampling is Pillow's bilinear filter over the crop box, which widens its support when
shrinking (antialiased) like DALI's linear resize with ``antialias=True``. When the crop is at
least twice the output size the JPEG is first decoded at 1/2, 1/4 or 1/8 scale
(``Image.draft``, the DCT-domain downscale of libjpeg), which costs a quarter of the decode per
halving; the result differs from a full decode + resize by a little extra blur.
"""

from __future__ import annotations

import numpy as np
import torch

from fabnet.data.bad_frames import BadFrames
from fabnet.data.files import open_image
from fabnet.data.sampling import Sample


def read_crop(
    path: str,
    box: tuple[int, int, int, int],
    size: int,
    draft: bool = True,
    indexed_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode ``path``, crop ``box`` (x0, y0, x1, y1), resize to (size, size): (S, S, 3) uint8.

    indexed_size: (width, height) the box was drawn for; a file replaced by one of another size
    since indexing is cropped at the same relative place of its real size.
    """
    from PIL import Image

    with open_image(path) as im:  # a regular file of bounded size and pixels (fabnet.data.files)
        w0, h0 = im.size
        if indexed_size and all(indexed_size) and (w0, h0) != tuple(indexed_size):
            fx, fy = w0 / indexed_size[0], h0 / indexed_size[1]
            box = (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)
        side = box[2] - box[0]
        if draft and im.format == "JPEG" and side >= 2 * size:
            im.draft("RGB", (max(1, im.size[0] * size // side), max(1, im.size[1] * size // side)))
        s = im.size[0] / w0
        im = im.convert("RGB")
        out = im.resize((size, size), Image.BILINEAR, box=tuple(v * s for v in box), reducing_gap=None)
    return np.asarray(out)


class BatchDataset(torch.utils.data.Dataset):
    """Item ``i`` = batch ``i`` of a plan: dict of ``frames`` (B, K + 1, 3, S, S) uint8 and names."""

    def __init__(self, batches: list[list[Sample]], size: int, draft: bool = True):
        self.batches = batches
        self.size = size
        self.draft = draft

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        batch = self.batches[i]
        k1 = len(batch[0].frames)
        out = np.empty((len(batch), k1, self.size, self.size, 3), np.uint8)
        good, bad = [], []
        for b, sample in enumerate(batch):
            for k, rec in enumerate(sample.frames):
                try:
                    out[b, k] = read_crop(rec.path, sample.box, self.size, self.draft, (rec.width, rec.height))
                except Exception as err:  # a file broken after indexing: never end the epoch for it
                    bad.append((rec.path, f"{type(err).__name__}: {err}"))
                    break
            else:
                good.append(b)
        # Reported to the main process, which warns once per file and counts (bad_frames).
        result = {"bad": bad, "skipped": len(batch) - len(good)}
        if not good:
            return {**result, "frames": None}
        order = [b if b in good else good[j % len(good)] for j, b in enumerate(range(len(batch)))]
        frames = torch.from_numpy(out[order]).permute(0, 1, 4, 2, 3).contiguous()
        return {
            **result,
            "frames": frames,
            "identity": [batch[b].frames[0].identity for b in order],
            "paths": [[r.path for r in batch[b].frames] for b in order],
            "box": torch.tensor([batch[b].box for b in order], dtype=torch.int64),
        }


def iterate(
    batches: list[list[Sample]],
    size: int,
    *,
    num_workers: int,
    device: torch.device,
    draft: bool = True,
    bad_frames: BadFrames | None = None,
):
    """Yield loader dicts (float32 in [0, 1]) for the given batches of one epoch; unreadable
    frames go to ``bad_frames`` (a batch with no readable sample is left out)."""
    loader = torch.utils.data.DataLoader(
        BatchDataset(batches, size, draft),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if num_workers > 0 else None,
    )
    for item in loader:
        bad, skipped = item.pop("bad"), item.pop("skipped")
        if bad_frames is not None and (bad or skipped):
            bad_frames.add(bad, skipped)
        if item["frames"] is None:
            continue
        frames = item.pop("frames").to(device, non_blocking=True).float().div_(255.0)
        item["target"] = frames[:, 0]
        item["sources"] = frames[:, 1:]
        yield item
