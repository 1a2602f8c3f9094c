"""``face_tracks``: ordinary videos -> a data root of face tracks (``fabnet tracks``).

Each video is read twice. The first pass decodes every frame, keeps ``detect_fps`` samples per
second, detects faces in them (``fabnet.data.detect``) and notes shot cuts; ``fabnet.data.linking``
turns the detections into smoothed square tracks. The second pass decodes again and crops the
frames that fall on the ``fps`` ticks (1 per second by default, as the paper sampled VoxCeleb) out
of every track, so no decoded frame is held in memory: a 10-minute 1080p video would need 3.6 GB.

Output, beside what ``fabnet extract-frames`` writes:

- ``OUT/<identity>/<video>/<track>/<frame>.jpg``: ``size`` x ``size`` crops; identity and video
  come from the place under VIDEOS (``<name>.mp4``: both ``<name>``; ``<identity>/<video>.mp4``);
- ``OUT/tracks.csv``: one row per crop: its file, the time in the video, the crop box in the
  video's pixels (it may reach past the frame: that part is black), whether the frame had its own
  detection or an interpolated box, and the detector's score;
- ``OUT/.fabnet-tracks/``: one record per finished video. A run that stops is resumed by the same
  command: finished videos are kept, an unfinished one is redone from scratch (its crops are
  written under ``OUT/.partial`` and moved into place only when the video is done).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass

from fabnet.data.extract import JPEG_QUALITY, FrameTicker, plan_videos
from fabnet.data.index import DataWarning
from fabnet.data.labels import name_some
from fabnet.data.linking import CUT_THRESHOLD, is_cut, link, thumbnail

STATE_DIR = ".fabnet-tracks"
PARTIAL_DIR = ".partial"
LABELS = "tracks.csv"
COLUMNS = ("identity", "video", "track", "frame", "time", "x0", "y0", "x1", "y1", "detected", "score")
# A track needs two frames for one (source, target) pair; FAb-Net with K sources needs K + 1.
MIN_WRITTEN_FRAMES = 2


@dataclass
class TracksSummary:
    """What ``face_tracks`` did: videos done now / kept from an earlier run / skipped as unreadable,
    tracks and crops in OUT (all videos), frames decoded and detections run now, and seconds."""

    videos_done: int
    videos_kept: int
    videos_failed: int
    tracks: int
    crops: int
    frames_decoded: int
    detections: int
    seconds: float


def face_tracks(
    videos: str,
    out: str,
    *,
    size: int = 256,
    fps: float = 1.0,
    detect_fps: float = 5.0,
    margin: float = 0.25,
    min_face: int = 32,
    detector: str | None = None,
    min_length: int = 5,
    max_gap: int = 5,
    cut_threshold: float = CUT_THRESHOLD,
    progress: bool = True,
) -> TracksSummary:
    """Detect, track and crop the faces of ``videos`` (a file or a directory) into the data root ``out``.

    size: crop side in px. fps: crops kept per second of each track. detect_fps: samples per second
    the detector sees (>= fps; tracking links them). margin: added to each side of the detected
    box, as a fraction of its side (0.25: the crop is 1.5x the face box). min_face: smallest face
    side in px. detector: a model file (``.xml`` cascade or YuNet ``.onnx``); None: OpenCV's frontal
    cascade. min_length: detections a track needs; max_gap: samples a track may go undetected.
    An unreadable video is skipped with one ``DataWarning`` naming it.
    """
    try:
        import av
    except ImportError:
        raise ImportError("fabnet tracks decodes videos with PyAV, which is not installed: pip install av") from None
    from fabnet.data.detect import load_detector

    _check(size=size, fps=fps, detect_fps=detect_fps, margin=margin, min_face=min_face)
    plan = plan_videos(videos)
    find = load_detector(detector, min_face=min_face)
    settings = dict(
        size=size, fps=fps, detect_fps=detect_fps, margin=margin, min_face=min_face, detector=find.name,
        min_length=min_length, max_gap=max_gap, cut_threshold=cut_threshold,
    )  # fmt: skip
    t0 = time.perf_counter()
    done = kept = decoded = detections = 0
    failed = []
    for number, (path, key) in enumerate(plan, 1):
        identity, video = key[0], key[1] if key[2] == "00" else f"{key[1]}_{key[2]}"
        record_path = os.path.join(out, STATE_DIR, identity, video + ".json")
        if _finished(record_path, settings):
            kept += 1
            continue
        _claim(out, identity, video, record_path)
        label = f"{number}/{len(plan)} {identity}/{video}"
        try:
            samples = _scan(av, path, find, detect_fps, cut_threshold, progress, label)
            tracks = link(
                [s[2] for s in samples], [s[3] for s in samples],
                min_length=min_length, max_gap=max_gap, margin=margin,
            )  # fmt: skip
            rows = _crop(av, path, out, identity, video, samples, tracks, fps, size, progress, label)
        except (av.FFmpegError, ValueError, OSError) as err:  # one broken video must not stop the rest
            failed.append(f"{path} ({err})")
            shutil.rmtree(os.path.join(out, PARTIAL_DIR, identity, video), ignore_errors=True)
            continue
        decoded += samples.frames
        detections += len(samples)
        _publish(out, identity, video, rows, record_path, settings, path)
        done += 1
    if failed:
        warnings.warn(
            f"skipped {len(failed)} of {len(plan)} video(s) that could not be read: {name_some(failed, 20)}",
            DataWarning,
            stacklevel=2,
        )
    tracks_n, crops_n = _write_labels(out)
    return TracksSummary(done, kept, len(failed), tracks_n, crops_n, decoded, detections, time.perf_counter() - t0)


def _check(**values) -> None:
    if not 16 <= values["size"] <= 1024:
        raise ValueError(f"size must be in [16, 1024], got {values['size']!r}")
    if not 0 < values["fps"] <= values["detect_fps"] <= 1000:
        raise ValueError(
            f"need 0 < fps <= detect_fps <= 1000 (crops are taken from detected samples), got fps "
            f"{values['fps']!r} and detect_fps {values['detect_fps']!r}"
        )
    if not 0 <= values["margin"] <= 2:
        raise ValueError(f"margin must be in [0, 2] (a fraction of the face box's side), got {values['margin']!r}")
    if values["min_face"] < 8:
        raise ValueError(f"min_face must be >= 8 px, got {values['min_face']!r}")


class _Samples(list):
    """[(decode index, time, detections (N, 5), cut before)] plus ``frames``: frames decoded."""

    frames = 0


def _scan(av, path, find, detect_fps, cut_threshold, progress, label) -> _Samples:
    from tqdm import tqdm

    samples = _Samples()
    ticker, previous = FrameTicker(detect_fps), None
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        bar = tqdm(total=stream.frames or None, unit="frame", desc=f"detect {label}", disable=not progress)
        with bar:
            for index, frame in enumerate(container.decode(stream)):
                bar.update()
                samples.frames = index + 1
                if frame.time is None or not ticker.take(frame.time):
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                thumb = thumbnail(rgb)
                samples.append((index, float(frame.time), find(rgb), is_cut(previous, thumb, cut_threshold)))
                previous = thumb
    if not samples:
        raise ValueError("no decodable frame")
    return samples


def _crop(av, path, out, identity, video, samples, tracks, fps, size, progress, label) -> list[dict]:
    """Second pass: write the crops of every track at its ``fps`` ticks; returns tracks.csv's rows."""
    from PIL import Image
    from tqdm import tqdm

    wanted: dict[int, list] = {}  # decode index -> [(track name, frame name, box, sample)]
    names = []
    for track in tracks:
        ticker = FrameTicker(fps)
        picks = [k for k, s in enumerate(track.samples) if ticker.take(samples[s][1])]
        if len(picks) < MIN_WRITTEN_FRAMES:
            continue
        name = f"{len(names):02d}"
        names.append(name)
        for n, k in enumerate(picks):
            wanted.setdefault(samples[track.samples[k]][0], []).append((name, f"{n:05d}.jpg", track, k))
    partial = os.path.join(out, PARTIAL_DIR, identity, video)
    shutil.rmtree(partial, ignore_errors=True)
    rows = []
    last = max(wanted, default=-1)
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        with tqdm(total=len(wanted), unit="crop-frame", desc=f"crop   {label}", disable=not progress) as bar:
            for index, frame in enumerate(container.decode(stream)):
                if index > last:
                    break
                picture = frame.to_image() if index in wanted else None
                for name, file, track, k in wanted.get(index, ()):
                    x0, y0, x1, y1 = (float(v) for v in track.boxes[k])
                    img = picture.crop(tuple(round(v) for v in (x0, y0, x1, y1)))
                    d = os.path.join(partial, name)
                    os.makedirs(d, exist_ok=True)
                    img.resize((size, size), Image.BICUBIC).save(os.path.join(d, file), quality=JPEG_QUALITY)
                    s = samples[track.samples[k]]
                    rows.append(
                        dict(identity=identity, video=video, track=name, frame=file, time=round(s[1], 4),
                             x0=round(x0, 1), y0=round(y0, 1), x1=round(x1, 1), y1=round(y1, 1),
                             detected=int(track.detected[k]), score=round(float(track.scores[k]), 3))
                    )  # fmt: skip
                if index in wanted:
                    bar.update()
    if len({(r["track"], r["frame"]) for r in rows}) != sum(len(v) for v in wanted.values()):
        raise ValueError("the second decoding pass gave fewer frames than the first")
    return rows


