import numpy as np
import pytest
from PIL import Image

from fabnet.probe.retrieval import cosine_neighbours, draw_grid, identity_share, pick_queries, within_track_pose_r2


def test_neighbours_exclude_query_identity():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 8))
    ids = np.repeat(np.arange(8), 5)
    emb[1] = emb[0] * 3  # same identity, identical direction: must NOT be returned for query 0
    emb[7] = emb[0] * 0.5 + 1e-3  # other identity, nearly identical: must come first
    idx, sim = cosine_neighbours(emb[[0, 10]], emb, ids[[0, 10]], ids, k=6)
    assert idx.shape == (2, 6)
    for row, q in enumerate([0, 10]):
        assert (ids[idx[row]] != ids[q]).all()
        assert np.all(np.diff(sim[row]) <= 1e-12)
    assert idx[0, 0] == 7 and sim[0, 0] > 0.999
    # brute force check of the ranking
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    s = e[0] @ e.T
    s[ids == 0] = -np.inf
    np.testing.assert_array_equal(idx[0], np.argsort(-s, kind="stable")[:6])


def test_neighbours_pad_when_few_candidates():
    emb = np.eye(3)
    idx, sim = cosine_neighbours(emb[:1], emb, ["a"], ["a", "a", "b"], k=4)
    assert idx.tolist() == [[2, -1, -1, -1]]
    assert np.isneginf(sim[0, 1:]).all()


def test_identity_share_hand_computed():
    # 1-d: identity a at 0, 2 (mean 1), identity b at 4, 6 (mean 5); overall mean 3.
    # total = 9 + 1 + 1 + 9 = 20; within = 1 + 1 + 1 + 1 = 4; share = 1 - 4 / 20 = 0.8.
    emb = np.array([[0.0], [2.0], [4.0], [6.0]])
    assert identity_share(emb, ["a", "a", "b", "b"]) == pytest.approx(0.8)
    # Identical identity means: all variance within identities.
    assert identity_share(np.array([[0.0], [2.0], [0.0], [2.0]]), ["a", "a", "b", "b"]) == pytest.approx(0.0)
    # Constant embeddings carry no variance to split.
    assert identity_share(np.ones((3, 2)), [0, 1, 1]) == 0.0
    with pytest.raises(ValueError, match="identities"):
        identity_share(np.ones((3, 2)), [0, 1])


def test_within_track_pose_r2_hand_computed():
    # Two tracks of 4 frames. Within each, yaw runs -1, -1, 1, 1 and a second embedding axis runs
    # -1, 1, -1, 1: orthogonal to yaw, the same variance. Dimension 0 is yaw, dimension 1 the other
    # change, so pose explains half the frame-to-frame variance: R^2 = 4 * 2 / (4 * 2 + 4 * 2) = 0.5.
    yaw = np.array([-1.0, -1.0, 1.0, 1.0])
    other = np.array([-1.0, 1.0, -1.0, 1.0])
    pose = np.zeros((8, 3))
    pose[:, 0] = np.tile(yaw, 2) + np.repeat([0.0, 30.0], 4)  # the track's mean pose drops out too
    emb = np.stack([np.tile(yaw, 2), np.tile(other, 2)], 1)
    emb += np.repeat([[0.0, 0.0], [50.0, -70.0]], 4, axis=0)  # a large identity offset: no effect
    tracks = np.repeat(["a", "b"], 4)
    assert within_track_pose_r2(emb, tracks, pose) == pytest.approx(0.5)
    # Scaled yaw only: pose explains everything; the other axis only: nothing.
    assert within_track_pose_r2(3.0 * emb[:, :1], tracks, pose) == pytest.approx(1.0)
    assert within_track_pose_r2(emb[:, 1:], tracks, pose) == pytest.approx(0.0, abs=1e-12)
    # Frames without a pose label are left out rather than poisoning the fit.
    pose_nan = np.vstack([pose, [[np.nan, 0.0, 0.0]]])
    emb_nan = np.vstack([emb, [[1e6, 1e6]]])
    assert within_track_pose_r2(emb_nan, np.append(tracks, "a"), pose_nan) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="pose"):
        within_track_pose_r2(emb, tracks, pose[:5])


def test_pick_queries_spread_over_identities():
    ids = np.repeat(["a", "b", "c"], [10, 2, 1])
    q = pick_queries(ids, 3, seed=1)
    assert sorted(ids[q]) == ["a", "b", "c"]
    assert len(pick_queries(ids, 50)) == 13


def test_draw_grid(tmp_path):
    paths = []
    for i in range(4):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (20, 20), (60 * i, 0, 0)).save(p)
        paths.append(str(p))
    out = draw_grid(
        paths,
        [0, 1],
        np.array([[2, 3], [3, -1]]),
        str(tmp_path / "g.png"),
        tile=32,
        captions=lambda r: f"r{r}",
        title="t",
    )
    im = Image.open(out)
    assert im.size[0] == 3 * 32 + 8
