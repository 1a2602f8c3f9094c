"""Baseline encoders, trained (or not) on the same frames and probed the same way as FAb-Net.

- ``random_init``: FAb-Net's encoder as initialised, never trained. Its BatchNorm running
  statistics are re-estimated on train frames (forward passes only, no labels, no gradient):
  with the initial statistics (mean 0, variance 1) the activations shrink layer after layer and
  the comparison would be with a badly scaled network rather than with untrained weights.
- ``autoencoder`` (the paper's baseline, supplement Section 2), ``rotation`` (Gidaris et al.
  2018), ``contrastive`` (SimCLR: two augmentations of a frame, InfoNCE) and ``supervised`` (the
  ceiling: the labels themselves): the objectives of ``fabnet.train.baseline_objectives``.

Every baseline sees the training split with the training augmentation (a random square crop of
170/256 - 190/256 of the side, resized to S; the contrastive views draw their own) and uses the
optimiser recipe passed in (the demo passes FAb-Net's). Checkpoints use FAb-Net's format
(``fabnet.model.checkpoint``): encoder weights under ``model["encoder.*"]`` and the baseline's
head under another prefix, so ``fabnet.model.load_encoder`` (and ``fabnet embed / probe /
retrieve``) read them unchanged.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fabnet.data.sampling import crop_box
from fabnet.model.networks import DEFAULT_WIDTH
from fabnet.train.baseline_objectives import OBJECTIVES, view_boxes

# random_init: the encoder as initialised, BatchNorm statistics re-estimated; the others train.
UNTRAINED = "random_init"
BASELINES = (UNTRAINED, *OBJECTIVES)


@dataclass
class BaselineConfig:
    """How a baseline is trained.

    method: one of ``BASELINES``. size: frame side S. steps: optimiser steps (ignored by
    random_init). batch_size: frames per step. optimizer: "sgd" (momentum, the paper's recipe)
    or "adam". lr, momentum, weight_decay: its settings (give a baseline the weight decay its
    FAb-Net had, so the comparison is of objectives, not of regularisation). seed:
    initialisation, crops and batch order.
    bn_batches: batches used to re-estimate BatchNorm statistics (random_init only).
    embedding_dim, width: the encoder's (as FAb-Net's ``--width``, so baselines compare like for like).
    device: where the networks run ("cpu", "cuda", "cuda:1"); the frames stay in host memory and
    each step's crops are copied over.
    """

    method: str = "autoencoder"
    size: int = 64
    steps: int = 500
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    bn_batches: int = 20
    embedding_dim: int = 256
    width: int = DEFAULT_WIDTH
    device: str = "cpu"


@dataclass
class BaselineResult:
    checkpoint: str
    losses: list = field(default_factory=list)
    wall_s: float = 0.0
    config: dict = field(default_factory=dict)


def preload(records, max_frames: int | None = None, seed: int = 0) -> torch.Tensor:
    """(N, 3, H, W) uint8 frames of ``records`` (all one size), a random subset of ``max_frames`` if given."""
    from PIL import Image

    idx = np.arange(len(records))
    if max_frames is not None and len(idx) > max_frames:
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), max_frames, replace=False))
    imgs = []
    for i in idx:
        with Image.open(records[i].path) as im:
            imgs.append(np.asarray(im.convert("RGB"), np.uint8))
    shapes = {a.shape for a in imgs}
    if len(shapes) > 1:
        raise ValueError(f"baseline training needs frames of one size; got {sorted(shapes)}")
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


def crops_at(images: torch.Tensor, idx: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
    """(B, 3, size, size) float32 in [0, 1] (the training loader's range): ``images[idx]``
    cropped to ``boxes`` (B, 4) x0, y0, x1, y1 and resized with antialiasing."""
    out = []
    for i, (x0, y0, x1, y1) in zip(idx, boxes):
        patch = images[i : i + 1, :, y0:y1, x0:x1].float()
        out.append(F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False, antialias=True))
    return torch.cat(out).div_(255.0).clamp_(0.0, 1.0)


@dataclass
class Batch:
    """One step's draw: frame indices ``idx`` (B,), their crop ``boxes`` (B, 4) and the
    generators an objective may draw more from (``views`` for the contrastive pair)."""

    images: torch.Tensor
    idx: np.ndarray
    boxes: np.ndarray
    size: int
    rng: np.random.Generator
    generator: torch.Generator
    device: torch.device = torch.device("cpu")

    def views(self, fraction: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:

        h, w = self.images.shape[-2:]
        return tuple(
            crops_at(self.images, self.idx, view_boxes(w, h, len(self.idx), fraction, self.rng), self.size).to(
                self.device
            )
            for _ in range(2)
        )


def _optimizer(cfg: BaselineConfig, params):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adam'; got {cfg.optimizer!r}")


def _checkpoint(cfg: BaselineConfig, modules: dict[str, nn.Module], losses: list) -> dict:
    from fabnet import __version__
    from fabnet.model.checkpoint import FORMAT

    weights = {}
    for prefix, module in modules.items():
        weights.update({f"{prefix}.{k}": v.detach().cpu() for k, v in module.state_dict().items()})
    return {
        "format": FORMAT,
        "fabnet_version": __version__,
        "model_config": {"size": cfg.size, "num_sources": 1, "embedding_dim": cfg.embedding_dim, "width": cfg.width},
        "model": weights,
        "baseline": cfg.method,
        "baseline_config": asdict(cfg),
        "losses": losses,
        "step": cfg.steps if cfg.method != UNTRAINED else 0,
    }


def _estimate_batchnorm(encoder: nn.Module, batch, batches: int) -> None:
    """Re-estimate the BatchNorm statistics only: cumulative averages over ``batches`` calls of
    ``batch()`` (a crop tensor each)."""
    for m in encoder.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    encoder.train()
    with torch.no_grad():
        for _ in range(batches):
            encoder(batch())


def train_baseline(
    cfg: BaselineConfig, records, out_path: str, *, images: torch.Tensor | None = None, progress: bool = False
) -> BaselineResult:
    """Train (or, for random_init, only initialise) a baseline on ``records`` and save its checkpoint.

    records: the training frames (FrameRecord-like, with ``path``; ``supervised`` also reads their
    labels). images: their preloaded uint8 tensor (``preload``), to share one load between
    baselines. Returns the checkpoint path, the loss per step and the wall time.
    """
    from fabnet.model import Encoder
    from fabnet.model.checkpoint import save_checkpoint

    if cfg.method not in BASELINES:
        raise ValueError(f"method must be one of {BASELINES}; got {cfg.method!r}")
    if not records:
        raise ValueError("records must hold at least one training frame; got none")
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    if images is None:
        images = preload(records)
    if images.shape[0] != len(records):
        raise ValueError(f"images must hold one frame per record ({len(records)}); got {images.shape[0]}")
    n = images.shape[0]
    h, w = images.shape[-2:]
    device = torch.device(cfg.device)
    encoder = Encoder(cfg.size, cfg.embedding_dim, width=cfg.width).to(device)
    losses: list[float] = []

    def draw() -> Batch:
        idx = rng.integers(0, n, cfg.batch_size)
        boxes = np.array([crop_box(w, h, "random", rng) for _ in idx]).reshape(-1, 4)
        return Batch(images, idx, boxes, cfg.size, rng, generator, device)

    def crops(b: Batch) -> torch.Tensor:
        return crops_at(images, b.idx, b.boxes, cfg.size).to(device)

    if cfg.method == UNTRAINED:
        _estimate_batchnorm(encoder, lambda: crops(draw()), cfg.bn_batches)
        modules = {"encoder": encoder}
    else:
        kind = OBJECTIVES[cfg.method]
        objective = kind(cfg.size, cfg.embedding_dim, cfg.width, *((records,) if kind.needs_records else ()))
        objective.head.to(device)
        opt = _optimizer(cfg, list(encoder.parameters()) + list(objective.head.parameters()))
        encoder.train()
        objective.head.train()
        steps = range(cfg.steps)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc=cfg.method, unit="step")
        for _ in steps:
            b = draw()
            x = None if objective.crops_itself else crops(b)
            loss = objective.loss(encoder, x, b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        modules = {"encoder": encoder, objective.prefix: objective.head}
    encoder.eval()
    save_checkpoint(_checkpoint(cfg, {k: m.cpu() for k, m in modules.items()}, losses), out_path)
    return BaselineResult(out_path, losses, time.perf_counter() - t0, asdict(cfg))


__all__ = ["BASELINES", "Batch", "BaselineConfig", "BaselineResult", "crops_at", "preload", "train_baseline"]
