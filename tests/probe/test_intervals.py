"""The identity bootstrap of fabnet.probe.intervals and the noise floor of fabnet.probe.noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fabnet.probe.intervals import identity_bootstrap
from fabnet.probe.noise import NoiseEncoder


def _errors(num_ids, per_id, spread, seed=0):
    """Per-frame errors whose identity means differ by ``spread`` (frames of one id correlated)."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(num_ids), per_id)
    err = 10 + rng.normal(0, spread, num_ids)[ids] + rng.normal(0, 0.1, ids.size)
    return err, ids


def test_interval_covers_the_mean_with_the_normal_width():
    for num_ids in (6, 150):
        err, ids = _errors(num_ids, 8, spread=2.0)
        low, high = identity_bootstrap(lambda rows, err=err: err[rows].mean(), ids, resamples=500)
        assert low < err.mean() < high
    # 150 identities: the normal interval of a mean of 150 draws of sd 2 is 2 x 1.96 x 2 / sqrt(150).
    expected = 2 * 1.96 * 2.0 / np.sqrt(150)
    assert 0.75 * expected < high - low < 1.25 * expected


def test_resampling_identities_not_frames():
    """Frames of one identity share its error: resampling frames would give an interval ~8x too
    narrow (sqrt of 64 frames per identity); resampling identities does not."""
    err, ids = _errors(20, 64, spread=2.0)
    low, high = identity_bootstrap(lambda rows: err[rows].mean(), ids, resamples=800)
    sd_of_mean = 2.0 / np.sqrt(20)
    assert 2.5 * sd_of_mean < high - low < 5.5 * sd_of_mean


def test_nan_resamples_are_left_out_and_bad_input_is_named():
    ids = np.array([0, 0, 1, 1])
    assert identity_bootstrap(lambda rows: float("nan"), ids, resamples=10) != [1, 2]
    with pytest.raises(ValueError, match="identities must be a non-empty 1-d array"):
        identity_bootstrap(lambda rows: 0.0, np.array([]))
    with pytest.raises(ValueError, match="resamples must be an integer >= 2; got 1"):
        identity_bootstrap(lambda rows: 0.0, ids, resamples=1)


def test_noise_encoder_is_fixed_per_frame_and_ignores_the_face():
    enc = NoiseEncoder(8)
    x = torch.rand(3, 3, 8, 8)
    a, b = enc(x), enc(x.clone())
    assert a.shape == (3, 256) and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])
    assert abs(a.mean().item()) < 0.2 and 0.8 < a.std().item() < 1.2
    with pytest.raises(ValueError, match=r"x: expected \(B, 3, 8, 8\)"):
        enc(torch.rand(2, 3, 4, 4))
