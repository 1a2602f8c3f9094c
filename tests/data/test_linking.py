"""Linking detections into tracks (fabnet.data.linking): every rule on hand-made detections."""

import numpy as np
import pytest

from fabnet.data.linking import iou, is_cut, link, thumbnail


def _moving(n, start=(100.0, 80.0), step=(2.0, 1.0), side=60.0, grow=0.5):
    """Detections (x0, y0, x1, y1, score) of one face moving and growing linearly over n samples."""
    out = []
    for i in range(n):
        x, y, s = start[0] + step[0] * i, start[1] + step[1] * i, side + grow * i
        out.append(np.array([[x, y, x + s, y + s, 10.0]]))
    return out


def _square(box, margin):
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * margin) / 2
    return [cx - half, cy - half, cx + half, cy + half]


def test_steady_motion_is_one_track_followed_without_lag():
    dets = _moving(20)
    (track,) = link(dets, [False] * 20, margin=0.25, smooth=3)
    assert track.samples.tolist() == list(range(20)) and track.detected.all()
    # a linear pan and zoom passes the centred mean unchanged, ends included
    expected = np.array([_square(d[0], 0.25) for d in dets])
    np.testing.assert_allclose(track.boxes, expected, atol=1e-9)


def test_gap_is_interpolated_and_a_long_gap_ends_the_track():
    dets = _moving(20)
    for i in (7, 8, 9):
        dets[i] = np.zeros((0, 5))
    (track,) = link(dets, [False] * 20, max_gap=3, smooth=0, margin=0.0)
    assert track.samples.tolist() == list(range(20))
    assert track.detected.tolist() == [i not in (7, 8, 9) for i in range(20)]
    np.testing.assert_allclose(track.boxes[8], _square(_moving(20)[8][0], 0.0), atol=1e-9)
    assert np.isnan(track.scores[8]) and track.scores[6] == 10.0
    split = link(dets, [False] * 20, max_gap=2, smooth=0)
    assert [t.samples.tolist() for t in split] == [list(range(7)), list(range(10, 20))]


def test_cut_ends_a_track_however_much_the_boxes_overlap():
    dets = [np.array([[100, 100, 160, 160, 5.0]])] * 12
    cuts = [i == 6 for i in range(12)]
    tracks = link(dets, cuts)
    assert [t.samples.tolist() for t in tracks] == [list(range(6)), list(range(6, 12))]


def test_two_faces_keep_their_own_tracks():
    left = _moving(10, start=(50.0, 50.0), step=(1.0, 0.0))
    right = _moving(10, start=(300.0, 60.0), step=(-1.0, 0.0))
    # listed in either order per sample: matching goes by overlap, not by position in the list
    dets = [np.concatenate([a, b] if i % 2 else [b, a]) for i, (a, b) in enumerate(zip(left, right))]
    tracks = link(dets, [False] * 10, smooth=0, margin=0.0)
    assert len(tracks) == 2
    lefts = [t for t in tracks if t.boxes[0, 0] < 200]
    assert len(lefts) == 1 and np.allclose(lefts[0].boxes[:, 0], [50.0 + i for i in range(10)])


def test_size_jump_and_short_tracks():
    dets = [np.array([[100, 100, 160, 160, 5.0]])] * 6 + [np.array([[100, 100, 260, 260, 5.0]])] * 6
    tracks = link(dets, [False] * 12, max_size_ratio=1.5)
    assert [t.samples.tolist() for t in tracks] == [list(range(6)), list(range(6, 12))]
    assert link(dets[:4], [False] * 4, min_length=5) == []


def test_mismatched_inputs_are_named():
    with pytest.raises(ValueError, match="one entry per sample, got 2 and 3"):
        link([np.zeros((0, 5))] * 2, [False] * 3)


def test_iou():
    a = np.array([0.0, 0.0, 10.0, 10.0])
    b = np.array([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    np.testing.assert_allclose(iou(a, b), [1.0, 1 / 3, 0.0])


def test_cut_detector_tells_a_pan_from_a_new_shot():
    """Real photographs (scikit-image's): a 4 px pan across one is no cut; the other is."""
    from skimage import data

    astronaut, coffee = data.astronaut(), data.coffee()
    frame = lambda dx: astronaut[50:290, 50 + dx : 370 + dx]  # noqa: E731
    assert thumbnail(frame(0)).shape == (32, 32)
    assert not is_cut(None, thumbnail(frame(0)))
    assert not is_cut(thumbnail(frame(0)), thumbnail(frame(4)))
    assert is_cut(thumbnail(frame(0)), thumbnail(coffee[:240, :320]))
