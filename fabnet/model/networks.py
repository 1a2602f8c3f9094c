"""FAb-Net's encoder and decoders: pix2pix without skip connections.

Encoder (one 4x4 / stride 2 / pad 1 conv per halving of the side):

    S x S x 3 -> conv 64 -> [LReLU, conv 128, BN] -> [LReLU, conv 256, BN] -> [LReLU, conv 512, BN]
              -> ... (512 from then on) -> [LReLU, conv E, BN] at 1 x 1  -> (B, E)

so every conv but the first is followed by a BatchNorm and every conv but the last by a
LeakyReLU(0.2) (pix2pix places it at the start of the next block, which is the same thing).
At S = 256 that is 8 convs, the paper's encoder; smaller powers of two drop the 512-channel
middle layers, so the same code covers 32 ... 256. The channels shown are ``width=64``'s
(pix2pix); in general they are width, 2 width, 4 width, then 8 width.

Decoder (the encoder's mirror, one block per doubling of the side):

    (B, F) as F x 1 x 1 -> [ReLU, bilinear x2, conv3x3, BN] ... -> [ReLU, bilinear x2, conv3x3] -> tanh

Channels at each resolution are the encoder's at that resolution, the last block gives
``out_channels`` and has no BatchNorm (its output is tanh-squashed).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from fabnet.model.defaults import DEFAULT_WIDTH

MIN_SIZE, MAX_SIZE = 32, 256


def check_width(width, name: str = "width") -> int:
    """``width`` as an int, or ValueError if it is not an integer >= 1."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(
            f"{name} must be an integer >= 1 (channels after the encoder's first conv; "
            f"pix2pix: 64, the authors' release: 16); got {width!r}"
        )
    return int(width)


def check_size(size, name: str = "size") -> int:
    """``size`` as an int, or ValueError if it is not a power of two in [32, 256]."""
    ok = (
        isinstance(size, (int,))
        and not isinstance(size, bool)
        and MIN_SIZE <= size <= MAX_SIZE
        and size & (size - 1) == 0
    )
    if not ok:
        raise ValueError(
            f"{name} must be a power of two in [{MIN_SIZE}, {MAX_SIZE}] (32, 64, 128 or 256); got {size!r}"
        )
    return int(size)


def level_channels(size: int, width: int = DEFAULT_WIDTH) -> list[int]:
    """Channels of the encoder's feature maps at sides size/2, size/4, ..., 2 (not the 1x1 embedding):
    width, 2 width, 4 width, then 8 width from there on."""
    depth = int(math.log2(check_size(size)))
    width = check_width(width)
    return [min(width * 2**i, 8 * width) for i in range(depth - 1)]


class Encoder(nn.Module):
    """(B, 3, S, S) -> (B, embedding_dim). S: a power of two in [32, 256]; width: see level_channels."""

    def __init__(self, size: int = 256, embedding_dim: int = 256, in_channels: int = 3, *, width: int = DEFAULT_WIDTH):
        super().__init__()
        self.size = check_size(size)
        self.width = check_width(width)
        self.embedding_dim = int(embedding_dim)
        self.in_channels = int(in_channels)
        chans = level_channels(size, width) + [self.embedding_dim]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, chans[0], 4, 2, 1)]
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.LeakyReLU(0.2), nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.size, self.size) or x.shape[-3] != self.in_channels:
            raise ValueError(
                f"Encoder(size={self.size}) expects (B, {self.in_channels}, {self.size}, "
                f"{self.size}); got {tuple(x.shape)}"
            )
        return self.net(x).flatten(1)


class UpBlock(nn.Module):
    """ReLU -> bilinear x2 -> conv3x3 -> BatchNorm (no BatchNorm when ``last``)."""

    def __init__(self, c_in: int, c_out: int, last: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=last)
        self.norm = nn.Identity() if last else nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(F.relu(x), scale_factor=2, mode="bilinear", align_corners=False)
        return self.norm(self.conv(x))


class Decoder(nn.Module):
    """(N, in_features) or (N, in_features, 1, 1) -> (N, out_channels, S, S) in [-1, 1] (tanh)."""

    def __init__(
        self,
        size: int = 256,
        in_features: int = 512,
        out_channels: int = 2,
        *,
        width: int = DEFAULT_WIDTH,
        last_scale: float = 1.0,
    ):
        """last_scale: the last conv's weights are PyTorch's default initialisation times this
        (its bias then starts at zero): 1 is the plain random start; a small value starts the
        output near 0 everywhere (flows: near the identity warp; confidence logits: near equal
        weights) while every layer still gets a gradient; 0 starts it at exactly 0."""
        super().__init__()
        self.size = check_size(size)
        self.width = check_width(width)
        self.in_features = int(in_features)
        self.out_channels = int(out_channels)
        chans = [self.in_features] + level_channels(size, width)[::-1] + [self.out_channels]
        self.blocks = nn.Sequential(
            *[UpBlock(a, b, last=(i == len(chans) - 2)) for i, (a, b) in enumerate(zip(chans[:-1], chans[1:]))]
        )
        if not (math.isfinite(last_scale) and last_scale >= 0):
            raise ValueError(f"last_scale must be a finite number >= 0; got {last_scale!r}")
        if last_scale != 1.0:
            last = self.blocks[-1].conv
            with torch.no_grad():
                last.weight.mul_(last_scale)
                last.bias.zero_()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        if z.shape[1:] != (self.in_features, 1, 1):
            raise ValueError(
                f"Decoder expects (N, {self.in_features}) or (N, {self.in_features}, 1, 1); got {tuple(z.shape)}"
            )
        return torch.tanh(self.blocks(z))
