"""What each trained baseline minimises: its head on top of the shared encoder and its loss.

Every objective sees a batch of frames drawn by ``fabnet.train.baselines`` and returns a scalar
loss; ``head`` is the module trained beside the encoder and saved under ``prefix`` in the
checkpoint (``fabnet.model.load_encoder`` reads only ``encoder.*``).

- ``AutoencoderObjective``: Decoder(size, 256, 3) reconstructs the frame (mapped to [-1, 1], the
  decoder ends in tanh) through the 256-d bottleneck, L1 (the paper's baseline).
- ``RotationObjective``: Linear(256, 4) predicts which of 0 / 90 / 180 / 270 degrees the frame was
  rotated by (Gidaris et al. 2018), cross-entropy.
- ``ContrastiveObjective``: SimCLR (Chen et al. 2020) on the same encoder: two augmented views of
  every frame, a projection MLP 256 -> 256 -> 128 and the InfoNCE (NT-Xent) loss at temperature
  ``CONTRASTIVE_TEMPERATURE`` with the other 2B - 2 views of the batch as negatives.
- ``SupervisedObjective``: the ceiling: Linear(256, 2L + 3 + C + A) regresses the landmarks (in
  the crop) and the pose, classifies the expression and the attributes, from the labels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# SimCLR's best batch-256 temperature was 0.1-0.5 (Chen et al. 2020, Table 5); with 2B - 2 = 62
# negatives the softer 0.2 keeps the gradient from a few hard negatives.
CONTRASTIVE_TEMPERATURE = 0.2
# The views' crops: a square of this fraction of the shorter side at a random place. Wider than
# FAb-Net's 170/256 - 190/256 so that the two views differ in framing as SimCLR's do; no flip,
# which would negate yaw and roll, two of the labels the probes read.
VIEW_FRACTION = (0.55, 0.85)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) ITU-R 601 luma of ``x``, repeated over the three channels."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)


def augment_colour(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """SimCLR's colour distortion at strength 0.5: brightness, contrast and saturation each
    scaled by U(0.6, 1.4) per frame, then grey with probability 0.2. x: (B, 3, S, S) in [0, 1]."""
    b = x.shape[0]

    def factor():
        return (0.6 + 0.8 * torch.rand(b, 1, 1, 1, generator=generator)).to(x)

    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
    x = x * factor()
    x = (x - mean) * factor() + mean
    grey = _grey(x)
    x = grey + (x - grey) * factor()
    to_grey = (torch.rand(b, 1, 1, 1, generator=generator) < 0.2).to(x)
    return (x * (1 - to_grey) + grey * to_grey).clamp(0.0, 1.0)


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent: z1, z2 (B, D) projections of two views of the same B frames. Each of the 2B
    views must pick its partner among the 2B - 1 others by cosine similarity / temperature."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(sim, partner)


class Objective:
    """What the training loop reads of an objective besides its ``prefix``, ``head`` and ``loss``:
    whether it needs the frames' labels (``needs_records``) and whether it crops its own views
    from the frames instead of taking the shared crop (``crops_itself``)."""

    needs_records = False
    crops_itself = False


class AutoencoderObjective(Objective):
    prefix = "decoder"

    def __init__(self, size: int, embedding_dim: int, width: int):
        from fabnet.model import Decoder

        self.head = Decoder(size, embedding_dim, 3, width=width)

    def loss(self, encoder, x, batch) -> torch.Tensor:
        return (self.head(encoder(x)) - (2 * x - 1)).abs().mean()


class RotationObjective(Objective):
    prefix = "rotation_head"

    def __init__(self, size: int, embedding_dim: int, width: int):
        self.head = nn.Linear(embedding_dim, 4)

    def loss(self, encoder, x, batch) -> torch.Tensor:
        k = torch.as_tensor(batch.rng.integers(0, 4, len(x)), device=x.device)
        xr = torch.stack([torch.rot90(xi, int(ki), dims=(1, 2)) for xi, ki in zip(x, k)])
        return F.cross_entropy(self.head(encoder(xr)), k)


class ContrastiveObjective(Objective):
    prefix = "projection"
    crops_itself = True  # two views of its own, not the shared crop

    def __init__(self, size: int, embedding_dim: int, width: int):
        self.head = nn.Sequential(nn.Linear(embedding_dim, 256), nn.ReLU(inplace=True), nn.Linear(256, 128))

    def loss(self, encoder, x, batch) -> torch.Tensor:
        # ``x`` is unused: the two views are drawn from the batch's frames.
        v1, v2 = batch.views(VIEW_FRACTION)
        g = batch.generator
        z = self.head(encoder(torch.cat([augment_colour(v1, g), augment_colour(v2, g)])))
        return info_nce(*z.chunk(2), CONTRASTIVE_TEMPERATURE)


class SupervisedObjective(Objective):
    needs_records = True  # reads the frames' labels
    """Landmarks and pose regressed on their training-set standardised scale (each output of
    unit variance, so no task dominates by its units), expression by cross-entropy, attributes by
    binary cross-entropy; the four losses summed. Rows without a label are left out of its term."""

    prefix = "supervised_head"

    def __init__(self, size: int, embedding_dim: int, width: int, records):
        from fabnet.data.targets import task_targets

        self.records = records
        landmarks = task_targets("landmarks", records).y  # whole-image coordinates for the scale
        pose = task_targets("pose", records).y
        self.num_landmark = landmarks.shape[1]
        self.classes = max(int(r.expression) for r in records) + 1
        self.attributes = len(records[0].attributes)
        self.scale = {
            task: (
                torch.as_tensor(y.mean(0), dtype=torch.float32),
                torch.as_tensor(y.std(0) + 1e-6, dtype=torch.float32),
            )
            for task, y in (("landmarks", landmarks), ("pose", pose))
        }
        out = self.num_landmark + 3 + self.classes + self.attributes
        self.head = nn.Linear(embedding_dim, out)

    def _targets(self, task, idx, boxes, device):
        from fabnet.data.targets import task_targets

        t = task_targets(task, [self.records[i] for i in idx], boxes if task == "landmarks" else None)
        return torch.as_tensor(t.keep, device=device), torch.as_tensor(t.y, dtype=torch.float32, device=device)

    def loss(self, encoder, x, batch) -> torch.Tensor:
        out = self.head(encoder(x))
        split = [self.num_landmark, 3, self.classes, self.attributes]
        heads = dict(zip(("landmarks", "pose", "expression", "attributes"), out.split(split, dim=1)))
        total = out.new_zeros(())
        for task in ("landmarks", "pose"):
            keep, y = self._targets(task, batch.idx, batch.boxes, out.device)
            if keep.any():
                mean, std = (v.to(out.device) for v in self.scale[task])
                total = total + F.mse_loss(heads[task][keep], (y - mean) / std)
        keep, y = self._targets("expression", batch.idx, None, out.device)
        if keep.any():
            total = total + F.cross_entropy(heads["expression"][keep], y.long())
        keep, y = self._targets("attributes", batch.idx, None, out.device)
        if keep.any():
            known = ~torch.isnan(y)
            total = total + F.binary_cross_entropy_with_logits(heads["attributes"][keep][known], y[known])
        return total


OBJECTIVES = {
    "autoencoder": AutoencoderObjective,
    "rotation": RotationObjective,
    "contrastive": ContrastiveObjective,
    "supervised": SupervisedObjective,
}


def view_boxes(width: int, height: int, count: int, fraction: tuple[float, float], rng: np.random.Generator):
    """(count, 4) x0, y0, x1, y1 of squares of ``fraction`` of the shorter side at random places."""
    short = min(width, height)
    sides = np.maximum(1, np.round(rng.uniform(*fraction, count) * short)).astype(int)
    x0 = np.round(rng.random(count) * (width - sides)).astype(int)
    y0 = np.round(rng.random(count) * (height - sides)).astype(int)
    return np.stack([x0, y0, x0 + sides, y0 + sides], axis=1)


__all__ = ["CONTRASTIVE_TEMPERATURE", "OBJECTIVES", "VIEW_FRACTION", "augment_colour", "info_nce", "view_boxes"]
