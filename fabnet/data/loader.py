"""``make_loader``: batches of (target, K sources) from face tracks, by DALI or PIL.

Every batch is a dict::

    target    (B, 3, S, S) float32 in [0, 1], RGB
    sources   (B, K, 3, S, S) float32 in [0, 1]: K other frames of the target's track
    identity  list of B identity names
    paths     list of B lists of K + 1 paths (target first)
    box       (B, 4) int64 crop box (x0, y0, x1, y1) in stored-image pixels, x1 / y1 exclusive

The K + 1 frames of a sample are distinct frames of one track, cropped by one box. Both
backends follow the same plan (``fabnet.data.sampling``), so for equal arguments they return
the same frames and boxes; pixels differ only by JPEG-decoder and resampling rounding.
"""

from __future__ import annotations

import os

import torch

from fabnet.arguments import require_int
from fabnet.data import dali_backend, pil_backend
from fabnet.data.bad_frames import BadFrames
from fabnet.data.index import group_tracks, load_index
from fabnet.data.sampling import parse_crop, plan_epoch

BACKENDS = ("auto", "dali", "pil")


class FrameLoader:
    """Iterable over batches of one shard; each ``iter()`` is one epoch (then the epoch advances).

    ``set_epoch(e)`` picks the epoch of the next iteration (as with DistributedSampler); all
    shards given the same seed and epoch read disjoint parts of one plan.
    """

    def __init__(
        self,
        tracks,
        *,
        backend,
        num_sources,
        batch_size,
        size,
        seed,
        shard_id,
        num_shards,
        shuffle,
        drop_last,
        epoch_length,
        crop,
        device,
        num_workers,
        num_threads,
    ):
        self.tracks = tracks
        self.backend = backend
        self.num_sources, self.batch_size, self.size = num_sources, batch_size, size
        self.seed, self.shard_id, self.num_shards = seed, shard_id, num_shards
        self.shuffle, self.drop_last, self.crop = shuffle, drop_last, crop
        self.epoch_length = epoch_length
        self.device = device
        self.num_workers, self.num_threads = num_workers, num_threads
        self.epoch = 0
        self._dali = None
        self.bad_frames = BadFrames(self.samples_per_shard)

    @property
    def samples_per_shard(self) -> int:
        return self.epoch_length // self.num_shards

    def __len__(self) -> int:
        n = self.samples_per_shard
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plan(self, epoch: int):
        """The batches (lists of ``Sample``) this shard reads in ``epoch``."""
        samples = plan_epoch(
            self.tracks,
            self.num_sources,
            seed=self.seed,
            epoch=epoch,
            length=self.epoch_length,
            shuffle=self.shuffle,
            crop=self.crop,
            shard_id=self.shard_id,
            num_shards=self.num_shards,
        )
        batches = [samples[i : i + self.batch_size] for i in range(0, len(samples), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, skip: int):
        """This epoch's batches after the first ``skip`` (resuming mid-epoch without decoding them)."""
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            raise ValueError(f"skip must be an integer >= 0, got {skip!r}")
        batches = self.plan(self.epoch)[skip:]
        self.epoch += 1
        self.bad_frames.new_epoch()
        if self.backend == "pil":
            return pil_backend.iterate(
                batches, self.size, num_workers=self.num_workers, device=self.device, bad_frames=self.bad_frames
            )
        if self._dali is None:
            self._dali = dali_backend.DaliRunner(
                self.num_sources + 1,
                self.batch_size,
                self.size,
                num_threads=self.num_threads,
                device=self.device,
                seed=self.seed,
            )
        return self._dali.epoch(batches, self.bad_frames)


def _checked_device(device) -> torch.device:
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {str(device)!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but torch.cuda.is_available() is False; pass device='cpu'")
    return device


def _resolved_backend(backend: str) -> str:
    """ "dali" or "pil": "auto" takes DALI when it imports; "dali" without it names the install."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "dali":
        dali_backend.require()
    elif backend == "auto":
        backend = "dali" if dali_backend.available() else "pil"
    return backend


def _usable_tracks(root, split: str, split_seed: int, num_sources: int) -> list:
    """The tracks of ``split`` with at least K + 1 readable frames; ValueError when none has."""
    records = load_index(root, split, split_seed=split_seed)
    if not records:
        raise ValueError(f"split {split!r} of {os.fspath(root)!r} has no frames")
    tracks = group_tracks(records, num_sources + 1)
    if not tracks:
        raise ValueError(
            f"no track of split {split!r} under {os.fspath(root)!r} has num_sources + 1 = "
            f"{num_sources + 1} readable frames; lower num_sources"
        )
    return tracks


def make_loader(
    root,
    *,
    split: str = "train",
    batch_size: int,
    num_sources: int,
    size: int,
    backend: str = "auto",
    seed: int = 0,
    shard_id: int = 0,
    num_shards: int = 1,
    device="cpu",
    num_workers: int | None = None,
    num_threads: int | None = None,
    shuffle: bool | None = None,
    drop_last: bool | None = None,
    epoch_length: int | None = None,
    crop=None,
    split_seed: int = 0,
) -> FrameLoader:
    """Batches of a target frame and ``num_sources`` frames of the same track.

    root: data root ``ROOT/<identity>/<video>/<track>/<frame>.jpg`` (see fabnet.data.labels).
    split: "train", "val", "test" or "all" (identity-disjoint 75/15/10 by ``split_seed``).
    batch_size: B. num_sources: K >= 1; tracks with fewer than K + 1 readable frames are
        skipped (one warning). size: S, output side in pixels.
    backend: "dali" (needs nvidia-dali), "pil" (torch DataLoader + Pillow) or "auto" (DALI
        when importable, else PIL).
    seed: seed of the sampling plan (track order, frames, crops); the plan of epoch e is a
        function of (seed, e) only.
    shard_id, num_shards: this process's shard of each epoch (distributed training); every
        shard gets ``epoch_length // num_shards`` samples.
    device: where the batches are delivered ("cpu" or "cuda[:i]"); on CUDA DALI decodes on
        the GPU ("mixed") and PIL pins memory.
    num_workers: PIL DataLoader workers (default: CPU count, at most 8).
    num_threads: DALI CPU threads (default: CPU count, at most 8).
    shuffle: new tracks order / frames / crops per epoch (default: True for train, else False).
    drop_last: drop a partial last batch (default: True for train, else False).
    epoch_length: samples per epoch over all shards (default: the number of usable tracks,
        i.e. every track once).
    crop: "random" (paper augmentation: square of 170-190/256 of the shorter side at a random
        position, the same box for the K + 1 frames), "center" (180/256, centred), "full" or a
        centred fraction; default "random" for train, "center" otherwise.
    """
    require_int("batch_size", batch_size)
    require_int("num_sources", num_sources)
    require_int("size", size, 8)
    require_int("num_shards", num_shards)
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in [0, num_shards={num_shards}), got {shard_id!r}")
    train = split == "train"
    crop = parse_crop(crop if crop is not None else ("random" if train else "center"))
    device = _checked_device(device)
    backend = _resolved_backend(backend)
    cpus = min(8, os.cpu_count() or 1)
    tracks = _usable_tracks(root, split, split_seed, num_sources)
    epoch_length = len(tracks) if epoch_length is None else require_int("epoch_length", epoch_length)
    if epoch_length < num_shards:
        raise ValueError(f"epoch_length ({epoch_length}) must be at least num_shards ({num_shards})")
    return FrameLoader(
        tracks,
        backend=backend,
        num_sources=num_sources,
        batch_size=batch_size,
        size=size,
        seed=seed,
        shard_id=shard_id,
        num_shards=num_shards,
        shuffle=train if shuffle is None else bool(shuffle),
        drop_last=train if drop_last is None else bool(drop_last),
        epoch_length=epoch_length,
        crop=crop,
        device=device,
        num_workers=cpus if num_workers is None else require_int("num_workers", num_workers, 0),
        num_threads=cpus if num_threads is None else require_int("num_threads", num_threads),
    )
