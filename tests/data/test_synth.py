"""The synthetic generator: determinism, label sanity, and labels that match the pixels."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from fabnet.data import (
    ATTRIBUTE_NAMES,
    EXPRESSION_NAMES,
    EYE_CORNERS,
    LANDMARK_NAMES,
    MOUTH_CORNERS,
    NOSE_TIP,
    OUTER_EYE_CORNERS,
    load_index,
    synthesize,
)
from fabnet.data.face import FrameState, sample_identity
from fabnet.data.render import project_landmarks, render_frame
from fabnet.data.synth import POSE_RANGE
from tests.data.conftest import FRAMES, IDENTITIES, SIZE, TRACKS


def _digest(root: str) -> dict[str, str]:
    """sha256 of every file under root (relative path -> hex)."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    kw = dict(identities=2, tracks_per_identity=1, frames_per_track=3, size=32, progress=False)
    digests = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        synthesize(str(tmp_path / name), seed=seed, **kw)
        digests[name] = _digest(str(tmp_path / name))
    a, b, c = digests["a"], digests["b"], digests["c"]
    assert {"labels.csv", "labels.json", "contact_sheet.png", "landmarks.png"} <= set(a)
    assert len([k for k in a if k.endswith(".jpg")]) == 2 * 3
    assert a == b, "same seed must give byte-identical frames, labels and previews"
    assert all(a[k] != c[k] for k in a if k.endswith(".jpg")), "a different seed must change every frame"
    assert a["labels.csv"] != c["labels.csv"]


def test_adding_identities_keeps_existing_ones(tmp_path):
    kw = dict(tracks_per_identity=1, frames_per_track=2, size=24, seed=3, progress=False, previews=False)
    synthesize(str(tmp_path / "one"), 1, **kw)
    synthesize(str(tmp_path / "two"), 2, **kw)
    one, two = _digest(str(tmp_path / "one")), _digest(str(tmp_path / "two"))
    frames_one = {k: v for k, v in one.items() if k.endswith(".jpg")}
    assert len(frames_one) == 2 and all(two[k] == v for k, v in frames_one.items())


def test_workers_do_not_change_the_output(tmp_path):
    kw = dict(identities=2, tracks_per_identity=1, frames_per_track=2, size=24, seed=1, progress=False, previews=False)
    synthesize(str(tmp_path / "one"), workers=1, **kw)
    synthesize(str(tmp_path / "two"), workers=2, **kw)
    assert _digest(str(tmp_path / "one")) == _digest(str(tmp_path / "two"))


def test_label_names():
    assert len(LANDMARK_NAMES) >= 20
    names = [LANDMARK_NAMES[i] for i in EYE_CORNERS]
    assert names == ["eye_l_outer", "eye_l_inner", "eye_r_inner", "eye_r_outer"]
    assert [LANDMARK_NAMES[i] for i in OUTER_EYE_CORNERS] == ["eye_l_outer", "eye_r_outer"]
    assert LANDMARK_NAMES[NOSE_TIP] == "nose_tip"
    assert [LANDMARK_NAMES[i] for i in MOUTH_CORNERS] == ["mouth_l", "mouth_r"]
    assert len(EXPRESSION_NAMES) >= 4 and len(ATTRIBUTE_NAMES) >= 4


def test_labels_are_sane(synth_root):
    records = load_index(synth_root, "all")
    assert len(records) == IDENTITIES * TRACKS * FRAMES
    lm = np.stack([r.landmarks for r in records])  # (N, L, 2)
    assert lm.shape[1:] == (len(LANDMARK_NAMES), 2) and np.isfinite(lm).all()
    assert (lm >= 0).all() and (lm < SIZE).all(), "every landmark must lie inside the frame"
    pose = np.stack([r.pose for r in records])  # (N, 3)
    assert (np.abs(pose) <= np.array(POSE_RANGE) + 1e-3).all()
    # The pose range is covered, not just respected: both signs and a good spread of yaw.
    assert pose[:, 0].min() < -25 and pose[:, 0].max() > 25
    assert pose[:, 1].min() < -10 and pose[:, 1].max() > 10 and pose[:, 2].min() < -8 and pose[:, 2].max() > 8
    expr = np.array([r.expression for r in records])
    assert set(expr) == set(range(len(EXPRESSION_NAMES))), "every expression class must occur"
    attrs = np.stack([r.attributes for r in records])
    assert attrs.shape[1] == len(ATTRIBUTE_NAMES) and set(np.unique(attrs)) == {0.0, 1.0}
    assert (attrs.mean(0) > 0.05).all() and (attrs.mean(0) < 0.95).all(), "each attribute takes both values"
    # Attributes follow the expression classes they define.
    a = {n: attrs[:, i] for i, n in enumerate(ATTRIBUTE_NAMES)}
    assert (a["smile"][expr == EXPRESSION_NAMES.index("smile")] == 1).all()
    assert (a["brows_raised"][expr == EXPRESSION_NAMES.index("surprise")] == 1).all()
    assert (a["eyes_closed"][expr == EXPRESSION_NAMES.index("sleepy")] == 1).all()
    # Inter-ocular distance: well above a pixel, well below the frame.
    iod = np.linalg.norm(lm[:, OUTER_EYE_CORNERS[0]] - lm[:, OUTER_EYE_CORNERS[1]], axis=1)
    assert (iod > 0.08 * SIZE).all() and (iod < 0.5 * SIZE).all()


