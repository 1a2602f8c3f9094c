"""Evaluating a frozen embedding: linear probes, retrieval, baselines and the end-to-end demo.

    metrics     NME / inter-ocular distance, pose MAE, ROC AUC (ties counted 1/2)
    linear      LinearProbe = BatchNorm1d + Linear(bias=False); fit_probe with early stopping
    tasks       landmarks / pose / expression / attributes: targets from frame records, test metrics
    frames      evaluation crops and embeddings through any checkpoint's frozen encoder
    pipeline    embed the splits, probe a task, retrieval figure and pose agreement
    retrieval   cosine nearest neighbours across identities, Figure-5 style grid
    baselines   random-init encoder, autoencoder, rotation prediction (FAb-Net's checkpoint format)
    pixels      PixelEncoder: the crop's raw pixels as the embedding, the no-learning reference
    demo        synthetic data -> FAb-Net 1 and 3 sources -> baselines -> probes -> report
    cli         ``fabnet embed / probe / retrieve / demo``
"""

from fabnet.probe.linear import FittedProbe, LinearProbe, ProbeConfig, fit_probe
from fabnet.probe.metrics import multiclass_auc, multilabel_auc, nme_iod, pose_mae, roc_auc
from fabnet.probe.retrieval import cosine_neighbours
from fabnet.probe.tasks import MAIN_METRIC, TASKS, evaluate, task_targets

__all__ = ["FittedProbe", "LinearProbe", "MAIN_METRIC", "ProbeConfig", "TASKS", "cosine_neighbours", "evaluate",
           "fit_probe", "multiclass_auc", "multilabel_auc", "nme_iod", "pose_mae", "roc_auc", "task_targets"]
