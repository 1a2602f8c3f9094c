"""Evaluating a frozen embedding: linear probes, retrieval and what the decoders read.

metrics     NME / inter-ocular distance, pose MAE, ROC AUC (ties counted 1/2)
linear      LinearProbe = BatchNorm1d + Linear(bias=False); fit_probe with early stopping
tasks       landmarks / pose / expression / attributes: targets from frame records, test metrics
frames      evaluation crops and embeddings through any checkpoint's frozen encoder
pipeline    embed the splits, probe a task, retrieval figure and pose agreement
retrieval   cosine nearest neighbours across identities, Figure-5 style grid
pixels      PixelEncoder: the crop's raw pixels as the embedding, the no-learning reference
confidence  how selective a K-source model's confidences are on test tracks
swap        what the decoders read from the target embedding
noise       NoiseEncoder: random features, the noise floor
intervals   identity-bootstrap intervals
cli         ``fabnet embed / probe / retrieve``
"""

from fabnet._lazy import lazy_exports

# Imported on first use (fabnet._lazy): `fabnet --help` builds every subcommand's parser
# through this package and must not load torch.
_EXPORTS = {
    "FittedProbe": "fabnet.probe.linear",
    "LinearProbe": "fabnet.probe.linear",
    "ProbeConfig": "fabnet.probe.linear",
    "fit_probe": "fabnet.probe.linear",
    "multiclass_auc": "fabnet.probe.metrics",
    "multilabel_auc": "fabnet.probe.metrics",
    "nme_iod": "fabnet.probe.metrics",
    "pose_mae": "fabnet.probe.metrics",
    "roc_auc": "fabnet.probe.metrics",
    "cosine_neighbours": "fabnet.probe.retrieval",
    "MAIN_METRIC": "fabnet.probe.tasks",
    "TASKS": "fabnet.probe.tasks",
    "evaluate": "fabnet.probe.tasks",
    "task_targets": "fabnet.data.targets",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
