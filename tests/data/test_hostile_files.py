"""Data roots with hostile files: FIFOs, devices, oversized files, decompression bombs, frames
that pass the header check but do not decode, a malformed index cache, label tables that are
not what they claim. Each is left out (or refused) naming the file; nothing hangs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from fabnet.cli import main
from fabnet.data import DataWarning, load_index
from fabnet.data.files import MAX_FRAME_BYTES
from fabnet.data.index import CACHE_FILE
from fabnet.data.labels import read_labels
from tests.data.conftest import copy_root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _jpeg(side: int = 48, seed: int = 0) -> bytearray:
    pixels = (np.random.default_rng(seed).random((side, side, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return bytearray(buffer.getvalue())


def _bomb() -> bytes:
    """2 KB that declare 12000 x 12000 = 144 Mpx (the SOF0 size fields rewritten)."""
    data = _jpeg()
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (12000).to_bytes(2, "big") * 2
    return bytes(data)


def _bad_huffman() -> bytes:
    """A JPEG whose header parses (SOI, size, EOI all there) but whose Huffman table is bogus:
    it fails only when decoded."""
    data = _jpeg()
    dht = data.index(b"\xff\xc4")
    data[dht + 5 : dht + 21] = b"\xff" * 16
    return bytes(data)


def _load_in_child(root: str, timeout: int = 60) -> subprocess.CompletedProcess:
    """load_index in a child process, so that a regression that blocks on a FIFO fails the test
    instead of hanging the suite."""
    code = (
        "import json, warnings, sys\n"
        "from fabnet.data import load_index\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    records = load_index({root!r})\n"
        "print(json.dumps([len(records), [str(w.message) for w in caught]]))\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


def test_fifo_device_and_oversized_frames_are_left_out_without_blocking(synth_root, tmp_path):
    """Item 12: a FIFO named *.jpg blocked indexing forever; a link to /dev/zero read until the
    memory ran out."""
    root = copy_root(synth_root, tmp_path / "root")
    track = os.path.join(root, "id0000", "vid00", "track0")
    os.mkfifo(os.path.join(track, "fifo.jpg"))
    os.symlink("/dev/zero", os.path.join(track, "zero.jpg"))
    with open(os.path.join(track, "huge.jpg"), "wb") as f:
        f.truncate(MAX_FRAME_BYTES + 1)  # sparse: no disk used
    os.remove(os.path.join(root, "labels.csv"))  # indexed by scanning, so the new names are seen
    result = _load_in_child(root)
    assert result.returncode == 0, result.stderr[-2000:]
    count, messages = json.loads(result.stdout)
    assert count == 20 * 2 * 5
    text = " ".join(messages)
    assert "fifo.jpg (a FIFO, not a regular file)" in text
    assert "zero.jpg (a character device, not a regular file)" in text
    assert "huge.jpg (64 MiB, more than the 64 MiB bound)" in text


def test_a_decompression_bomb_is_left_out_at_indexing_and_at_reading(synth_root, tmp_path):
    """Item 14: 144 Mpx in 2 KB; refused from its header, before any pixel is decoded, when
    indexed and when (replaced after indexing) it is read for embedding."""
    root = copy_root(synth_root, tmp_path / "root")
    records = load_index(root)
    victim = records[0].path
    with open(victim, "wb") as f:
        f.write(_bomb())
    with pytest.warns(DataWarning, match=r"declares 12000 x 12000 = 144 Mpx, more than the 40 Mpx bound"):
        assert len(load_index(root)) == len(records) - 1

    from fabnet.probe.frames import embed_records
    from fabnet.probe.pixels import PixelEncoder

    with pytest.warns(DataWarning, match=rf"skipped 1 unreadable frame\(s\): {victim} \(UnreadableFile: declares"):
        emb, boxes, kept = embed_records(PixelEncoder(8), records[:4])
    assert emb.shape == (3, 3 * 8 * 8) and kept.tolist() == [1, 2, 3] and boxes.shape == (3, 4)


def test_a_frame_that_does_not_decode_is_skipped_and_named_by_embed_probe_retrieve(synth_root, tmp_path, capsys):
    """Item 13: it passes the header check; before, embed / probe / retrieve stopped with a
    traceback naming no file."""
    root = copy_root(synth_root, tmp_path / "root")
    records = load_index(root)
    victim = next(r for r in records if r.split == "test").path
    with open(victim, "wb") as f:
        f.write(_bad_huffman())
    assert len(load_index(root)) == len(records)  # the cheap check cannot see it
    commands = [
        ["embed", "--pixels", "8", "--data", root, "--out", str(tmp_path / "e.npz")],
        ["probe", "--pixels", "8", "--data", root, "--task", "pose", "--max-epochs", "2"],
        ["retrieve", "--pixels", "8", "--data", root, "--out", str(tmp_path / "r.png"), "--k", "2", "--queries", "2"],
    ]
    for argv in commands:
        with pytest.warns(DataWarning, match=rf"skipped 1 unreadable frame\(s\): {victim} \(OSError"):
            assert main(argv) == 0, capsys.readouterr().err
    embedded = np.load(tmp_path / "e.npz")
    assert len(embedded["paths"]) == len(records) - 1 and victim not in embedded["paths"]


@pytest.mark.parametrize("content", [[1, 2], {"a": 5}, {"a": [1, 2, True, 4, 5, "x"]}, "text"], ids=str)
def test_an_index_cache_of_another_shape_is_rebuilt(synth_root, tmp_path, content):
    """Item 15: valid JSON of the wrong shape was a traceback."""
    root = copy_root(synth_root, tmp_path / "root")
    with open(os.path.join(root, CACHE_FILE), "w") as f:
        json.dump(content, f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_index(root)) == 20 * 2 * 5
    with open(os.path.join(root, CACHE_FILE)) as f:
        rebuilt = json.load(f)
    assert isinstance(rebuilt, dict) and len(rebuilt) == 20 * 2 * 5


def _edit_labels(root: str, edit) -> str:
    path = os.path.join(root, "labels.csv")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(edit(data))
    return path


def _set_cell(column: str, value: str):
    def edit(data: bytes) -> bytes:
        lines = data.decode().splitlines()
        header = lines[0].split(",")
        cells = lines[1].split(",")
        cells[header.index(column)] = value
        lines[1] = ",".join(cells)
        return ("\n".join(lines) + "\n").encode()

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set_cell("yaw", "inf"), "line 2: cannot parse row .*'inf' is not a finite number"),
        (_set_cell("x3", "-inf"), "line 2: cannot parse row .*'-inf' is not a finite number"),
        (_set_cell("width", "9" * 40), r"line 2: cannot parse row .*image side '9{20}' must be in \[1, 65535\]"),
        (lambda d: d.replace(b"track0/000.jpg,", b"track0/0\x0000.jpg,", 1), "line 2: a NUL byte in the row"),
        (lambda d: d + "café".encode("latin-1") + b"\n", r"not UTF-8 text \(byte \d+: invalid continuation byte\)"),
    ],
    ids=["inf-pose", "inf-landmark", "huge-width", "nul", "latin-1"],
)
def test_bad_label_tables_are_refused_naming_the_file(synth_root, tmp_path, edit, message):
    """Item 16: before, inf was accepted (NaN metrics, exit 0) and the rest named no file."""
    root = copy_root(synth_root, tmp_path / "root")
    path = _edit_labels(root, edit)
    with pytest.raises(ValueError, match=message) as err:
        read_labels(root)
    assert str(err.value).startswith(path) and "\n" not in str(err.value)


def test_a_cut_off_labels_json_is_named(synth_root, tmp_path, capsys):
    root = copy_root(synth_root, tmp_path / "root")
    path = os.path.join(root, "labels.json")
    with open(path, "w") as f:
        f.write('{"expression_names": ["neutral", "sm')
    assert main(["probe", "--pixels", "8", "--data", root, "--task", "expression"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: not a readable labels.json (Unterminated string" in err and err.count("\n") == 1


@pytest.mark.parametrize("spelling", ["./{rel}", "{first}//{rest}", "{first}/./{rest}"])
def test_one_frame_under_two_spellings_is_one_frame(synth_root, tmp_path, spelling):
    """Item 16: `a//b` and `./a` are the same frame; listed twice it would be a source of itself."""
    root = copy_root(synth_root, tmp_path / "root")

    def duplicate(data: bytes) -> bytes:
        row = data.decode().splitlines()[1]
        rel, rest_of_row = row.split(",", 1)
        first, rest = rel.split("/", 1)
        again = spelling.format(rel=rel, first=first, rest=rest)
        return data + f"{again},{rest_of_row}\n".encode()

    _edit_labels(root, duplicate)
    with pytest.warns(DataWarning, match=r"1 frame\(s\) listed more than once, the first row of each kept"):
        records = read_labels(root)
    assert len(records) == 20 * 2 * 5 and len({r.relpath for r in records}) == len(records)


def _video(path, frames: int = 30):
    av = pytest.importorskip("av", reason="PyAV is an optional dependency of extract-frames")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 4 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_extract_frames_skips_a_fifo_named_like_a_video(tmp_path):
    """Item 12: a FIFO named *.mp4 hung extract-frames; it is skipped with a warning naming it."""
    videos = tmp_path / "videos"
    _video(videos / "alice" / "talk.mp4")
    os.mkfifo(videos / "alice" / "pipe.mp4")
    out = tmp_path / "root"
    code = "import sys; from fabnet.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-W", "always", "-c", code, "extract-frames", str(videos), str(out), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "skipped 1 non-regular file(s): " in result.stderr
    assert "pipe.mp4 (a FIFO, not a regular file)" in result.stderr
    assert "wrote 2 frames" in result.stdout


def test_extract_frames_fails_when_no_video_decodes(tmp_path, capsys):
    """Item 17: before, every video failing still exited 0."""
    pytest.importorskip("av")
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (videos / name).write_bytes(b"not a video" * 50)
    assert main(["extract-frames", str(videos), str(tmp_path / "root"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "none of the 2 video(s) could be decoded: " in err and "a.mp4" in err and err.count("\n") == 1