def test_pose_moves_smoothly_within_a_track(synth_root):
    records = load_index(synth_root, "all")
    by_track: dict = {}
    for r in records:
        by_track.setdefault(r.track_key, []).append(r.pose)
    steps = np.concatenate([np.abs(np.diff(np.stack(p), axis=0)) for p in by_track.values()])
    assert steps.max() < 60, "consecutive frames must not jump across the whole pose range"
    assert steps[:, 0].mean() > 2, "the head must move between frames"


def test_previews_are_written(synth_root):
    with Image.open(os.path.join(synth_root, "contact_sheet.png")) as im:
        assert im.size[0] >= 4 * 64 and im.size[1] >= 4 * 64
    with Image.open(os.path.join(synth_root, "landmarks.png")) as im:
        assert im.size == (6 * 256, 256)
        px = np.asarray(im.convert("RGB"))
    # Eye corners are drawn in pure red, the other landmarks in pure green.
    assert ((px == [255, 0, 0]).all(-1)).sum() > 6 * 4 * 4 and ((px == [0, 255, 0]).all(-1)).sum() > 6 * 16 * 4


# --- labels match the pixels: rendered at 96 px, where the features are several pixels wide ---

_PX = 96


def _state(**kw) -> FrameState:
    base = dict(
        yaw=0.0,
        pitch=0.0,
        roll=0.0,
        mouth_open=0.0,
        smile=0.0,
        eyes_closed=0.0,
        brows_raised=0.0,
        light=np.array([0.0, 0.0, -1.0]),
        ambient=0.4,
        zoom=1.0,
        shift=np.zeros(2),
        body_yaw=0.0,
    )
    base.update(kw)
    return FrameState(**base)


@pytest.fixture(scope="module")
def person():
    return sample_identity(np.random.default_rng(123))


def test_yaw_pitch_roll_conventions(person):
    def nose_vs_eyes(st):
        lm = project_landmarks(person, st, _PX)
        return lm[NOSE_TIP] - lm[list(EYE_CORNERS)].mean(0)

    frontal = nose_vs_eyes(_state())
    assert nose_vs_eyes(_state(yaw=30))[0] > frontal[0] + 3  # nose moves to the image's right
    assert nose_vs_eyes(_state(yaw=-30))[0] < frontal[0] - 3
    assert nose_vs_eyes(_state(pitch=20))[1] < frontal[1] - 1  # up in the image (y down)
    lm = project_landmarks(person, _state(roll=20), _PX)
    dx, dy = lm[OUTER_EYE_CORNERS[1]] - lm[OUTER_EYE_CORNERS[0]]
    # Counter-clockwise in the image: the right eye rises (smaller y) relative to the left.
    assert np.degrees(np.arctan2(-dy, dx)) == pytest.approx(20, abs=4)


def _at(img: np.ndarray, lm: np.ndarray, *names: str) -> np.ndarray:
    """RGB in [0, 1] of the pixel at the mean of the named landmarks."""
    x, y = lm[[LANDMARK_NAMES.index(n) for n in names]].mean(0)
    return img[int(y), int(x)].astype(float) / 255


def test_landmarks_sit_on_the_features(person):
    def frame(**kw):
        st = _state(**kw)
        return render_frame(person, st, _PX), project_landmarks(person, st, _PX)

    neutral, lm0 = frame()
    # Opening the mouth darkens the pixel between the lip landmarks; the nose tip stays as it was.
    open_mouth, lm1 = frame(mouth_open=1.0)
    assert _at(open_mouth, lm1, "lip_upper", "lip_lower").mean() < 0.2
    assert _at(neutral, lm0, "lip_upper", "lip_lower").mean() > 0.3
    assert np.abs(_at(open_mouth, lm1, "nose_tip") - _at(neutral, lm0, "nose_tip")).max() < 0.05
    # Closing the eyes changes the pixel between each eye's corners (iris -> lid).
    closed, lm2 = frame(eyes_closed=1.0)
    for corners in (("eye_l_outer", "eye_l_inner"), ("eye_r_inner", "eye_r_outer")):
        change = np.abs(_at(closed, lm2, *corners) - _at(neutral, lm0, *corners)).max()
        assert change > 0.15, corners
    # The face is where the landmarks are: these points show the skin's hue, not the background.
    skin = person.skin / person.skin.max()
    for name in ("nose_tip", "chin", "jaw_l", "jaw_r"):
        rgb = _at(neutral, lm0, name)
        assert np.abs(rgb / rgb.max() - skin).max() < 0.2, (name, rgb, person.skin)  # 8-bit rounding in shadow


def test_bad_arguments_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="size must be an integer >= 16, got 8"):
        synthesize(str(tmp_path / "x"), size=8)
    with pytest.raises(ValueError, match="identities must be an integer >= 1, got 0"):
        synthesize(str(tmp_path / "x"), identities=0)
    assert not (tmp_path / "x").exists(), "nothing is written before the arguments are checked"