def _publish(out, identity, video, rows, record_path, settings, source) -> None:
    """Move the finished crops into place, then record the video as done (in that order: a record
    means the crops are there)."""
    final = os.path.join(out, identity, video)
    partial = os.path.join(out, PARTIAL_DIR, identity, video)
    if os.path.exists(final):  # left by a run stopped while moving it (``_claim`` checked)
        shutil.rmtree(final)
    os.makedirs(os.path.dirname(record_path), exist_ok=True)
    with open(record_path + ".moving", "w"):
        pass
    if os.path.isdir(partial):
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.replace(partial, final)
    for empty in (os.path.dirname(partial), os.path.join(out, PARTIAL_DIR)):
        try:
            os.rmdir(empty)
        except OSError:  # not empty: other videos' crops in progress
            break
    record = dict(source=os.path.abspath(source), settings=settings, rows=rows)
    tmp = record_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, record_path)
    os.remove(record_path + ".moving")


def _claim(out, identity, video, record_path) -> None:
    """Refuse to replace a video folder that no fabnet tracks run was moving into place."""
    final = os.path.join(out, identity, video)
    if os.path.exists(final) and not os.path.exists(record_path + ".moving"):
        raise ValueError(f"{final!r} exists and was not written by fabnet tracks: give an empty or new OUT")


