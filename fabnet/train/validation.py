"""The validation L1 of a model, and the bar a learned warp has to beat."""

from __future__ import annotations

import torch

from fabnet import ops
from fabnet.model import OP_KWARGS
from fabnet.train import distributed as D
from fabnet.train.batches import epoch_batches, to_device


@torch.no_grad()
def validate(model, loader, *, batches: int, world: D.World, op_backend: str, zero_flow: bool = False):
    """Mean validation L1 over ``batches`` whole batches (eval-mode BatchNorm; the caller restores
    the training mode); with ``zero_flow`` also the L1 of the equal-weight blend of the unwarped
    sources. Averaged over every rank."""
    model.eval()
    total_loss, total_zero, count = 0.0, 0.0, 0
    for i, batch in enumerate(epoch_batches(loader, 0, 0)):
        if i >= batches:
            break
        target, sources = to_device(batch, world.device)
        losses = model(target, sources)
        total_loss += float(losses.sum())
        count += losses.numel()
        if zero_flow:
            B, K = sources.shape[:2]
            size = target.shape[-1]
            flows = sources.new_zeros(B, K, 2, size, size)
            total_zero += float(ops.warp_blend_l1(sources, flows, None, target, backend=op_backend, **OP_KWARGS).sum())
    s, z, n = D.all_mean(world, [total_loss, total_zero, float(count)])
    return (s / max(n, 1.0), z / max(n, 1.0)) if zero_flow else s / max(n, 1.0)
