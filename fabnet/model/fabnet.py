"""FAb-Net: one encoder for every frame, flow and confidence decoders on (source, target) pairs.

For a target frame t and K source frames s_1..s_K of the same face track:

    v_t, v_k = Encoder(t), Encoder(s_k)                      (shared weights, 256-d each)
    flow_k   = FlowDecoder(concat(v_k, v_t))                 (2, S, S), tanh: offsets from the identity grid
    conf_k   = r * ConfidenceDecoder(concat(v_k, v_t))       (1, S, S), tanh: blend logits (K > 1 only)
    t_hat    = sum_k softmax_k(conf) * grid_sample(s_k, identity + flow_k, border, align_corners=True)
    loss[b]  = mean |t - t_hat|                              (per sample, for the curriculum)

r is ``confidence_range``: the paper's tanh alone (r = 1) caps one source's weight at
e / (e + 2 / e) = 0.79 with K = 3, so a source that is plainly the best can never take a pixel
whole; r = 8 lets it reach 1 - 2e-7.

The warp, blend and L1 run as ONE call of ``fabnet.ops.warp_blend_l1``, which never materialises
the K warped frames or the blend. Source pixels are data: no gradient reaches them, only the
flows and confidences (and through them both decoders and the encoder) are trained.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn

from fabnet import ops
from fabnet.model.networks import DEFAULT_WIDTH, Decoder, Encoder, check_size, check_width

# The original release clamps identity + tanh offsets to [-1, 1] and samples with
# align_corners=True: the same as padding_mode="border".
OP_KWARGS = dict(residual=True, padding_mode="border", align_corners=True)
# The decoders' last conv starts at PyTorch's default initialisation times this: flows within
# ~0.005 of the identity grid, logits near equal, yet every layer gets a gradient from step 1 (at
# exactly 0 only the last conv does until it has moved). Validation L1 at step 200 on the demo
# data (S = 32, batch 16, one seed, 2026-12-04): 0.0616 from 0, 0.0609 from 0.01, 0.0629 from 0.1,
# 0.0663 from 1 (the paper's random start, above the 0.0666 of not warping until step 125).
NEAR_IDENTITY_SCALE = 0.01
CONFIDENCE_RANGE = 8.0  # default r (module docstring); the paper's is 1
PAPER_CONFIDENCE_RANGE = 1.0


class FabNet(nn.Module):
    """The FAb-Net training module.

    size: frame side S, a power of two in [32, 256]. num_sources: K >= 1 (K = 1 has no confidence
    decoder: the op blends with logits=None). embedding_dim: the face embedding size (256).
    width: channels after the encoder's first conv, doubling to at most 8x (pix2pix: 64; the
        authors' release: 16, about 4x faster to train on a CPU); the decoders mirror it.
    op_backend: backend of ``fabnet.ops`` ("auto", "cpu", "cuda", "triton", "reference").
    channels_last: run the convolutions in channels-last memory format (faster on GPUs).
    autocast_bf16: run encoder and decoders under bfloat16 autocast on CUDA; flows and logits
        are cast back to float32 before the op, so the warp and the loss stay in float32.
    confidence_range: r, the logits' bound (module docstring; paper: 1).
    identity_init: start both decoders' last conv at small random values (``NEAR_IDENTITY_SCALE``
        times the default initialisation): the warp starts near the identity and the confidences
        near equal. False: the default random last conv (the paper's), which starts the warp
        scrambled, above the no-warp L1 for the first ~125 steps on the demo data.
    """

    def __init__(
        self,
        size: int = 256,
        num_sources: int = 1,
        *,
        embedding_dim: int = 256,
        width: int = DEFAULT_WIDTH,
        op_backend: str = "auto",
        channels_last: bool = False,
        autocast_bf16: bool = False,
        confidence_range: float = CONFIDENCE_RANGE,
        identity_init: bool = True,
    ):
        super().__init__()
        self.size = check_size(size)
        if int(num_sources) != num_sources or num_sources < 1:
            raise ValueError(f"num_sources must be an integer >= 1; got {num_sources!r}")
        self.num_sources = int(num_sources)
        self.embedding_dim = int(embedding_dim)
        self.width = check_width(width)
        self.op_backend = op_backend
        self.channels_last = bool(channels_last)
        self.autocast_bf16 = bool(autocast_bf16)
        if not (math.isfinite(confidence_range) and confidence_range > 0):
            raise ValueError(f"confidence_range must be a finite number > 0; got {confidence_range!r}")
        self.confidence_range = float(confidence_range)
        self.encoder = Encoder(size, embedding_dim, width=self.width)
        scale = NEAR_IDENTITY_SCALE if identity_init else 1.0
        self.flow_decoder = Decoder(size, 2 * embedding_dim, 2, width=self.width, last_scale=scale)
        self.confidence_decoder = (
            Decoder(size, 2 * embedding_dim, 1, width=self.width, last_scale=scale) if self.num_sources > 1 else None
        )
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def config(self) -> dict:
        """What a checkpoint needs to rebuild this module (see ``fabnet.model.checkpoint``)."""
        return dict(
            size=self.size,
            num_sources=self.num_sources,
            embedding_dim=self.embedding_dim,
            width=self.width,
            confidence_range=self.confidence_range,
        )

    def _autocast(self, device: torch.device):
        if self.autocast_bf16 and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _check(self, target: torch.Tensor, sources: torch.Tensor) -> None:
        B = target.shape[0]
        S, K = self.size, self.num_sources
        if target.shape != (B, 3, S, S):
            raise ValueError(f"target must be (B, 3, {S}, {S}) for size={S}; got {tuple(target.shape)}")
        if sources.shape != (B, K, 3, S, S):
            raise ValueError(
                f"sources must be (B={B}, K={K}, 3, {S}, {S}) for size={S}, num_sources={K}; got {tuple(sources.shape)}"
            )

    def predict(self, target: torch.Tensor, sources: torch.Tensor):
        """Flows (B, K, 2, S, S) and logits (B, K, S, S) or None (K = 1), both float32.

        target: (B, 3, S, S); sources: (B, K, 3, S, S).
        """
        self._check(target, sources)
        B, K = sources.shape[:2]
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        # One encoder pass over all B*(K+1) frames: one BatchNorm batch, one big conv each layer.
        frames = torch.cat([target, sources.detach().flatten(0, 1)]).contiguous(memory_format=fmt)
        with self._autocast(frames.device):
            emb = self.encoder(frames)
        return self.decode(emb[:B], emb[B:].view(B, K, -1))

    def decode(self, target_embedding: torch.Tensor, source_embeddings: torch.Tensor):
        """Flows (B, K, 2, S, S) and logits (B, K, S, S) or None (K = 1), both float32, from embeddings.

        target_embedding: (B, E); source_embeddings: (B, K, E). The decoders read each source's
        embedding concatenated with the target's, nothing else.
        """
        v_t, v_s = target_embedding, source_embeddings
        B, K = v_s.shape[:2]
        if v_t.shape != (B, self.embedding_dim) or v_s.shape[2:] != (self.embedding_dim,) or K != self.num_sources:
            raise ValueError(
                f"decode expects target_embedding (B, {self.embedding_dim}) and source_embeddings "
                f"(B, K={self.num_sources}, {self.embedding_dim}); got {tuple(v_t.shape)} and "
                f"{tuple(v_s.shape)}"
            )
        with self._autocast(v_t.device):
            pair = torch.cat([v_s, v_t[:, None].expand(B, K, v_t.shape[1])], dim=2).flatten(0, 1)
            flows = self.flow_decoder(pair)
            logits = self.confidence_decoder(pair) if self.confidence_decoder is not None else None
            if logits is not None:
                logits = logits * self.confidence_range
        S = self.size
        flows = flows.float().reshape(B, K, 2, S, S)
        if logits is not None:
            logits = logits.float().reshape(B, K, S, S)
        return flows, logits

    def forward(self, target: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """Per-sample L1 losses (B,) of the target against the blend of the warped sources."""
        flows, logits = self.predict(target, sources)
        return ops.warp_blend_l1(
            sources.detach().float(), flows, logits, target.detach().float(), backend=self.op_backend, **OP_KWARGS
        )

    @torch.no_grad()
    def generate(self, target: torch.Tensor, sources: torch.Tensor) -> dict:
        """For figures: ``generated`` (B, 3, S, S), ``confidence`` (B, K, S, S) softmaxed over K
        (all 1 for K = 1), ``flows`` (B, K, 2, S, S) and ``loss`` (B,). Runs in the current mode
        (call ``eval()`` first for running BatchNorm statistics)."""
        flows, logits = self.predict(target, sources)
        src = sources.float()
        generated = ops.warp_blend(src, flows, logits, backend=self.op_backend, **OP_KWARGS)
        B, K = flows.shape[:2]
        if logits is None:
            confidence = flows.new_full((B, K, self.size, self.size), 1.0 / K)
        else:
            confidence = torch.softmax(logits, dim=1)
        loss = (generated - target.float()).abs().flatten(1).mean(1)
        return dict(generated=generated, confidence=confidence, flows=flows, loss=loss)
