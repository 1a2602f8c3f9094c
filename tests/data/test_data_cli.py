"""``fabnet synth`` and ``fabnet extract-frames``, and the video layout / frame selection."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from fabnet.cli import main
from fabnet.data import DataWarning, load_index
from fabnet.data.extract import plan_videos, select_frames


def test_synth_command(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(
        [
            "synth",
            str(out),
            "--identities",
            "2",
            "--tracks-per-identity",
            "2",
            "--frames-per-track",
            "3",
            "--size",
            "32",
            "--seed",
            "4",
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    for name in ("labels.csv", "contact_sheet.png", "landmarks.png"):
        assert os.path.join(str(out), name) in printed
        assert (out / name).exists()
    records = load_index(str(out))
    assert len(records) == 2 * 2 * 3 and {r.identity for r in records} == {"id0000", "id0001"}
    with Image.open(records[0].path) as im:
        assert im.size == (32, 32) and im.format == "JPEG"
    meta = json.loads((out / "synth.json").read_text())
    assert meta["light"] == "head" and meta["seed"] == 4 and meta["frames_per_track"] == 3


def test_synth_command_light_setting(tmp_path):
    for light in ("head", "camera"):
        out = tmp_path / light
        assert main(["synth", str(out), "--identities", "1", "--tracks-per-identity", "1", "--frames-per-track",
                     "4", "--size", "32", "--light", light, "--no-progress"]) == 0  # fmt: skip
        assert json.loads((out / "synth.json").read_text())["light"] == light
    # The same draws in both settings: the frames differ only where the shading does.
    a = np.asarray(Image.open(tmp_path / "head" / "id0000" / "vid00" / "track0" / "003.jpg"), np.float64)
    b = np.asarray(Image.open(tmp_path / "camera" / "id0000" / "vid00" / "track0" / "003.jpg"), np.float64)
    assert 0 < np.abs(a - b).mean() < 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--identities", "0"], "--identities: expected an integer >= 1, got 0"),
        (["--size", "abc"], "--size: expected an integer in [16, 1024], got 'abc'"),
        (["--size", "100000"], "--size: expected an integer in [16, 1024] ("),
        (["--light", "sun"], "argument --light: invalid choice: 'sun'"),
    ],
)
def test_synth_command_rejects_bad_values(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["synth", str(tmp_path / "x"), *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_plan_videos_layouts(tmp_path):
    for rel in ("solo.mp4", "ann/interview.mkv", "id001/yt123/00004.mp4", "id001/yt123/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    plan = {os.path.relpath(p, tmp_path): key for p, key in plan_videos(str(tmp_path))}
    assert plan == {
        "solo.mp4": ("solo", "solo", "00"),
        os.path.join("ann", "interview.mkv"): ("ann", "interview", "00"),
        os.path.join("id001", "yt123", "00004.mp4"): ("id001", "yt123", "00004"),
    }
    assert plan_videos(str(tmp_path / "solo.mp4")) == [(str(tmp_path / "solo.mp4"), ("solo", "solo", "00"))]
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c" / "d.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="nested too deep"):
        plan_videos(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="neither a video file nor a directory"):
        plan_videos(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no video file"):
        plan_videos(str(tmp_path / "empty"))


def test_select_frames():
    times = [i / 25 for i in range(80)]  # 3.2 s of a 25 fps video
    assert select_frames(times, 1) == [0, 25, 50, 75]
    assert select_frames(times, 2) == [0, 13, 25, 38, 50, 63, 75]  # ticks at 0.5 s fall between frames
    assert select_frames([10.0, 10.3, 10.6, 11.2, 12.5, 12.6], 1) == [0, 3, 4]  # relative to the first frame
    assert select_frames([0.0, 1.0, 2.0], 5) == [0, 1, 2]  # above the video's rate: every frame once
    assert select_frames([None, 0.0, 0.5, 1.0], 1) == [1, 3]
    with pytest.raises(ValueError, match="fps must be > 0, got 0"):
        select_frames(times, 0)


def test_extract_frames_without_pyav_names_the_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    (tmp_path / "v.mp4").write_bytes(b"")
    rc = main(["extract-frames", str(tmp_path / "v.mp4"), str(tmp_path / "out")])
    assert rc == 2 and "pip install av" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_extract_frames_round_trip(tmp_path, capsys):
    av = pytest.importorskip("av", reason="PyAV is an optional dependency of extract-frames")
    video = tmp_path / "videos" / "alice" / "talk.mp4"
    video.parent.mkdir(parents=True)
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(75):  # 3 s; frame i is flat grey of value 3 i, so a frame tells its time
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 3 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    broken = tmp_path / "videos" / "bob" / "broken.mp4"
    broken.parent.mkdir()
    broken.write_bytes(b"not a video" * 100)
    out = tmp_path / "root"
    with pytest.warns(DataWarning, match="could not decode 1 of 2 video.*broken.mp4"):
        rc = main(["extract-frames", str(tmp_path / "videos"), str(out), "--fps", "1", "--size", "24", "--no-progress"])
    assert rc == 0 and not (out / "bob").exists()
    assert "wrote 3 frames" in capsys.readouterr().out
    records = load_index(str(out))
    assert [r.relpath for r in records] == [f"alice/talk/00/{i:05d}.jpg" for i in range(3)]
    for r, second in zip(records, range(3)):
        with Image.open(r.path) as im:
            assert im.size == (32, 24)  # shorter side resized to 24
            assert np.asarray(im).mean() == pytest.approx(3 * 25 * second, abs=3)
