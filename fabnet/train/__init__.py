"""Training FAb-Net: the loop, the curriculum, figures and the ``fabnet train`` command.

    from fabnet.train import TrainConfig, train
    result = train(TrainConfig(data="synth", out="runs/k1", size=64, steps=400, curriculum=True))
    result.checkpoint, result.best_val, result.metrics
"""

from fabnet.train.curriculum import Curriculum
from fabnet.train.loop import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train", "Curriculum"]
