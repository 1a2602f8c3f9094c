"""Frames as the encoder sees them at evaluation time, and encoders loaded from any checkpoint.

``eval_boxes`` gives the square crop of each record (``crop="center"``: the centre square of
side 180/256, the mean of the training crops, so the probe sees faces at the training scale);
``load_crops`` reads, crops and resizes them to (N, 3, S, S) float32 with the pixel range of
the training loader (``record_crops``: both steps for a list of records); ``embed_records`` runs a
frozen encoder over them in batches.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from fabnet.data.sampling import crop_box


def eval_boxes(records, crop="center") -> np.ndarray:
    """(N, 4) int crop boxes x0, y0, x1, y1 in stored-image pixels (``crop``: "center", "full" or a fraction)."""
    return np.array([crop_box(r.width, r.height, crop) for r in records], np.int64).reshape(-1, 4)


def _to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return x.div_(255.0)  # [0, 1], the training loader's range


def load_crops(paths, boxes, size: int) -> torch.Tensor:
    """(N, 3, size, size) float32 in [0, 1]: each image cropped by its box and resized (bilinear).

    A file that cannot be decoded raises UnreadableFrame naming it (``read_crops`` skips it)."""
    images, bad = read_crops(paths, boxes, size)
    if bad:
        raise UnreadableFrame(f"cannot read frame {bad[0][1]}: {bad[0][2]}")
    return _to_tensor(images) if images else torch.zeros(0, 3, size, size)


class UnreadableFrame(OSError):
    """A frame that passed indexing but cannot be decoded."""


def read_crops(paths, boxes, size: int) -> tuple[list[np.ndarray], list[tuple[int, str, str]]]:
    """The (size, size, 3) uint8 crops of the readable files, and (index, path, why) of the
    others: a regular file within fabnet.data.files' bounds that PIL decodes, or a reason."""
    from PIL import Image

    from fabnet.data.files import open_image

    out, bad = [], []
    for i, (path, box) in enumerate(zip(paths, np.asarray(boxes).reshape(-1, 4))):
        try:
            with open_image(path) as im:
                im = im.convert("RGB").crop(tuple(int(v) for v in box))
                if im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                out.append(np.asarray(im, np.uint8))
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for broken data
            bad.append((i, path, f"{type(err).__name__}: {err}"))
    return out, bad


def record_crops(records, size: int, crop="center") -> torch.Tensor:
    """(N, 3, size, size) float32 in [0, 1]: the evaluation crop of each record (``eval_boxes``)."""
    return load_crops([r.path for r in records], eval_boxes(records, crop), size)


def load_encoder(path: str):
    """The frozen encoder (eval mode, no grad) of a FAb-Net or baseline checkpoint.

    Baselines (``fabnet.train.baselines``) write the same checkpoint format as training, with
    the encoder's weights under ``model["encoder.*"]``, so one loader serves every method.
    """
    from fabnet.model import load_encoder as _load

    return _load(path, map_location="cpu")


@torch.no_grad()
def embed_records(encoder, records, *, crop="center", batch_size: int = 128, progress: bool = False):
    """Embeddings of the readable ``records`` through a frozen ``encoder``.

    Returns (embeddings (M, D) float32 numpy, boxes (M, 4): the crop of each frame, needed to
    move its landmarks into the encoder's view, kept (M,): the indices into ``records`` of the
    frames embedded). A frame that cannot be decoded is left out with one DataWarning naming it,
    as the training loaders skip it.
    """
    from fabnet.data.labels import DataWarning, name_some

    encoder.eval()
    size = encoder.size
    boxes = eval_boxes(records, crop)
    chunks, kept, skipped = [], [], []
    rng = range(0, len(records), batch_size)
    if progress:
        from tqdm import tqdm

        rng = tqdm(rng, desc="embed", unit="batch")
    for i in rng:
        images, bad = read_crops([r.path for r in records[i : i + batch_size]], boxes[i : i + batch_size], size)
        missing = {j for j, _, _ in bad}
        kept += [i + j for j in range(min(batch_size, len(records) - i)) if j not in missing]
        skipped += [(path, why) for _, path, why in bad]
        if images:
            chunks.append(encoder(_to_tensor(images)).float().numpy())
    if skipped:
        named = name_some([f"{p} ({why})" for p, why in skipped], 10)
        warnings.warn(f"skipped {len(skipped)} unreadable frame(s): {named}", DataWarning, stacklevel=2)
    dim = getattr(encoder, "embedding_dim", 256)
    emb = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    kept = np.asarray(kept, np.int64)
    return emb, boxes[kept], kept


__all__ = ["UnreadableFrame", "embed_records", "eval_boxes", "load_crops", "load_encoder", "read_crops", "record_crops"]
