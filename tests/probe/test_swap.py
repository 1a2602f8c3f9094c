"""fabnet.probe.swap: the pose-nearest pairing by hand, the study's L1s against the model itself."""

import dataclasses

import numpy as np
import pytest
import torch

from fabnet import ops
from fabnet.model.fabnet import OP_KWARGS
from fabnet.probe.swap import CONDITIONS, _draw_samples, pose_nearest_other_identity, target_swap_study


def test_pose_nearest_other_identity_by_hand():
    pose = np.array([[0, 0, 0], [10, 0, 0], [50, 0, 0], [12, 1, 0], [-40, 0, 0]], np.float64)
    ids = ["a", "a", "b", "b", "c"]
    # L1 distances to the other identities' frames, worked out by hand:
    # 0 -> {2: 50, 3: 13, 4: 40}; 1 -> {2: 40, 3: 3, 4: 50}; 2 -> {0: 50, 1: 40, 4: 90};
    # 3 -> {0: 13, 1: 3, 4: 53}; 4 -> {0: 40, 1: 50, 2: 90, 3: 53}
    assert pose_nearest_other_identity(pose, ids).tolist() == [3, 3, 1, 1, 0]
    assert pose_nearest_other_identity(pose[:2], ids[:2]).tolist() == [-1, -1]  # one identity only
    with pytest.raises(ValueError, match=r"pose must be \(N, 3\)"):
        pose_nearest_other_identity(pose[:, :2], ids)
    with pytest.raises(ValueError, match="identities"):
        pose_nearest_other_identity(pose, ids[:4])


def test_draw_samples_targets_once_sources_from_the_track():
    recs = [_rec(i, t, f) for i in range(3) for t in range(2) for f in range(4)]
    recs += [_rec(9, 0, 0)]  # a one-frame track cannot give a source
    drawn = _draw_samples(recs, 2, 100, np.random.default_rng(0))
    targets = [t for t, _, _ in drawn]
    assert len(drawn) == 24 and len(set(targets)) == 24 and 24 not in targets
    for t, sources, other in drawn:
        assert len(set(sources)) == 2 and t not in sources and other != t
        assert {recs[i].track_key for i in sources + [other]} == {recs[t].track_key}
    assert len(_draw_samples(recs, 2, 5, np.random.default_rng(0))) == 5


def _rec(identity, track, frame):
    from fabnet.data.labels import FrameRecord

    return FrameRecord(path="", relpath="", identity=f"id{identity}", video=f"v{track}", track="t", frame=frame)


def _checkpoint(path, num_sources):
    from fabnet.model import FabNet
    from fabnet.model.checkpoint import FORMAT, save_checkpoint

    torch.manual_seed(num_sources)
    # Random last convs: decoder outputs that depend on the embeddings, as after training.
    model = FabNet(size=32, num_sources=num_sources, identity_init=False)
    for m in model.modules():  # running statistics = those of the one batch below, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model.train()
        model(torch.rand(6, 3, 32, 32), torch.rand(6, num_sources, 3, 32, 32))
    save_checkpoint({"format": FORMAT, "model_config": model.config(), "model": model.state_dict()}, str(path))
    return model.eval()


@pytest.mark.parametrize("num_sources", [1, 2])
def test_study_matches_the_model(records, tmp_path, num_sources):
    from fabnet.probe.frames import eval_boxes, load_crops

    model = _checkpoint(tmp_path / "ck.pt", num_sources)
    out = target_swap_study(str(tmp_path / "ck.pt"), records, samples=12, seed=3)
    assert out["samples"] == 12 and out["num_sources"] == num_sources and set(out["l1"]) == set(CONDITIONS)

    # The same draw, recomputed with the model's own forward pass.
    drawn = _draw_samples(records, num_sources, 12, np.random.default_rng(3))

    def crops(rows):
        recs = [records[i] for i in rows]
        return load_crops([r.path for r in recs], eval_boxes(recs), 32)

    target = crops([t for t, _, _ in drawn])
    sources = crops([s for _, srcs, _ in drawn for s in srcs]).view(12, num_sources, 3, 32, 32)
    with torch.no_grad():
        own = model(target, sources).mean().item()
        # unwarped: identity sampling at pixel centres, equal weights = the plain mean of the sources
        unwarped = (target - sources.mean(1)).abs().mean().item()
        # track mean: the decoders fed the mean embedding of the target's track
        emb = model.encoder(crops(range(len(records))))
        keys = [records[t].track_key for t, _, _ in drawn]
        v_t = torch.stack([emb[[i for i, r in enumerate(records) if r.track_key == k]].mean(0) for k in keys])
        v_s = emb[[s for _, srcs, _ in drawn for s in srcs]].view(12, num_sources, -1)
        flows, logits = model.decode(v_t, v_s)
        track_mean = ops.warp_blend_l1(sources, flows, logits, target, **OP_KWARGS).mean().item()
    assert out["l1"]["own"] == pytest.approx(own, rel=1e-4)
    assert out["l1"]["unwarped"] == pytest.approx(unwarped, rel=1e-4)
    assert out["l1"]["track_mean"] == pytest.approx(track_mean, rel=1e-4)
    assert out["l1"]["same_track_other"] != pytest.approx(out["l1"]["own"], rel=1e-4)  # the swap reaches the decoder


def test_unlabelled_records_drop_the_pose_condition(records, tmp_path):
    _checkpoint(tmp_path / "ck.pt", 1)
    unlabelled = [dataclasses.replace(r, pose=np.full(3, np.nan, np.float32)) for r in records]
    out = target_swap_study(str(tmp_path / "ck.pt"), unlabelled, samples=4)
    assert set(out["l1"]) == set(CONDITIONS) - {"other_identity_pose"}
    one_identity = [r for r in records if r.identity == records[0].identity]
    out = target_swap_study(str(tmp_path / "ck.pt"), one_identity, samples=4)
    assert set(out["l1"]) == {"own", "same_track_other", "track_mean", "unwarped"}


def test_encoder_only_checkpoint_is_refused(records, tmp_path):
    from fabnet.model.checkpoint import FORMAT, save_checkpoint

    model = _checkpoint(tmp_path / "ck.pt", 1)
    enc = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    save_checkpoint({"format": FORMAT, "model_config": model.config(), "model": enc}, str(tmp_path / "enc.pt"))
    with pytest.raises(ValueError, match="no flow decoder"):
        target_swap_study(str(tmp_path / "enc.pt"), records)


@pytest.mark.parametrize("kwargs", [{"samples": 0}, {"samples": -3}, {"batch_size": 0}, {"samples": 2.5}])
def test_bad_counts_are_named(records, tmp_path, kwargs):
    _checkpoint(tmp_path / "ck.pt", 1)
    ((name, value),) = kwargs.items()
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1, got {value!r}"):
        target_swap_study(str(tmp_path / "ck.pt"), records, **kwargs)
