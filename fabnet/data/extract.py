"""``extract_frames``: build a data root from videos, as the paper did for VoxCeleb (1 fps).

Videos map to ``OUT/<identity>/<video>/<track>/<frame>.jpg`` by their place under VIDEOS:

==============================================  ===========================================
``VIDEOS/<name>.mp4`` (or VIDEOS is that file)  identity = video = ``<name>``, track ``00``
``VIDEOS/<identity>/<video>.mp4``               track ``00``
``VIDEOS/<identity>/<video>/<track>.mp4``       VoxCeleb2's layout of face-track clips
==============================================  ===========================================

Decoding needs PyAV (``pip install av``), an optional dependency; the layout planning and the
frame selection below are plain Python, so they are tested without it.
"""

from __future__ import annotations

import math
import os
import warnings

from fabnet.data.files import check_regular
from fabnet.data.index import DataWarning
from fabnet.data.labels import name_some

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
JPEG_QUALITY = 95
INSTALL_HINT = "pip install av"


def plan_videos(videos: str) -> list[tuple[str, tuple[str, str, str]]]:
    """[(video path, (identity, video, track))] for a video file or a directory of videos.

    Raises FileNotFoundError when ``videos`` does not exist or holds no video file, and
    ValueError for videos nested deeper than ``<identity>/<video>/<track>.<ext>``.
    """
    videos = os.fspath(videos)
    if os.path.isfile(videos):
        stem = os.path.splitext(os.path.basename(videos))[0]
        return [(videos, (stem, stem, "00"))]
    if not os.path.isdir(videos):
        raise FileNotFoundError(f"VIDEOS {videos!r} is neither a video file nor a directory")
    plan, irregular = [], []
    for dirpath, dirnames, filenames in os.walk(videos):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.lower().endswith(VIDEO_EXTENSIONS):
                continue
            try:  # a FIFO named x.mp4 would block the decoder's open forever
                check_regular(os.path.join(dirpath, name), None)
            except OSError as err:
                irregular.append(f"{os.path.join(dirpath, name)} ({err})")
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), videos).split(os.sep)
            stem = os.path.splitext(rel[-1])[0]
            if len(rel) == 1:
                key = (stem, stem, "00")
            elif len(rel) == 2:
                key = (rel[0], stem, "00")
            elif len(rel) == 3:
                key = (rel[0], rel[1], stem)
            else:
                raise ValueError(
                    f"video {'/'.join(rel)} under {videos!r} is nested too deep: expected <name>.<ext>, "
                    f"<identity>/<video>.<ext> or <identity>/<video>/<track>.<ext>"
                )
            plan.append((os.path.join(dirpath, name), key))
    if irregular:
        named = "; ".join(irregular[:10])
        warnings.warn(f"skipped {len(irregular)} non-regular file(s): {named}", DataWarning, stacklevel=2)
    if not plan:
        raise FileNotFoundError(f"no video file ({', '.join(VIDEO_EXTENSIONS)}) under {videos!r}")
    return plan


class FrameTicker:
    """Streaming frame selection at ``fps``: ``take(t)`` is True for the frames to keep.

    Keeps the first frame at or after each tick ``t0 + n / fps`` (t0 = the first frame's time),
    so a 25 fps video at ``fps=1`` keeps one frame per second and a tick falling between two
    frames takes the later one. Several ticks passed by one frame (``fps`` above the video's
    rate) keep it once.
    """

    def __init__(self, fps: float):
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        self.fps = float(fps)
        self.t0 = None
        self.next_tick = 0

    def take(self, t: float) -> bool:
        if self.t0 is None:
            self.t0 = t
        # The slack absorbs timestamp rounding (pts * time_base of 1/25 s is not exact).
        elapsed = t - self.t0 + 1e-6
        if elapsed < self.next_tick / self.fps:
            return False
        self.next_tick = math.floor(elapsed * self.fps) + 1
        return True


def select_frames(times, fps: float) -> list[int]:
    """Indices of the frames ``FrameTicker(fps)`` keeps from presentation ``times`` (seconds)."""
    ticker = FrameTicker(fps)
    return [i for i, t in enumerate(times) if t is not None and ticker.take(t)]


def extract_frames(videos: str, out: str, *, fps: float = 1.0, size: int = 0, progress: bool = True) -> int:
    """Decode videos into ``OUT/<identity>/<video>/<track>/<frame>.jpg``; returns frames written.

    fps: frames kept per second of video. size: resize so the shorter side is ``size`` px (0:
    keep the video's size). Needs PyAV (``pip install av``). A video that cannot be decoded
    is reported in one ``DataWarning`` naming it, after the others are done.
    """
    try:
        import av
    except ImportError:
        raise ImportError(f"extract-frames decodes videos with PyAV, which is not installed: {INSTALL_HINT}") from None
    if not 0 < fps <= 1000:
        raise ValueError(f"fps must be in (0, 1000], got {fps!r}")
    if size < 0:
        raise ValueError(f"size must be >= 0 (0 keeps the video's size), got {size!r}")
    plan = plan_videos(videos)
    from PIL import Image
    from tqdm import tqdm

    written, failed = 0, []
    for path, (identity, video, track) in tqdm(plan, unit="video", desc="extract", disable=not progress):
        d = os.path.join(out, identity, video, track)
        kept = 0
        try:
            with av.open(path) as container:
                if not container.streams.video:
                    raise ValueError("no video stream")
                ticker = FrameTicker(fps)
                for frame in container.decode(container.streams.video[0]):
                    if frame.time is None or not ticker.take(frame.time):
                        continue
                    img = frame.to_image()
                    if size:
                        w, h = img.size
                        k = size / min(w, h)
                        img = img.resize((max(1, round(w * k)), max(1, round(h * k))), Image.BICUBIC)
                    os.makedirs(d, exist_ok=True)
                    img.save(os.path.join(d, f"{kept:05d}.jpg"), quality=JPEG_QUALITY)
                    kept += 1
        except (av.FFmpegError, ValueError) as err:  # one broken video must not stop a long extraction
            failed.append(f"{path} ({err})")
        written += kept
    if failed and len(failed) == len(plan) and written == 0:
        raise ValueError(f"none of the {len(plan)} video(s) could be decoded: {name_some(failed, 5)}")
    if failed:
        # The frames a broken video gave before failing are kept: each one is a whole JPEG.
        warnings.warn(
            f"could not decode {len(failed)} of {len(plan)} video(s): {name_some(failed, 20)}",
            DataWarning,
            stacklevel=2,
        )
    return written
