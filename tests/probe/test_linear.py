import numpy as np
import pytest
import torch

from fabnet.probe.linear import LinearProbe, ProbeConfig, fit_probe
from fabnet.probe.tasks import evaluate, task_targets


def _split(x, y, n_train, n_val):
    return (
        x[:n_train],
        y[:n_train],
        x[n_train : n_train + n_val],
        y[n_train : n_train + n_val],
        x[n_train + n_val :],
        y[n_train + n_val :],
    )


def test_probe_architecture():
    p = LinearProbe(256, 7)
    assert isinstance(p[0], torch.nn.BatchNorm1d) and p[0].num_features == 256
    assert p[1].bias is None and tuple(p[1].weight.shape) == (7, 256)


def test_probe_recovers_exact_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 32)).astype(np.float32) * rng.uniform(0.5, 3, 32) + rng.normal(size=32)
    a = rng.normal(size=(32, 3))
    y = x @ a + np.array([1.0, -2.0, 30.0])  # an offset too: BatchNorm's shift must absorb it
    xt, yt, xv, yv, xs, ys = _split(x, y, 1000, 250)
    # Full-batch Adam: no mini-batch noise, so the fit converges to the map itself (about 1400 epochs).
    fit = fit_probe("regression", xt, yt, xv, yv, ProbeConfig(max_epochs=3000, patience=100, batch_size=1000))
    pred = fit.predict(xs)
    rel = np.abs(pred - ys).mean() / np.abs(ys - ys.mean(0)).mean()
    assert rel < 2e-3, rel
    # The probe's end-to-end linear map, BatchNorm (eval mode) folded into the weights and the
    # target standardisation undone, is the generating matrix.
    bn, lin = fit.model[0], fit.model[1]
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    w = (lin.weight.detach().numpy() * scale[None] * fit.target_std[:, None]).T  # (32, 3)
    np.testing.assert_allclose(w, a, atol=5e-3)
    assert fit.best_epoch > 0 and len(fit.history["val_loss"]) == fit.epochs


def test_probe_classification_and_multilabel():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1200, 16)).astype(np.float32)
    w = rng.normal(size=(16, 3))
    cls = np.argmax(x @ w, axis=1)
    fit = fit_probe("multiclass", x[:800], cls[:800], x[800:1000], cls[800:1000], ProbeConfig(max_epochs=60))
    out = evaluate("expression", fit.predict(x[1000:]), cls[1000:])
    assert out["auc_mean"] > 0.97 and out["accuracy"] > 0.85
    lab = (x[:, :4] > 0.3).astype(np.float64)
    lab[5, 1] = np.nan
    fit = fit_probe("multilabel", x[:800], lab[:800], x[800:1000], lab[800:1000], ProbeConfig(max_epochs=60))
    out = evaluate("attributes", fit.predict(x[1000:]), lab[1000:])
    assert out["auc_mean"] > 0.97


def test_early_stopping_restores_best():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 40)).astype(np.float32)  # few samples, many dims: overfits fast
    y = rng.normal(size=(60, 1))
    fit = fit_probe("regression", x[:30], y[:30], x[30:], y[30:], ProbeConfig(max_epochs=500, patience=5))
    assert fit.epochs < 500
    assert fit.epochs - fit.best_epoch == 5
    best = fit.history["val_loss"][fit.best_epoch - 1]
    assert best <= min(fit.history["val_loss"]) * (1 + 1e-4)  # min_delta: smaller gains do not count
    # the returned model is the best epoch's, not the last one's
    z = (y[30:] - fit.target_mean) / fit.target_std
    restored = np.mean((fit.predict(x[30:]) - y[30:]) ** 2 / fit.target_std**2)
    assert restored == pytest.approx(best, rel=1e-4) and z.shape == (30, 1)


class _Rec:
    def __init__(self, pose, lm, expression, attrs, width=100):
        self.pose, self.landmarks, self.expression = np.array(pose, float), np.array(lm, float), expression
        self.attributes, self.width = np.array(attrs, float), width


def test_task_targets():
    recs = [
        _Rec([1, 2, 3], [[10, 20], [30, 40]], 2, [1, 0]),
        _Rec([np.nan, 0, 0], [[np.nan, 1], [1, 1]], -1, [np.nan, np.nan]),
    ]
    t = task_targets("pose", recs)
    assert t.keep.tolist() == [True, False] and t.y.tolist() == [[1, 2, 3]]
    t = task_targets("landmarks", recs, boxes=[[10, 10, 60, 60], [0, 0, 100, 100]])
    np.testing.assert_allclose(t.y, [[0.0, 0.2, 0.4, 0.6]])
    assert task_targets("expression", recs).y.tolist() == [2]
    assert task_targets("attributes", recs).keep.tolist() == [True, False]
    with pytest.raises(ValueError, match="task must be one of"):
        task_targets("age", recs)
