"""The demo's confidence study: which samples it draws, and its statistic on a model with known confidences."""

import numpy as np
import pytest
import torch

from fabnet.probe.confidence import _confidence_examples, _every_target, confidence_study


def _rec(identity, track, frame, yaw, pitch=0.0):
    from fabnet.data.labels import FrameRecord

    return FrameRecord(
        path="",
        relpath="",
        identity=f"id{identity}",
        video=f"v{track}",
        track="t",
        frame=frame,
        pose=np.array([yaw, pitch, 0.0], np.float32),
    )


# Two tracks of 5 frames with known yaws, one 3-frame track too short for K = 3.
YAWS = {(0, 0): [10, -30, 40, 0, 20], (1, 0): [5, 15, -5, 25, -15], (2, 0): [0, 1, 2]}
RECORDS = [_rec(i, t, f, y) for (i, t), ys in YAWS.items() for f, y in enumerate(ys)]


def test_every_target_uses_each_frame_once_with_sources_spread_in_yaw():
    samples = _every_target(RECORDS, 3)
    assert len(samples) == 10  # the 3-frame track has no 3 sources besides its target
    assert len({id(t) for t, _ in samples}) == 10
    for target, sources in samples:
        rest = sorted(float(r.pose[0]) for r in RECORDS if r.track_key == target.track_key and r is not target)
        assert [float(r.pose[0]) for r in sources] == [rest[0], rest[2], rest[3]]  # ranks round(0, 1.5, 3)
        assert all(r.track_key == target.track_key and r is not target for r in sources)


def test_figure_examples_one_per_track_at_most_count():
    samples = _confidence_examples(RECORDS, 3, 5, seed=0)
    assert len(samples) == 2 and len({t.track_key for t, _ in samples}) == 2
    assert len(_confidence_examples(RECORDS, 3, 1, seed=0)) == 1


def _uniform_confidence_checkpoint(path):
    """A 3-source model whose confidence logits are 0 everywhere: softmax 1/3, argmax source 0."""
    from fabnet.model import FabNet
    from fabnet.model.checkpoint import FORMAT, save_checkpoint

    torch.manual_seed(0)
    model = FabNet(size=32, num_sources=3)
    last = [m for m in model.confidence_decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    save_checkpoint({"format": FORMAT, "model_config": model.config(), "model": model.state_dict()}, str(path))


def test_statistic_on_uniform_confidences(records, tmp_path):
    _uniform_confidence_checkpoint(tmp_path / "ck.pt")
    out = confidence_study(str(tmp_path / "ck.pt"), records, str(tmp_path / "fig.png"), rows=2, seed=0)
    samples = _every_target(records, 3)
    assert out["samples"] == len(samples) == len(records) == 40
    assert out["num_sources"] == 3 and out["chance_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert out["max_confidence_mean"] == pytest.approx(1 / 3, abs=1e-4)
    # Every pixel's argmax is source 0 (ties go to the first), so the share is the fraction of
    # samples whose pose-nearest source (L1 over yaw, pitch, roll) is source 0, counted here.
    nearest0 = [int(np.argmin([np.abs(r.pose - t.pose).sum() for r in srcs]) == 0) for t, srcs in samples]
    assert out["nearest_pose_share"] == pytest.approx(np.mean(nearest0), abs=1e-4)
    assert (tmp_path / "fig.png").stat().st_size > 0
