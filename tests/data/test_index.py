"""Indexing the layout, the identity-disjoint split, corrupt files and short tracks."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from fabnet.data import DataWarning, group_tracks, load_index, make_loader
from fabnet.data.labels import read_labels, write_labels
from tests.data.conftest import FRAMES, IDENTITIES, TRACKS, copy_root


def _jpeg(path, value: int = 128, size: int = 24) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, quality=90)


def test_scan_of_the_layout(tmp_path):
    root = tmp_path / "root"
    for ident, video, track, n in (("bob", "v1", "t1", 11), ("bob", "v2", "t1", 2), ("amy", "v1", "t9", 3)):
        for i in range(n):
            _jpeg(str(root / ident / video / track / f"{i + 1}.jpg"), i)
    (root / "bob" / "v1" / "t1" / "notes.txt").write_text("not a frame")
    _jpeg(str(root / ".hidden" / "v" / "t" / "1.jpg"))
    (root / "stray.jpg").write_bytes(b"")  # files outside the layout are ignored
    records = load_index(str(root))
    assert [(r.identity, r.video, r.track) for r in records[:3]] == [("amy", "v1", "t9")] * 3
    bob = [r for r in records if r.identity == "bob" and r.video == "v1"]
    # Numeric frame names sort by number: 2.jpg before 10.jpg; frame is the order in the track.
    assert [os.path.basename(r.path) for r in bob] == [f"{i}.jpg" for i in range(1, 12)]
    assert [r.frame for r in bob] == list(range(11))
    assert len(records) == 16 and all(r.width == r.height == 24 for r in records)
    assert all(r.relpath == "/".join((r.identity, r.video, r.track, os.path.basename(r.path))) for r in records)
    assert all(r.expression == -1 and np.isnan(r.pose).all() and r.landmarks.shape == (0, 2) for r in records)


def test_labels_round_trip(synth_root, tmp_path):
    records = read_labels(synth_root)
    assert len(records) == IDENTITIES * TRACKS * FRAMES
    root = tmp_path / "rt"
    root.mkdir()
    write_labels(str(root), records)
    again = read_labels(str(root))
    for a, b in zip(records, again):
        assert (a.relpath, a.identity, a.video, a.track, a.frame, a.expression) == (
            b.relpath,
            b.identity,
            b.video,
            b.track,
            b.frame,
            b.expression,
        )
        np.testing.assert_allclose(a.pose, b.pose, atol=1e-4)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-4)
        np.testing.assert_array_equal(a.attributes, b.attributes)


def test_table_and_scan_agree(synth_root, tmp_path):
    """The label table lists exactly the frames the layout holds, in the same order."""
    from_table = load_index(synth_root)
    scanned_root = copy_root(synth_root, tmp_path / "scan")
    os.remove(os.path.join(scanned_root, "labels.csv"))
    scanned = load_index(scanned_root)
    assert [(r.relpath, r.frame) for r in from_table] == [(r.relpath, r.frame) for r in scanned]


def test_split_is_75_15_10_identity_disjoint_and_deterministic(synth_root):
    splits = {s: load_index(synth_root, s) for s in ("train", "val", "test")}
    ids = {s: {r.identity for r in recs} for s, recs in splits.items()}
    assert [len(ids[s]) for s in ("train", "val", "test")] == [15, 3, 2]
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    assert sum(len(v) for v in splits.values()) == len(load_index(synth_root, "all"))
    again = {s: {r.identity for r in load_index(synth_root, s)} for s in ("train", "val", "test")}
    assert again == ids, "the same split_seed must give the same split"
    other = {s: {r.identity for r in load_index(synth_root, s, split_seed=1)} for s in ("train", "val", "test")}
    assert other != ids and [len(other[s]) for s in ("train", "val", "test")] == [15, 3, 2]


def test_split_from_the_table_is_kept(synth_root, tmp_path):
    root = copy_root(synth_root, tmp_path / "fixed")
    records = read_labels(root)
    for r in records:
        r.split = "test" if r.identity == "id0000" else ""
    write_labels(root, records)
    test_ids = {r.identity for r in load_index(root, "test")}
    assert "id0000" in test_ids
    for seed in (0, 1, 2):
        assert "id0000" not in {r.identity for r in load_index(root, "train", split_seed=seed)}


def test_corrupt_and_truncated_jpegs_are_left_out_with_one_warning(synth_root, tmp_path):
    root = copy_root(synth_root, tmp_path / "corrupt")
    truncated = "id0001/vid00/track0/002.jpg"
    garbage = "id0002/vid01/track0/000.jpg"
    with open(os.path.join(root, truncated), "rb") as fh:
        data = fh.read()
    with open(os.path.join(root, truncated), "wb") as fh:
        fh.write(data[: len(data) // 2])
    with open(os.path.join(root, garbage), "wb") as fh:
        fh.write(b"this is not a jpeg" * 10)
    for attempt in ("fresh", "cached"):  # the second index reads the check results from the cache
        with pytest.warns(DataWarning) as caught:
            records = load_index(root)
        messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
        assert len(messages) == 1, (attempt, messages)
        assert truncated in messages[0] and "truncated" in messages[0]
        assert garbage in messages[0] and "not a JPEG" in messages[0]
        relpaths = {r.relpath for r in records}
        assert truncated not in relpaths and garbage not in relpaths
        assert len(records) == IDENTITIES * TRACKS * FRAMES - 2
    assert os.path.exists(os.path.join(root, ".fabnet-index.json"))
    # A whole epoch over the damaged root runs: the damaged frames are never read.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        loader = make_loader(
            root, split="all", batch_size=8, num_sources=2, size=16, backend="pil", num_workers=0, shuffle=True
        )
    seen = [p for batch in loader for sample in batch["paths"] for p in sample]
    assert len(seen) == len(loader.tracks) * 3
    assert not any(p.endswith(truncated) or p.endswith(garbage) for p in seen)


def test_a_replaced_file_is_checked_again(synth_root, tmp_path):
    root = copy_root(synth_root, tmp_path / "replaced")
    load_index(root)  # writes the cache
    victim = os.path.join(root, "id0003", "vid00", "track0", "001.jpg")
    with open(victim, "wb") as fh:
        fh.write(b"\xff\xd8 broken")
    with pytest.warns(DataWarning, match="id0003/vid00/track0/001.jpg"):
        records = load_index(root)
    assert not any(r.path == victim for r in records)


def test_short_tracks_are_skipped_with_one_summary_warning(tmp_path):
    root = tmp_path / "short"
    lengths = {"t0": 2, "t1": 3, "t2": 4, "t3": 6}
    for ident in ("a", "b"):
        for track, n in lengths.items():
            for i in range(n):
                _jpeg(str(root / ident / "v" / track / f"{i:03d}.jpg"), i)
    records = load_index(str(root))
    with pytest.warns(DataWarning) as caught:
        tracks = group_tracks(records, 4)  # K = 3 sources + 1 target
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(messages) == 1 and "skipped 4 of 8 track(s)" in messages[0] and "fewer than 4" in messages[0]
    assert sorted(len(t) for t in tracks) == [4, 4, 6, 6]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when every track is long enough
        assert len(group_tracks(records, 2)) == 8
    with pytest.warns(DataWarning, match="skipped 4 of 8"):
        loader = make_loader(str(root), split="all", batch_size=2, num_sources=3, size=16, backend="pil", num_workers=0)
    assert len(loader.tracks) == 4
    with pytest.raises(ValueError, match="num_sources \\+ 1 = 7"), pytest.warns(DataWarning):
        make_loader(str(root), split="all", batch_size=2, num_sources=6, size=16, backend="pil")


def test_missing_or_empty_root_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="does not exist.*fabnet synth"):
        load_index(missing)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_loader(missing, split="train", batch_size=2, num_sources=1, size=16, backend="pil")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no frames under"):
        load_index(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="split must be one of"):
        load_index(str(tmp_path / "empty"), "training")


def test_malformed_label_table_names_the_line(tmp_path):
    root = tmp_path / "bad"
    _jpeg(str(root / "a" / "v" / "t" / "0.jpg"))
    (root / "labels.csv").write_text("path,identity,video,track,frame\na/v/t/0.jpg,a,v,t,zero\n")
    with pytest.raises(ValueError, match="line 2"):
        load_index(str(root))
    (root / "labels.csv").write_text("identity,path\n")
    with pytest.raises(ValueError, match="first header column must be 'path'"):
        load_index(str(root))


def _rewrite_labels(root, edit):
    path = os.path.join(root, "labels.csv")
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join(edit(lines)) + "\n")


@pytest.mark.parametrize("bad_path", ["../../../etc/hostname", "a/../../x.jpg", "/etc/hostname"])
def test_labels_paths_may_not_leave_the_root(synth_root, tmp_path, bad_path):
    root = copy_root(synth_root, tmp_path / "root")
    _rewrite_labels(root, lambda lines: lines[:2] + [bad_path + lines[2][lines[2].index(",") :]] + lines[3:])
    with pytest.raises(ValueError, match=r"labels.csv, line 3: path .* leaves the data root"):
        load_index(root)


def test_duplicated_labels_rows_are_dropped_with_a_warning(synth_root, tmp_path):
    root = copy_root(synth_root, tmp_path / "root")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        before = load_index(root)
    _rewrite_labels(root, lambda lines: lines + lines[1:3])
    with pytest.warns(DataWarning, match=r"2 frame\(s\) listed more than once, the first row of each kept"):
        after = load_index(root)
    assert [r.relpath for r in after] == [r.relpath for r in before]


def test_frames_missing_from_labels_are_counted(synth_root, tmp_path):
    root = copy_root(synth_root, tmp_path / "root")
    _rewrite_labels(root, lambda lines: lines[:-3])
    with pytest.warns(DataWarning, match=r"3 frame\(s\) under .* are not in labels.csv and are left out"):
        load_index(root)
