"""FAb-Net's networks and checkpoints.

    Encoder(size, embedding_dim=256, width=64)  (B, 3, S, S) -> (B, 256)
    Decoder(size, in_features=512, out_channels) (N, in_features) -> (N, out_channels, S, S), tanh
    FabNet(size, num_sources, width=64, op_backend=...)   forward(target, sources) -> per-sample L1 (B,)
    load_encoder(path)                          a trained, frozen Encoder in eval mode
    load_checkpoint(path) / save_checkpoint(state, path)   (atomic)
"""

from fabnet.model.checkpoint import (FORMAT, build_model, check_compatible, checkpoint_width, init_from,
                                     load_checkpoint, load_encoder, save_checkpoint)
from fabnet.model.fabnet import OP_KWARGS, FabNet
from fabnet.model.networks import DEFAULT_WIDTH, Decoder, Encoder, check_size, check_width, level_channels

__all__ = ["Encoder", "Decoder", "FabNet", "OP_KWARGS", "DEFAULT_WIDTH", "check_size", "check_width",
           "level_channels", "load_encoder", "load_checkpoint", "save_checkpoint", "build_model",
           "check_compatible", "checkpoint_width", "init_from", "FORMAT"]
