import math

import numpy as np
import pytest

from fabnet.probe.metrics import multiclass_auc, multilabel_auc, nme_iod, pose_mae, roc_auc
from fabnet.probe.tasks import evaluate


def test_nme_iod_hand_computed():
    # Face 0: outer eye corners (landmarks 0 and 1) 10 px apart; errors 3-4-5 on one landmark, 0 elsewhere.
    target = np.array([[[0.0, 0.0], [10.0, 0.0], [5.0, 5.0]], [[0.0, 0.0], [0.0, 4.0], [1.0, 1.0]]])
    pred = target.copy()
    pred[0, 2] += [3.0, 4.0]  # error 5 on 1 of 3 landmarks: mean 5/3, / IOD 10 -> 16.67 %
    pred[1, 0] += [1.0, 0.0]  # error 1 on 1 of 3: mean 1/3, / IOD 4 -> 8.33 %
    out = nme_iod(pred, target, (0, 1))
    np.testing.assert_allclose(out, [100 * 5 / 3 / 10, 100 * 1 / 3 / 4])


def test_nme_iod_scale_free_and_zero_iod():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(4, 5, 2))
    p = t + rng.normal(scale=0.1, size=t.shape)
    np.testing.assert_allclose(nme_iod(p, t, (0, 3)), nme_iod(7 * p, 7 * t, (0, 3)))
    t[1, 3] = t[1, 0]
    assert math.isnan(nme_iod(p, t, (0, 3))[1])


def test_pose_mae_hand_computed():
    target = np.array([[10.0, 0.0, -5.0], [20.0, 10.0, 5.0]])
    pred = np.array([[12.0, -1.0, -5.0], [14.0, 10.0, 8.0]])
    np.testing.assert_allclose(pose_mae(pred, target), [4.0, 0.5, 1.5])
    out = evaluate("pose", pred, target)
    assert out["mae_yaw"] == 4.0 and out["mae_pitch"] == 0.5 and out["mae_roll"] == 1.5
    assert out["mae_deg"] == pytest.approx(2.0)


def test_roc_auc_hand_computed():
    # pos scores 0.8, 0.4; neg 0.6, 0.2: pairs (0.8>0.6, 0.8>0.2, 0.4<0.6, 0.4>0.2) -> 3/4
    assert roc_auc([1, 0, 1, 0], [0.8, 0.6, 0.4, 0.2]) == pytest.approx(0.75)
    assert roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.1, 0.2]) == 0.0


def test_roc_auc_ties():
    # pos {0.5, 0.7}, neg {0.5, 0.3}: pairs 0.5=0.5 (1/2), 0.5>0.3, 0.7>0.5, 0.7>0.3 -> 3.5/4
    assert roc_auc([1, 0, 1, 0], [0.5, 0.5, 0.7, 0.3]) == pytest.approx(0.875)
    # all scores equal: 1/2
    assert roc_auc([1, 0, 0, 1, 0], [1, 1, 1, 1, 1]) == pytest.approx(0.5)
    # one class only: undefined
    assert math.isnan(roc_auc([1, 1], [0.1, 0.2]))


def test_roc_auc_matches_pairwise_count():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = rng.integers(0, 10, 200).astype(float)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    ref = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert roc_auc(y, s) == pytest.approx(ref)


def test_roc_auc_nan_labels_ignored():
    assert roc_auc([1, np.nan, 0], [0.9, 0.0, 0.1]) == 1.0


def test_multiclass_and_multilabel_auc():
    y = np.array([0, 1, 2, 2, -1])
    s = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [1, 0, 0]])
    # class 0: pos 0.8 vs neg 0.2, 0.1, 0.5 -> 1; class 1: pos 0.7 vs 0.1, 0.2, 0.4 -> 1;
    # class 2: pos 0.7, 0.1 vs neg 0.1, 0.1 -> (1 + 1 + 0.5 + 0.5) / 4
    np.testing.assert_allclose(multiclass_auc(y, s), [1.0, 1.0, 0.75])
    out = evaluate("expression", s[:4], y[:4], class_names=["a", "b", "c"])
    assert out["auc_c"] == 0.75 and out["auc_mean"] == pytest.approx(2.75 / 3)
    labels = np.array([[1, 0], [0, np.nan], [1, 1], [0, 0]])
    scores = np.array([[0.9, 0.2], [0.1, 0.9], [0.4, 0.8], [0.5, 0.3]])
    # col 0: pos 0.9, 0.4 vs neg 0.1, 0.5 -> 3/4; col 1: pos 0.8 vs 0.2, 0.3 -> 1
    np.testing.assert_allclose(multilabel_auc(labels, scores), [0.75, 1.0])
