"""The paper's linear probe: BatchNorm1d + Linear without bias, on frozen embeddings.

The encoder is frozen, so the probe trains on embeddings computed once (``fabnet.probe.embed``)
rather than on images: one pass of the encoder per frame instead of one per frame per epoch.

Losses, as in Section 5.1 of the paper:

- ``regression`` (landmarks, pose): MSE. Targets are standardised per output (train mean and
  standard deviation) before the loss and predictions mapped back: the same minimiser up to a
  per-output weight, but pose in degrees (std ~20) would otherwise need ~100x more Adam steps
  at lr 1e-3 to reach its scale.
- ``multiclass`` (expression): cross-entropy with class weights inversely proportional to the
  train frequencies, ``w_c = N / (C * n_c)`` (a balanced set gets weight 1 everywhere).
- ``multilabel`` (attributes): one binary cross-entropy per column with ``pos_weight =
  n_neg / n_pos`` (the same inverse-frequency re-weighting for each binary problem); NaN
  labels are masked out.

Training: Adam (lr 1e-3, betas 0.9 / 0.999), mini-batches, early stopping on the validation
loss (the state of the best epoch is restored).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

KINDS = ("regression", "multiclass", "multilabel")


class LinearProbe(nn.Sequential):
    """``BatchNorm1d(in_features)`` then ``Linear(in_features, out_features, bias=False)``.

    Input (B, in_features) embeddings, output (B, out_features): regression values (in
    standardised units), class logits or per-label logits.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__(nn.BatchNorm1d(in_features), nn.Linear(in_features, out_features, bias=False))


