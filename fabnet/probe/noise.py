"""The noise floor: an "encoder" whose embedding is random, fixed per frame.

``NoiseEncoder(size)`` stands where a frozen encoder stands and returns 256 standard-normal
values seeded by the frame's pixels, so the same frame always gets the same vector and nothing
in it depends on the face. A linear probe on it learns the training labels' mean: the score any
method must beat before it says anything about faces.
"""

from __future__ import annotations

import zlib

import torch

from fabnet.arguments import require_int


class NoiseEncoder(torch.nn.Module):
    """(B, 3, S, S) frames -> (B, dim) standard-normal embeddings, a pure function of each frame."""

    def __init__(self, size: int, dim: int = 256, seed: int = 0):
        super().__init__()
        self.size = require_int("size", size)
        self.embedding_dim = require_int("dim", dim)
        self.seed = int(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, self.size, self.size):
            raise ValueError(f"x: expected (B, 3, {self.size}, {self.size}), got {tuple(x.shape)}")
        out = torch.empty(x.shape[0], self.embedding_dim)
        frames = x.detach().to("cpu", torch.float32).contiguous().numpy()
        for i, frame in enumerate(frames):
            g = torch.Generator().manual_seed(zlib.crc32(frame.tobytes()) ^ self.seed)
            out[i] = torch.randn(self.embedding_dim, generator=g)
        return out.to(x.device)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.embedding_dim}"


__all__ = ["NoiseEncoder"]
