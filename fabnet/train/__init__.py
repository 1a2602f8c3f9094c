"""Training FAb-Net: the loop, the curriculum, figures and the ``fabnet train`` command.

from fabnet.train import TrainConfig, train
result = train(TrainConfig(data="synth", out="runs/k1", size=64, steps=400, curriculum=True))
result.checkpoint, result.best_val, result.metrics
"""

from fabnet._lazy import lazy_exports

# Imported on first use (fabnet._lazy): `fabnet --help` builds every subcommand's parser
# through this package and must not load torch.
_EXPORTS = {
    "Curriculum": "fabnet.train.curriculum",
    "TrainConfig": "fabnet.train.config",
    "TrainResult": "fabnet.train.config",
    "train": "fabnet.train.loop",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
