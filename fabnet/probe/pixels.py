"""The no-learning reference: a frame's pixels as its embedding.

``PixelEncoder(size)`` stands where a frozen encoder stands (``embed_splits``, the probes,
retrieval): it returns the (3, S, S) evaluation crop flattened to 3 S^2 values in [0, 1]. A
learned embedding earns its keep by what it adds over this. Measured on the demo data (seed 0,
S = 32, test split): the linear probe on pixels gives landmarks 26.4 %, pose 10.41 deg, and
cosine neighbours across identities 20.3 deg from the query's yaw (random frames: 25.2).
"""

from __future__ import annotations

import torch

from fabnet.arguments import require_int


class PixelEncoder(torch.nn.Module):
    """(B, 3, S, S) frames -> (B, 3 S^2) embeddings, the pixels unchanged (channel-major order)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = require_int("size", size)
        self.embedding_dim = 3 * size * size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, self.size, self.size):
            raise ValueError(f"x: expected (B, 3, {self.size}, {self.size}), got {tuple(x.shape)}")
        return x.flatten(1)

    def extra_repr(self) -> str:
        return f"size={self.size}"


__all__ = ["PixelEncoder"]