@dataclass
class ProbeConfig:
    """Optimiser and stopping rule of a probe.

    lr, betas: Adam's (the paper's 1e-3, (0.9, 0.999)). batch_size: samples per step.
    max_epochs: upper bound on passes over the train set. patience: epochs without a new best
    validation loss before stopping. min_delta: relative improvement that counts as new best.
    seed: initialisation and batch order.
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 64
    max_epochs: int = 300
    patience: int = 20
    min_delta: float = 1e-4
    seed: int = 0


@dataclass
class FittedProbe:
    """A trained probe and what is needed to turn its outputs into predictions."""

    kind: str
    model: LinearProbe
    target_mean: np.ndarray | None = None  # regression only: (K,)
    target_std: np.ndarray | None = None
    best_epoch: int = 0
    epochs: int = 0
    history: dict = field(default_factory=lambda: {"train_loss": [], "val_loss": []})
    config: dict = field(default_factory=dict)

    @torch.no_grad()
    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """(N, K) predictions for embeddings x: (N, D).

        regression: values in the targets' units; multiclass: softmax probabilities;
        multilabel: sigmoid probabilities.
        """
        self.model.eval()
        out = self.model(torch.as_tensor(np.asarray(x), dtype=torch.float32)).double().numpy()
        if self.kind == "regression":
            return out * self.target_std + self.target_mean
        if self.kind == "multiclass":
            out = out - out.max(axis=1, keepdims=True)
            e = np.exp(out)
            return e / e.sum(axis=1, keepdims=True)
        return 1.0 / (1.0 + np.exp(-out))


def _prepare_targets(kind: str, y: np.ndarray, num_outputs: int | None):
    if kind == "regression":
        y = np.asarray(y, np.float64)
        if y.ndim != 2:
            raise ValueError(f"regression targets must be (N, K); got shape {y.shape}")
        return y, y.shape[1]
    if kind == "multiclass":
        y = np.asarray(y).astype(np.int64).reshape(-1)
        if (y < 0).any():
            raise ValueError("multiclass targets must be class indices >= 0; drop unknown (-1) labels first")
        return y, int(num_outputs or y.max() + 1)
    if kind == "multilabel":
        y = np.asarray(y, np.float64)
        if y.ndim != 2:
            raise ValueError(f"multilabel targets must be (N, A); got shape {y.shape}")
        return y, y.shape[1]
    raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")


def _objective(kind: str, y_train: np.ndarray, y_val: np.ndarray, k: int, fitted: FittedProbe):
    """(loss_fn(out, y), train targets, validation targets) of a probe ``kind``. Regression
    targets are standardised (the scale kept in ``fitted``); classes absent from training and
    attributes without positives get no weight; unknown (NaN) targets drop out of the loss."""
    if kind == "regression":
        mean = np.nanmean(y_train, axis=0)
        std = np.nanstd(y_train, axis=0)
        std = np.where(std > 1e-8, std, 1.0)
        fitted.target_mean, fitted.target_std = mean, std

        def mse(out, y):
            mask = ~torch.isnan(y)
            return ((out - torch.nan_to_num(y)) ** 2)[mask].mean()

        scale = lambda y: torch.as_tensor((y - mean) / std, dtype=torch.float32)  # noqa: E731
        return mse, scale(y_train), scale(y_val)
    if kind == "multiclass":
        counts = np.bincount(y_train, minlength=k).astype(np.float64)
        # Classes absent from the train split get weight 0 (they cannot be learnt anyway).
        weights = np.where(counts > 0, len(y_train) / (k * np.maximum(counts, 1)), 0.0)
        criterion = nn.CrossEntropyLoss(weight=torch.as_tensor(weights, dtype=torch.float32))
        return criterion, torch.as_tensor(y_train), torch.as_tensor(y_val)
    pos = np.nansum(y_train, axis=0)
    neg = np.sum(~np.isnan(y_train), axis=0) - pos
    pos_weight = torch.as_tensor(np.where(pos > 0, neg / np.maximum(pos, 1), 1.0), dtype=torch.float32)

    def bce(out, y):
        mask = ~torch.isnan(y)
        per = nn.functional.binary_cross_entropy_with_logits(
            out, torch.nan_to_num(y), pos_weight=pos_weight, reduction="none"
        )
        return per[mask].mean()

    as_float = lambda y: torch.as_tensor(y, dtype=torch.float32)  # noqa: E731
    return bce, as_float(y_train), as_float(y_val)


def fit_probe(
    kind: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: ProbeConfig | None = None,
    num_outputs: int | None = None,
) -> FittedProbe:
    """Train a ``LinearProbe`` on frozen embeddings with early stopping on the validation loss.

    kind: "regression" (y: (N, K) floats), "multiclass" (y: (N,) class ids; ``num_outputs``
        classes, default max + 1) or "multilabel" (y: (N, A) 0/1, NaN = unknown).
    x_train, x_val: (N, D) embeddings. The validation set only picks the stopping epoch.
    """
    config = config or ProbeConfig()
    x_train = np.asarray(x_train, np.float32)
    x_val = np.asarray(x_val, np.float32)
    y_train, k = _prepare_targets(kind, y_train, num_outputs)
    y_val, _ = _prepare_targets(kind, y_val, k)
    if len(x_train) < 2:
        raise ValueError(f"need at least 2 training samples for BatchNorm; got {len(x_train)}")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = LinearProbe(x_train.shape[1], k)
    fitted = FittedProbe(kind=kind, model=model, config=asdict(config))
    loss_fn, yt, yv = _objective(kind, y_train, y_val, k, fitted)
    xt, xv = torch.as_tensor(x_train), torch.as_tensor(x_val)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=tuple(config.betas))
    n = len(xt)
    bs = min(config.batch_size, n)
    best, best_state, bad = math.inf, copy.deepcopy(model.state_dict()), 0
    for epoch in range(config.max_epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            if len(idx) < 2:  # BatchNorm needs two samples in training mode
                continue
            loss = loss_fn(model(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        model.eval()
        with torch.no_grad():
            val = float(loss_fn(model(xv), yv)) if len(xv) else total / max(count, 1)
        fitted.history["train_loss"].append(total / max(count, 1))
        fitted.history["val_loss"].append(val)
        fitted.epochs = epoch + 1
        if math.isinf(best) or val < best - config.min_delta * abs(best):
            best, best_state, bad, fitted.best_epoch = val, copy.deepcopy(model.state_dict()), 0, epoch + 1
        else:
            bad += 1
            if bad >= config.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return fitted


__all__ = ["FittedProbe", "KINDS", "LinearProbe", "ProbeConfig", "fit_probe"]