def _finished(record_path: str, settings: dict) -> bool:
    """A video finished by an earlier run with the same settings (other settings: redone)."""
    try:
        with open(record_path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return False
    if record.get("settings") != settings:
        raise ValueError(
            f"{record_path!r} was made with other settings ({record.get('settings')}); run with those, "
            f"or give a new OUT"
        )
    return True


def _write_labels(out: str) -> tuple[int, int]:
    """OUT/tracks.csv from every finished video's record (atomically); returns (tracks, crops)."""
    rows = []
    state = os.path.join(out, STATE_DIR)
    for dirpath, _, filenames in sorted(os.walk(state)):
        for name in sorted(filenames):
            if name.endswith(".json"):
                with open(os.path.join(dirpath, name)) as f:
                    rows += json.load(f)["rows"]
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, LABELS + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, os.path.join(out, LABELS))
    return len({(r["identity"], r["video"], r["track"]) for r in rows}), len(rows)


def read_tracks(out: str) -> list[dict]:
    """OUT/tracks.csv's rows, numbers parsed."""
    with open(os.path.join(out, LABELS), newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("time", "x0", "y0", "x1", "y1", "score"):
            r[k] = float(r[k])
        r["detected"] = bool(int(r["detected"]))
    return rows


__all__ = ["face_tracks", "read_tracks", "TracksSummary", "LABELS"]
