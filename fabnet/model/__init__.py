"""FAb-Net's networks and checkpoints.

Encoder(size, embedding_dim=256, width=64)  (B, 3, S, S) -> (B, 256)
Decoder(size, in_features=512, out_channels) (N, in_features) -> (N, out_channels, S, S), tanh
FabNet(size, num_sources, width=64, op_backend=...)   forward(target, sources) -> per-sample L1 (B,)
load_encoder(path)                          a trained, frozen Encoder in eval mode
load_checkpoint(path) / save_checkpoint(state, path)   (atomic)
export_encoder(ckpt, out) / load_exported_encoder(out)  the encoder as .safetensors + a model card
"""

from fabnet._lazy import lazy_exports

# Imported on first use (fabnet._lazy): `fabnet --help` builds every subcommand's parser
# through this package and must not load torch.
_EXPORTS = {
    "FORMAT": "fabnet.model.checkpoint",
    "export_encoder": "fabnet.model.export",
    "load_exported_encoder": "fabnet.model.export",
    "build_model": "fabnet.model.checkpoint",
    "check_compatible": "fabnet.model.checkpoint",
    "checkpoint_width": "fabnet.model.checkpoint",
    "init_from": "fabnet.model.checkpoint",
    "load_checkpoint": "fabnet.model.checkpoint",
    "load_encoder": "fabnet.model.checkpoint",
    "save_checkpoint": "fabnet.model.checkpoint",
    "OP_KWARGS": "fabnet.model.fabnet",
    "FabNet": "fabnet.model.fabnet",
    "Decoder": "fabnet.model.networks",
    "Encoder": "fabnet.model.networks",
    "check_size": "fabnet.model.networks",
    "check_width": "fabnet.model.networks",
    "level_channels": "fabnet.model.networks",
    "DEFAULT_WIDTH": "fabnet.model.defaults",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
