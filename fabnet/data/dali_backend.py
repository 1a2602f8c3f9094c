"""The DALI backend: decode, crop, resize and normalise in a DALI pipeline.

The epoch plan (``fabnet.data.sampling``) is fed through ``fn.external_source``: per batch,
K + 1 inputs of encoded JPEG bytes (target first) and, per sample, the crop box. Each input is
decoded, cut to the box and resized to S x S by ``fn.resize`` with an ROI (one antialiased
linear resampling, no intermediate crop copy), and turned into CHW float in [0, 1] by
``fn.crop_mirror_normalize``. The K sources are stacked with ``fn.stack`` into (K, 3, S, S)
per sample. ``DALIGenericIterator`` hands the outputs to PyTorch.

Decoding: on a GPU ``fn.decoders.image`` with ``device="mixed"`` (nvJPEG decodes whole frames
fast). On the CPU (``device_id=None``) ``fn.decoders.image_slice`` decodes only the box plus
a margin that covers the resampling filter's support, so the pixels equal those of a full
decode (the tests compare both paths): libjpeg-turbo skips the rows above and below and the
columns outside, and the paper's crop (170-190 of 256 px) is about half of the frame. Measured
on the 2-core benchmark machine at S = 256: ~1.4x the frames/s of decoding whole frames.

A pipeline is built once and reused when the previous epoch ran to its end (DALI prefetches the
next batches while the current ones are used, so the plan of the next epoch is set before the
iterator is reset). Building costs ~0.1 s on the CPU.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from fabnet.data.bad_frames import BadFrames, TooManyBadFrames
from fabnet.data.sampling import Sample

INSTALL_HINT = "pip install nvidia-dali-cuda130 (or pass backend='pil')"


def available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
        import nvidia.dali.plugin.pytorch  # noqa: F401
    except Exception:  # ImportError, or a broken install raising on import
        return False
    return True


def require() -> None:
    if not available():
        raise ImportError(f"backend='dali' needs NVIDIA DALI, which is not importable: {INSTALL_HINT}")


class _Feed:
    """The external-source callback: batch ``info.iteration`` of the current plan.

    Outputs: K + 1 lists of encoded frames, then for each of the K + 1 frames, per sample (all
    in (y, x) order, like DALI's HWC axes, float32) the decoded region's anchor and shape, and
    the crop box's start and end relative to that region. With ``margin=None`` (whole frames
    decoded) only the box's start and end, in frame pixels. Regions are per frame because a
    file replaced since indexing may have another size than its track's other frames.
    """

    def __init__(self, num_frames: int, size: int, margin: int | None):
        self.num_frames, self.size, self.margin = num_frames, size, margin
        self.per_frame = 2 if margin is None else 4  # region outputs of each frame
        self.num_outputs = num_frames * (1 + self.per_frame)
        self.batches: list[list[Sample]] = []
        self.known_bad: dict[str, str] = {}  # path -> reason: files DALI failed to decode
        # Per batch index: (sample order used, bad (path, reason) pairs, samples skipped, drop).
        self.report: dict[int, tuple[list[int], list[tuple[str, str]], int, bool]] = {}

    def region(self, sample: Sample, k: int, real: tuple[int, int]) -> np.ndarray:
        """(4, 2) float32: region anchor, region shape, box start, box end; rows (y, x).

        k: which frame of the sample; real: its (width, height) as stored now: a file replaced by
        one of another size since indexing is cropped at the same relative place of its real size."""
        rec = sample.frames[k]
        x0, y0, x1, y1 = sample.box
        if rec.width and rec.height and tuple(real) != (rec.width, rec.height):
            fx, fy = real[0] / rec.width, real[1] / rec.height
            x0, x1, y0, y1 = x0 * fx, x1 * fx, y0 * fy, y1 * fy
        start, end = np.array([y0, x0], np.float32), np.array([y1, x1], np.float32)
        full = np.array([real[1], real[0]], np.float32)
        if self.margin is None or not (full > 0).all():
            anchor, shape = np.zeros(2, np.float32), full
        else:
            # The linear filter reaches ``side / size`` source pixels when shrinking (antialias)
            # and 1 pixel when enlarging; 2 more absorb rounding.
            pad = np.ceil((x1 - x0) / self.size) + self.margin
            anchor = np.maximum(start - pad, 0)
            shape = np.minimum(end + pad, full) - anchor
        return np.stack([anchor, shape, start - anchor, end - anchor]).astype(np.float32)

    def _read(self, sample: Sample):
        """(encoded frames, their real sizes) of a sample, or (None, (path, reason))."""
        from PIL import Image

        encoded, real = [], []
        for rec in sample.frames:
            if rec.path in self.known_bad:
                return None, (rec.path, self.known_bad[rec.path])
            try:
                data = np.fromfile(rec.path, dtype=np.uint8)
                # The header only (~50 us): a missing, empty or foreign file fails here, before
                # DALI, whose own error names no file.
                with Image.open(io.BytesIO(data.tobytes())) as im:
                    size = im.size
            except Exception as err:
                return None, (rec.path, f"{type(err).__name__}: {err}")
            encoded.append(data)
            real.append(size)
        return encoded, real

    def __call__(self, info):
        if info.iteration >= len(self.batches):
            raise StopIteration
        batch = self.batches[info.iteration]
        read = [self._read(s) for s in batch]
        good = [b for b, (enc, _) in enumerate(read) if enc is not None]
        bad = [why for enc, why in read if enc is None]
        drop = not good
        if drop:  # DALI needs a batch: run a readable one of the epoch, and drop its output
            donor = next((s for other in self.batches for s in other if self._read(s)[0] is not None), None)
            if donor is None:
                raise RuntimeError(f"no frame of this epoch can be read; e.g. {bad[0][0]} ({bad[0][1]})")
            read, good = [self._read(donor)] * len(batch), list(range(len(batch)))
            batch = [donor] * len(batch)
        order = [b if b in good else good[j % len(good)] for j, b in enumerate(range(len(batch)))]
        self.report[info.iteration] = (order, bad, len(batch) - len(good) if not drop else len(batch), drop)
        outs = [[read[b][0][k] for b in order] for k in range(self.num_frames)]
        rows = (0, 1, 2, 3) if self.margin is not None else (2, 3)  # see region()
        for k in range(self.num_frames):
            regions = [self.region(batch[b], k, read[b][1][k]) for b in order]
            # DALI rejects strided arrays (fancy indexing can return Fortran order): keep rows dense.
            outs += [[np.ascontiguousarray(r[i]) for r in regions] for i in rows]
        return tuple(outs)


def _build(feed: _Feed, batch_size: int, size: int, num_threads: int, device_id, seed: int):
    from nvidia.dali import fn, pipeline_def, types

    gpu = device_id is not None
    slice_decode = feed.margin is not None
    num_extra = feed.num_outputs - feed.num_frames

    @pipeline_def(
        batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed, prefetch_queue_depth=2
    )
    def pipe():
        inputs = fn.external_source(
            source=feed,
            num_outputs=feed.num_outputs,
            batch=True,
            batch_info=True,
            dtype=[types.UINT8] * feed.num_frames + [types.FLOAT] * num_extra,
        )
        frames = []
        for k, enc in enumerate(inputs[: feed.num_frames]):
            region = inputs[feed.num_frames + k * feed.per_frame : feed.num_frames + (k + 1) * feed.per_frame]
            roi_start, roi_end = region[-2:]
            if slice_decode:
                anchor, shape = region[:2]
                img = fn.decoders.image_slice(
                    enc,
                    anchor,
                    shape,
                    axis_names="HW",
                    normalized_anchor=False,
                    normalized_shape=False,
                    output_type=types.RGB,
                )
            else:
                img = fn.decoders.image(enc, device="mixed" if gpu else "cpu", output_type=types.RGB)
            img = fn.resize(
                img,
                size=(size, size),
                roi_start=roi_start,
                roi_end=roi_end,
                roi_relative=False,
                interp_type=types.INTERP_LINEAR,
                antialias=True,
            )
            img = fn.crop_mirror_normalize(
                img, dtype=types.FLOAT, output_layout="CHW", mean=[0.0, 0.0, 0.0], std=[255.0, 255.0, 255.0]
            )
            frames.append(img)
        sources = fn.stack(*frames[1:]) if len(frames) > 2 else fn.expand_dims(frames[1], axes=0)
        return frames[0], sources

    p = pipe()
    p.build()
    return p


class DaliRunner:
    """Owns one pipeline + DALIGenericIterator; ``epoch(batches)`` yields loader dicts."""

    def __init__(
        self,
        num_frames: int,
        batch_size: int,
        size: int,
        *,
        num_threads: int,
        device: torch.device,
        seed: int,
        slice_decode: bool = True,
    ):
        """slice_decode: on the CPU decode only the crop box plus a margin (same pixels, faster);
        False decodes whole frames (the GPU path's plan, kept for comparison)."""
        require()
        self.batch_size, self.size, self.num_threads, self.seed = batch_size, size, num_threads, seed
        self.device_id = (
            (device.index if device.index is not None else torch.cuda.current_device())
            if device.type == "cuda"
            else None
        )
        # A margin of 2 px beyond the filter's reach; None: whole frames (always on a GPU).
        self.feed = _Feed(num_frames, size, 2 if slice_decode and self.device_id is None else None)
        self._iter = None
        self._finished = False

    def _new_iterator(self):
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        pipe = _build(self.feed, self.batch_size, self.size, self.num_threads, self.device_id, self.seed)
        # size=-1: the epoch ends when the feed raises StopIteration (it knows the plan length).
        return DALIGenericIterator([pipe], ["target", "sources"], size=-1, auto_reset=False, prepare_first_batch=True)

    def epoch(self, batches: list[list[Sample]], bad_frames: BadFrames | None = None):
        """Loader dicts for ``batches``; unreadable frames are replaced and reported to ``bad_frames``."""
        if not batches:
            return
        done = 0  # batches yielded (or dropped) so far
        while done < len(batches):
            self.feed.batches = batches[done:]
            self.feed.report = {}
            if self._iter is not None and self._finished and done == 0:
                self._iter.reset()  # prefetches the new plan's first batches
            else:
                self._iter = None  # an epoch left early: its prefetched batches are stale, start afresh
                self._iter = self._new_iterator()
            self._finished = False
            start = done
            try:
                for i, out in enumerate(self._iter):
                    order, bad, skipped, drop = self.feed.report.pop(i)
                    if bad_frames is not None and (bad or skipped):
                        bad_frames.add(bad, skipped)
                    batch = [batches[start + i][b] for b in order] if not drop else None
                    done = start + i + 1
                    if drop:
                        continue
                    item = out[0]
                    yield {
                        "target": item["target"],
                        "sources": item["sources"],
                        "identity": [s.frames[0].identity for s in batch],
                        "paths": [[r.path for r in s.frames] for s in batch],
                        "box": torch.tensor([s.box for s in batch], dtype=torch.int64),
                    }
            except TooManyBadFrames:
                raise
            except Exception:  # a file that passed the header check but does not decode
                found = self._find_undecodable(batches[done : done + 4])
                if not found:
                    raise
                self.feed.known_bad.update(found)
                self._iter = None
                continue  # rebuild, and read this batch again without those files
            self._finished = True

    def _find_undecodable(self, batches: list[list[Sample]]) -> dict[str, str]:
        """Files of ``batches`` (the one that failed and those DALI prefetched) PIL cannot decode."""
        from PIL import Image

        found = {}
        for batch in batches:
            for sample in batch:
                for rec in sample.frames:
                    if rec.path in found or rec.path in self.feed.known_bad:
                        continue
                    try:
                        with Image.open(rec.path) as im:
                            im.load()
                    except Exception as err:
                        found[rec.path] = f"{type(err).__name__}: {err}"
        return found
