"""The trained baselines' objectives: InfoNCE against a loop written from its definition, the
colour augmentation's range, and each objective's loss going down on a fixed set of frames."""

import math

import numpy as np
import pytest
import torch

from fabnet.train.baseline_objectives import augment_colour, info_nce, view_boxes


def _info_nce_by_definition(z1, z2, t):
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1).double()
    n, b = len(z), len(z1)
    total = 0.0
    for i in range(n):
        j = (i + b) % n
        others = [k for k in range(n) if k != i]
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in others)
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / denom)
    return total / n


@pytest.mark.parametrize("b,d,t", [(1, 3, 0.5), (5, 7, 0.2), (8, 128, 0.1)])
def test_info_nce_matches_its_definition(b, d, t):
    g = torch.Generator().manual_seed(b * 100 + d)
    z1, z2 = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    assert float(info_nce(z1, z2, t)) == pytest.approx(_info_nce_by_definition(z1, z2, t), rel=1e-5)


def test_info_nce_is_low_when_views_agree_and_high_when_swapped():
    z = torch.eye(6) * 5
    # Temperature 0.05: the partner's logit is 20 above the other ten when the views agree,
    # 20 below the one wrong view that matches when they are shifted by one.
    agree = float(info_nce(z, z, 0.05))
    swapped = float(info_nce(z, z.roll(1, 0), 0.05))
    assert agree < 1e-6 and swapped > 19


def test_colour_augmentation_stays_in_range_and_varies_per_frame():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8, generator=g)
    y = augment_colour(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    ratio = (y.mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3))).std()
    assert float(ratio) > 0.05  # brightness drawn per frame, not once per batch
    grey = (y[:, 0] == y[:, 1]).all(dim=(1, 2)) & (y[:, 1] == y[:, 2]).all(dim=(1, 2))
    assert 2 <= int(grey.sum()) <= 30  # probability 0.2 of 64: 12.8 expected


def test_view_boxes_are_squares_inside_the_image():
    boxes = view_boxes(60, 48, 500, (0.55, 0.85), np.random.default_rng(0))
    side = boxes[:, 2] - boxes[:, 0]
    assert (side == boxes[:, 3] - boxes[:, 1]).all()
    assert side.min() >= round(0.55 * 48) and side.max() <= round(0.85 * 48)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 60).all() and (boxes[:, 3] <= 48).all()


@pytest.mark.parametrize("method", ["autoencoder", "contrastive", "supervised", "rotation"])
def test_objective_loss_goes_down(method, tmp_path, train_records):
    from fabnet.train.baselines import BaselineConfig, train_baseline

    cfg = BaselineConfig(method=method, size=32, steps=60, batch_size=8, optimizer="adam", lr=1e-3, seed=3)
    losses = train_baseline(cfg, train_records, str(tmp_path / "b.pt")).losses
    assert len(losses) == 60 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-15:]) < 0.9 * np.mean(losses[:15]), (losses[:15], losses[-15:])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["random_init", "autoencoder", "contrastive", "supervised", "rotation"])
def test_baseline_on_cuda_matches_the_cpu_start(method, tmp_path, train_records):
    """The study's GPU preset trains the baselines on the device: same draws, a checkpoint that
    loads on the CPU, losses close to the CPU run's over a few steps."""
    from fabnet.model.checkpoint import load_encoder
    from fabnet.train.baselines import BaselineConfig, train_baseline

    runs = {}
    for device in ("cpu", "cuda"):
        cfg = BaselineConfig(method=method, size=32, steps=3, batch_size=8, seed=1, device=device)
        runs[device] = train_baseline(cfg, train_records, str(tmp_path / f"{device}.pt"))
    np.testing.assert_allclose(runs["cuda"].losses, runs["cpu"].losses, rtol=0.05, atol=1e-3)
    assert next(load_encoder(runs["cuda"].checkpoint).parameters()).device.type == "cpu"


def test_supervised_ignores_missing_labels(tmp_path, train_records):
    import copy

    from fabnet.train.baselines import BaselineConfig, train_baseline

    recs = [copy.copy(r) for r in train_records]
    for r in recs[::2]:  # half the frames unlabelled for pose and expression
        r.pose = (float("nan"),) * 3
        r.expression = -1
    cfg = BaselineConfig(method="supervised", size=32, steps=3, batch_size=8, seed=0)
    losses = train_baseline(cfg, recs, str(tmp_path / "s.pt")).losses
    assert all(math.isfinite(v) for v in losses)


def test_baseline_refuses_bad_input(tmp_path, train_records):
    from fabnet.train.baselines import BaselineConfig, train_baseline

    with pytest.raises(ValueError, match="method must be one of"):
        train_baseline(BaselineConfig(method="simclr"), train_records, str(tmp_path / "x.pt"))
    with pytest.raises(ValueError, match="records must hold"):
        train_baseline(BaselineConfig(method="autoencoder"), [], str(tmp_path / "x.pt"))
