"""`fabnet tracks` on videos of a real face (scikit-image's astronaut): a pan and zoom, and a cut.

The videos (tests/data/face_videos.py) move a window across the photograph, so where the face is
in every frame is known; OpenCV's shipped cascade finds it, the linker follows it, and the crops
must be centred on it at 1.5x its side (margin 0.25).
"""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from fabnet.cli import main
from fabnet.data.index import DataWarning
from fabnet.data.tracks import face_tracks, read_tracks
from tests.data.face_videos import RATE, face_box, write_video

pytest.importorskip("cv2")
pytest.importorskip("av")
FRAMES = 50  # 2 s at 25 fps


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    write_video(d / "pan.mp4", FRAMES)
    write_video(d / "cut.mp4", FRAMES, cut_at=25)
    return d


@pytest.fixture(scope="module")
def tracked(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("tracks") / "root"
    summary = face_tracks(str(videos), str(out), size=64, fps=5, detect_fps=25, progress=False)
    return out, summary, read_tracks(str(out))


def _by_track(rows, video):
    tracks = {}
    for r in rows:
        if r["video"] == video:
            tracks.setdefault(r["track"], []).append(r)
    return tracks


def test_pan_and_zoom_is_one_track_on_the_face(tracked):
    out, summary, rows = tracked
    tracks = _by_track(rows, "pan")
    assert list(tracks) == ["00"]
    crops = tracks["00"]
    assert len(crops) == 10  # 2 s at 5 crops a second
    for r in crops:
        frame = round(r["time"] * RATE)
        fx0, fy0, fx1, fy1 = face_box(frame, FRAMES)
        side = fx1 - fx0
        cx, cy = (r["x0"] + r["x1"]) / 2, (r["y0"] + r["y1"]) / 2
        # centred on the face within 8 % of its side; 1.5x its side within 15 %
        assert abs(cx - (fx0 + fx1) / 2) < 0.08 * side and abs(cy - (fy0 + fy1) / 2) < 0.08 * side, r
        assert abs((r["x1"] - r["x0"]) / (1.5 * side) - 1) < 0.15, r
        assert r["x1"] - r["x0"] == pytest.approx(r["y1"] - r["y0"], abs=0.2)
    # the zoom: the face (and the crop) grows from the first crop to the last
    assert crops[-1]["x1"] - crops[-1]["x0"] > 1.2 * (crops[0]["x1"] - crops[0]["x0"])
    image = Image.open(out / "pan" / "pan" / "00" / "00000.jpg")
    assert image.size == (64, 64)


def test_cut_splits_the_track(tracked):
    _, _, rows = tracked
    tracks = _by_track(rows, "cut")
    assert sorted(tracks) == ["00", "01"]
    assert max(r["time"] for r in tracks["00"]) < 1.0 <= min(r["time"] for r in tracks["01"])
    assert len(tracks["00"]) == len(tracks["01"]) == 5


def test_output_is_a_data_root_with_its_boxes(tracked):
    from fabnet.data.index import load_index

    out, summary, rows = tracked
    assert (summary.videos_done, summary.videos_kept, summary.videos_failed) == (2, 0, 0)
    assert (summary.tracks, summary.crops, summary.frames_decoded) == (3, 20, 2 * FRAMES)
    records = load_index(str(out))
    assert len(records) == 20 == len(rows)
    files = {os.path.relpath(r.path, out) for r in records}
    assert files == {os.path.join(r["identity"], r["video"], r["track"], r["frame"]) for r in rows}
    assert all(r["detected"] for r in rows) and not os.path.exists(out / ".partial")


def test_second_run_keeps_finished_videos(tracked, videos):
    out, _, rows = tracked
    before = {p: os.path.getmtime(p) for p in (out / "pan" / "pan" / "00").iterdir()}
    again = face_tracks(str(videos), str(out), size=64, fps=5, detect_fps=25, progress=False)
    assert (again.videos_done, again.videos_kept, again.crops) == (0, 2, 20)
    assert {p: os.path.getmtime(p) for p in before} == before and read_tracks(str(out)) == rows
    with pytest.raises(ValueError, match="was made with other settings"):
        face_tracks(str(videos), str(out), size=32, fps=5, detect_fps=25, progress=False)


def test_stopped_video_is_redone_and_foreign_folders_are_kept(videos, tmp_path):
    out = tmp_path / "root"
    # what a run stopped mid-video leaves: crops under .partial, no record
    (out / ".partial" / "pan" / "pan" / "00").mkdir(parents=True)
    (out / ".partial" / "pan" / "pan" / "00" / "00000.jpg").write_bytes(b"half")
    summary = face_tracks(str(videos / "pan.mp4"), str(out), size=32, fps=5, detect_fps=25, progress=False)
    assert summary.crops == 10 and not os.path.exists(out / ".partial")
    mine = tmp_path / "mine"
    (mine / "pan" / "pan").mkdir(parents=True)
    with pytest.raises(ValueError, match="exists and was not written by fabnet tracks"):
        face_tracks(str(videos / "pan.mp4"), str(mine), size=32, fps=5, detect_fps=25, progress=False)
    assert os.path.isdir(mine / "pan" / "pan")


def test_unreadable_video_is_skipped_with_a_warning(videos, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    os.symlink(videos / "pan.mp4", d / "pan.mp4")
    (d / "broken.mp4").write_bytes(b"\x00" * 4096)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = face_tracks(str(d), str(tmp_path / "root"), size=32, fps=5, detect_fps=25, progress=False)
    assert (summary.videos_done, summary.videos_failed, summary.tracks) == (1, 1, 1)
    assert any(issubclass(w.category, DataWarning) and "broken.mp4" in str(w.message) for w in caught)


def test_cli_prints_what_it_did(videos, tmp_path, capsys):
    out = tmp_path / "root"
    argv = ["tracks", str(videos / "pan.mp4"), str(out), "--size", "32", "--fps", "5", "--detect-fps", "25"]
    assert main(argv + ["--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "1 video(s) tracked now (50 frames decoded, 50 detected" in text and "1 track(s), 10 crops" in text
    assert main(["tracks", str(videos), str(tmp_path / "r2"), "--fps", "10", "--detect-fps", "5"]) == 2
    assert "need 0 < fps <= detect_fps" in capsys.readouterr().err
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"x")
    assert main(["tracks", str(videos), str(tmp_path / "r3"), "--detector", str(bad)]) == 2
    assert "expected an OpenCV cascade .xml or a YuNet .onnx" in capsys.readouterr().err


def test_box_positions_are_what_the_helper_says():
    """The expected boxes themselves: the face is inside every frame and grows with the zoom."""
    first, last = face_box(0, FRAMES), face_box(FRAMES - 1, FRAMES)
    assert (first >= 0).all() and first[2] <= 320 and first[3] <= 240
    assert (last[2] - last[0]) / (first[2] - first[0]) == pytest.approx(360 / 270)
    np.testing.assert_allclose(face_box(0, 1), first)


@pytest.mark.slow
def test_tracks_then_train_and_embed(tmp_path, capsys):
    """Six people's videos with a cut each -> 12 tracks -> fabnet train -> fabnet embed (.parquet)."""
    from fabnet.probe.embedding_files import read_embeddings

    for i in range(6):
        (tmp_path / "videos" / f"person{i}").mkdir(parents=True)
        write_video(tmp_path / "videos" / f"person{i}" / "clip.mp4", 100, cut_at=50)
    root, run, emb = tmp_path / "root", tmp_path / "run", tmp_path / "emb.parquet"
    assert main(["tracks", str(tmp_path / "videos"), str(root), "--size", "48", "--fps", "5", "--no-progress"]) == 0
    # 2 s shots, 5 detections a second (the default; a track needs 5), 5 crops a second
    assert "holds 12 track(s), 120 crops" in capsys.readouterr().out
    train = ["train", "--data", str(root), "--out", str(run), "--size", "32", "--steps", "2", "--batch-size", "4"]
    assert main(train + ["--num-workers", "0", "--device", "cpu", "--no-progress", "--no-initial-val"]) == 0
    assert main(["embed", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--data", str(root), "--out", str(emb),
                 "--no-progress"]) == 0  # fmt: skip
    got = read_embeddings(str(emb))
    assert got["embeddings"].shape == (120, 256) and np.isfinite(got["embeddings"]).all()
    assert sorted(set(got["identities"])) == [f"person{i}" for i in range(6)]
