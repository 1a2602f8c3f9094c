"""Batches for training and validation: the loaders of a run, the resumed data position, devices."""

from __future__ import annotations

import torch

from fabnet.train import distributed as D
from fabnet.train.config import TrainConfig


def make_loader(cfg: TrainConfig, split: str, world: D.World, batch_size: int):
    from fabnet.data import make_loader

    train = split == "train"
    kwargs = dict(
        split=split,
        batch_size=batch_size,
        num_sources=cfg.num_sources,
        size=cfg.size,
        backend=cfg.data_backend,
        seed=cfg.seed,
        shard_id=world.rank,
        num_shards=world.size,
        device=str(world.device),
        num_workers=cfg.num_workers,
    )
    if train and cfg.epoch_length is not None:
        kwargs["epoch_length"] = cfg.epoch_length
    return make_loader(cfg.data, **kwargs)


def epoch_batches(loader, epoch: int, skip: int):
    """Iterator over the batches of ``epoch`` after the first ``skip`` (the resumed data position).

    The loader's plan of an epoch is a function of (seed, epoch), so the batches after ``skip``
    are exactly those the interrupted run would have read next. ``FrameLoader.iter_from`` slices
    the plan before any file is opened; a loader without it reads and drops ``skip`` batches.
    """
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    if skip and hasattr(loader, "iter_from"):
        return iter(loader.iter_from(skip))
    it = iter(loader)
    for _ in range(skip):  # a loader without random access: read and drop
        next(it)
    return it


def to_device(batch: dict, device: torch.device):
    target = batch["target"].to(device, non_blocking=True).float()
    sources = batch["sources"].to(device, non_blocking=True).float()
    return target, sources
