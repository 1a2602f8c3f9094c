"""Synthetic face tracks in the data-root layout, with pose, landmark and expression labels.

``synthesize(out, identities, tracks_per_identity, frames_per_track, size, seed)`` writes::

    OUT/id0000/vid00/track0/000.jpg ...   one video per track, frames numbered in time order
    OUT/labels.csv, OUT/labels.json       every label column (see fabnet.data.labels)
    OUT/synth.json                        what it was made with (seed, sizes, light): enough to
                                          render any frame again (fabnet.data.budget's oracle)
    OUT/contact_sheet.png                 the first frames of a few tracks, one track per row
    OUT/landmarks.png                     a few frames enlarged with their landmarks drawn

Within a track the identity (face shape, skin, hair colour and style, eye spacing, background)
and the light direction are fixed; the head pose (yaw ±45, pitch ±25, roll ±20 degrees) and the
expression change from frame to frame, and the crop wobbles a little as a face detector's box
does (``BOX_WOBBLE``: scale and centre drawn per frame around a per-track framing). Pose follows
random keyframes every ~3 frames with cosine easing, so consecutive frames differ as much as
VoxCeleb frames taken 1 s apart while the marginals cover the whole range. By default the light
turns with the head (``light="head"``), so the shading moves with the face and every change
between two frames of a track is one a warp can explain, except what appears or disappears
(teeth, eyes opening, the far side of the head) and the expression's own shape change;
``light="camera"`` keeps the light fixed to the camera, so shading slides across a turning face
(the harder setting, measured in docs/FINDINGS.md).

Expression runs in segments of 2-5 frames, each one class of ``EXPRESSION_NAMES``:
neutral (sometimes talking: mouth half open), smile (sometimes with an open mouth), surprise
(mouth open + brows raised) and sleepy (eyes closed). Blinks (eyes closed for one frame) happen in
any class. Each attribute of ``ATTRIBUTE_NAMES`` is 1 where its intensity is above 0.5; on/off
intensities are drawn from [0.7, 1] / [0, 0.2], so no label sits near the threshold.

Everything is drawn from ``numpy.random.default_rng((seed, identity[, track]))``: the same
seed gives byte-identical JPEGs and labels (with the same numpy / Pillow builds), and adding
identities leaves the existing ones unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from fabnet.data.face import EYE_CORNERS, FrameState, Identity, sample_identity
from fabnet.data.labels import ATTRIBUTE_NAMES, EXPRESSION_NAMES, FrameRecord, write_labels
from fabnet.data.render import head_rotation, project_landmarks, render_frame

POSE_RANGE = (45.0, 25.0, 20.0)  # |yaw|, |pitch|, |roll| maxima in degrees
# The crop box around a detected face: a per-track framing (zoom in [0.96, 1.04], centre within
# 2 % of the side) and a per-frame wobble around it (sd 1 % of the scale, 0.5 % of the side in
# x and y), a third of the keyframed zoom / shift this generator used to draw, which alone made
# half of the frame-to-frame L1 at 32 px (docs/data/README.md, python -m fabnet.data.budget).
BOX_WOBBLE = (0.01, 0.005)  # per-frame sd of (zoom, centre shift in image sides)
JPEG_QUALITY = 92
DEFAULT_SIZE = 128  # big enough to read the expression by eye; training demos use 64

# Target intensities (mouth_open, smile, eyes_closed, brows_raised) per expression class:
# (value when on, probability of on) -- "on" draws from [0.7, 1], "off" from [0, 0.2].
_CLASS_PROFILE = {
    0: ((0, 0.25), (1, 0.0), (2, 0.0), (3, 0.0)),  # neutral; a quarter of it talking
    1: ((0, 0.35), (1, 1.0), (2, 0.0), (3, 0.0)),  # smile
    2: ((0, 1.0), (1, 0.0), (2, 0.0), (3, 1.0)),  # surprise
    3: ((0, 0.0), (1, 0.0), (2, 1.0), (3, 0.0)),  # sleepy
}
_BLINK_P = 0.08


@dataclass(frozen=True)
class TrackFrame:
    state: FrameState
    expression: int
    attributes: np.ndarray  # (A,) 0/1


def _keyframe_curve(rng: np.random.Generator, n: int, lo: float, hi: float, spacing: float) -> np.ndarray:
    """(n,) values through uniform keyframes every ~``spacing`` frames, cosine-eased between."""
    n_keys = int(np.ceil((n - 1) / spacing)) + 2
    keys = rng.uniform(lo, hi, n_keys)
    pos = np.arange(n) / spacing + rng.uniform(0, 1)
    i = np.floor(pos).astype(int)
    w = 0.5 - 0.5 * np.cos(np.pi * (pos - i))
    return keys[i] * (1 - w) + keys[np.minimum(i + 1, n_keys - 1)] * w


# Where the light is fixed: "head" (default) turns it with the head, so a pose change moves the
# shading with the face, as a warp can explain; "camera" keeps it fixed to the camera while the
# head turns, so the shading slides across the face (the harder setting: the best warp of any
# kind then explains only 17 % of the frame-to-frame L1 at 32 px against 46 % with "head",
# docs/FINDINGS.md).
LIGHTS = ("head", "camera")
# The data root's record of how it was made; GENERATOR names the renderer's version, raised
# whenever the same seed would render other pixels (2: light with the head, wider hair streaks).
META_FILE = "synth.json"
GENERATOR = "fabnet-synth-2"


def sample_track(rng: np.random.Generator, num_frames: int, light_mode: str = "head") -> list[TrackFrame]:
    """The moving part of one track: pose, expression, light and camera jitter per frame.

    light_mode: "head" (the light turns with the head) or "camera" (fixed to the camera); the
    random draws are the same for both, so the two settings render the same tracks.
    """
    if light_mode not in LIGHTS:
        raise ValueError(f"light_mode must be one of {LIGHTS}, got {light_mode!r}")
    yaw = _keyframe_curve(rng, num_frames, -POSE_RANGE[0], POSE_RANGE[0], 3.0)
    pitch = _keyframe_curve(rng, num_frames, -POSE_RANGE[1], POSE_RANGE[1], 3.0)
    roll = _keyframe_curve(rng, num_frames, -POSE_RANGE[2], POSE_RANGE[2], 3.0)
    zoom = rng.uniform(0.96, 1.04) + rng.normal(0, BOX_WOBBLE[0], num_frames)
    shift = rng.uniform(-0.02, 0.02, 2) + rng.normal(0, BOX_WOBBLE[1], (num_frames, 2))
    light = np.array([rng.uniform(-0.9, 0.9), rng.uniform(-0.3, 0.9), -1.0])
    light /= np.linalg.norm(light)
    ambient = rng.uniform(0.3, 0.45)
    body_yaw = rng.uniform(-10, 10)

    # Expression segments of 2-5 frames; intensities fixed per segment up to a little jitter.
    classes = np.empty(num_frames, int)
    level = np.empty((num_frames, len(ATTRIBUTE_NAMES)))
    start = 0
    while start < num_frames:
        length = int(rng.integers(2, 6))
        cls = int(rng.integers(len(EXPRESSION_NAMES)))
        on = np.array([rng.random() < p for _, p in _CLASS_PROFILE[cls]])
        seg = np.where(on, rng.uniform(0.7, 1.0, on.size), rng.uniform(0.0, 0.2, on.size))
        classes[start : start + length] = cls
        level[start : start + length] = seg
        start += length
    level = np.clip(level + rng.uniform(-0.05, 0.05, level.shape), 0, 1)
    blink = (rng.random(num_frames) < _BLINK_P) & (classes != 3)
    level[blink, 2] = rng.uniform(0.85, 1.0, blink.sum())

    # The light as drawn is its direction at the frontal pose; with "head" it is fixed in head-local
    # axes and each frame's camera-space light is its head rotation of it.
    local_light = head_rotation(0.0, 0.0, 0.0).T @ light
    frames = []
    for k in range(num_frames):
        if light_mode == "head":
            light_k = head_rotation(float(yaw[k]), float(pitch[k]), float(roll[k])) @ local_light
        else:
            light_k = light
        st = FrameState(
            yaw=float(yaw[k]),
            pitch=float(pitch[k]),
            roll=float(roll[k]),
            mouth_open=float(level[k, 0]),
            smile=float(level[k, 1]),
            eyes_closed=float(level[k, 2]),
            brows_raised=float(level[k, 3]),
            light=light_k,
            ambient=float(ambient),
            zoom=float(zoom[k]),
            shift=shift[k],
            body_yaw=float(body_yaw),
        )
        frames.append(TrackFrame(st, int(classes[k]), (level[k] > 0.5).astype(np.float32)))
    return frames


def identity_name(i: int) -> str:
    return f"id{i:04d}"


def _render_track(args):
    """Render and write one track; returns its FrameRecords. Top-level so a Pool can run it."""
    out, seed, i, t, num_frames, size, supersample, light_mode = args
    ident = sample_identity(np.random.default_rng((seed, i)))
    track = sample_track(np.random.default_rng((seed, i, t)), num_frames, light_mode)
    from PIL import Image

    name, video, track_name = identity_name(i), f"vid{t:02d}", "track0"
    d = os.path.join(out, name, video, track_name)
    os.makedirs(d, exist_ok=True)
    records = []
    for k, fr in enumerate(track):
        img = render_frame(ident, fr.state, size, supersample)
        rel = f"{name}/{video}/{track_name}/{k:03d}.jpg"
        Image.fromarray(img).save(os.path.join(out, *rel.split("/")), quality=JPEG_QUALITY)
        st = fr.state
        records.append(
            FrameRecord(
                path=os.path.join(out, *rel.split("/")),
                relpath=rel,
                identity=name,
                video=video,
                track=track_name,
                frame=k,
                width=size,
                height=size,
                pose=np.array([st.yaw, st.pitch, st.roll], np.float32),
                expression=fr.expression,
                attributes=fr.attributes,
                landmarks=project_landmarks(ident, st, size).astype(np.float32),
            )
        )
    return records


def synthesize(
    out: str,
    identities: int = 40,
    tracks_per_identity: int = 4,
    frames_per_track: int = 16,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    *,
    supersample: int = 2,
    workers: int = 1,
    progress: bool = True,
    previews: bool = True,
    light: str = "head",
) -> list[FrameRecord]:
    """Render a synthetic data root at ``out``; returns the records written to labels.csv.

    identities, tracks_per_identity, frames_per_track: the data set's extent (each >= 1).
    size: image side in pixels (square JPEGs). supersample: rays per pixel side (2 is enough
    to anti-alias the features at 64 px). workers: processes (results do not depend on it).
    previews: also write contact_sheet.png and landmarks.png. light: "head" (default: the light
    turns with the head) or "camera" (fixed to the camera, the harder setting; ``LIGHTS``).
    """
    if light not in LIGHTS:
        raise ValueError(f"light must be one of {LIGHTS}, got {light!r}")
    for name, v, lo in (
        ("identities", identities, 1),
        ("tracks_per_identity", tracks_per_identity, 1),
        ("frames_per_track", frames_per_track, 1),
        ("size", size, 16),
        ("supersample", supersample, 1),
        ("workers", workers, 1),
    ):
        if int(v) != v or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    os.makedirs(out, exist_ok=True)
    jobs = [
        (out, seed, i, t, frames_per_track, size, supersample, light)
        for i in range(identities)
        for t in range(tracks_per_identity)
    ]
    from tqdm import tqdm

    bar = tqdm(total=len(jobs) * frames_per_track, unit="frame", desc="synth", disable=not progress)
    records = []
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for recs in pool.imap(_render_track, jobs):
                records += recs
                bar.update(len(recs))
    else:
        for job in jobs:
            recs = _render_track(job)
            records += recs
            bar.update(len(recs))
    bar.close()
    write_labels(out, records)
    meta = dict(
        generator=GENERATOR,
        seed=seed,
        identities=identities,
        tracks_per_identity=tracks_per_identity,
        frames_per_track=frames_per_track,
        size=size,
        supersample=supersample,
        light=light,
    )
    with open(os.path.join(out, META_FILE), "w") as fh:
        json.dump(meta, fh, indent=1)
    if previews:
        write_contact_sheet(out, records, os.path.join(out, "contact_sheet.png"))
        write_landmark_preview(records, os.path.join(out, "landmarks.png"))
    return records


def read_meta(root: str) -> dict:
    """The ``synth.json`` of a data root written by ``synthesize`` (ValueError if there is none,
    or if another renderer version wrote it: its frames could not be rendered again)."""
    path = os.path.join(root, META_FILE)
    try:
        with open(path) as fh:
            meta = json.load(fh)
    except FileNotFoundError:
        raise ValueError(
            f"{root!r} has no {META_FILE}: only a data root written by `fabnet synth` (this version) can be "
            "rendered again"
        ) from None
    except ValueError as err:
        raise ValueError(f"{path!r} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("generator") != GENERATOR:
        found = meta.get("generator") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{path!r} was written by generator {found!r}; this version renders {GENERATOR!r}")
    return meta


def render_again(meta: dict, identity: str, video: str, frame: int):
    """(Identity, FrameState) of one frame of a data root from its ``read_meta``: the draws of
    ``_render_track`` repeated, so the frame renders to the same pixels."""
    i, t = int(identity.removeprefix("id")), int(video.removeprefix("vid"))
    ident = sample_identity(np.random.default_rng((meta["seed"], i)))
    track = sample_track(np.random.default_rng((meta["seed"], i, t)), meta["frames_per_track"], meta["light"])
    return ident, track[frame].state


def write_contact_sheet(root: str, records: list[FrameRecord], path: str, tracks: int = 8, frames: int = 8) -> None:
    """A PNG grid of up to ``tracks`` tracks spread over the set, one per row, each row the
    track's first ``frames`` frames labelled with the expression class and the yaw in degrees."""
    from PIL import Image, ImageDraw

    by_track: dict = {}
    for r in records:
        by_track.setdefault(r.track_key, []).append(r)
    rows = list(by_track.values())[:: max(1, len(by_track) // tracks)][:tracks]
    cols = min(frames, max(len(t) for t in rows))
    s = max(64, min(128, records[0].width))
    sheet = Image.new("RGB", (cols * s, len(rows) * (s + 12)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for y, track in enumerate(rows):
        for x, r in enumerate(track[:cols]):
            with Image.open(r.path) as im:
                sheet.paste(im.convert("RGB").resize((s, s)), (x * s, y * (s + 12) + 12))
            label = f"{EXPRESSION_NAMES[r.expression][:5]} {r.pose[0]:+.0f}"  # expression, yaw in degrees
            draw.text((x * s + 2, y * (s + 12)), label, fill=(0, 0, 0))
    sheet.save(path, optimize=True)  # smaller files for committing a sample


def write_landmark_preview(records: list[FrameRecord], path: str, count: int = 6, scale_to: int = 256) -> None:
    """A PNG of ``count`` frames enlarged to ``scale_to`` px with their landmarks drawn.

    Eye corners (the inter-ocular normalisation) are red, the other landmarks green.
    """
    from PIL import Image, ImageDraw

    picks = records[:: max(1, len(records) // count)][:count]
    sheet = Image.new("RGB", (scale_to * len(picks), scale_to))
    for i, r in enumerate(picks):
        with Image.open(r.path) as im:
            tile = im.convert("RGB").resize((scale_to, scale_to), Image.BICUBIC)
        draw = ImageDraw.Draw(tile)
        k = scale_to / r.width
        for j, (x, y) in enumerate(r.landmarks * k):
            colour = (255, 0, 0) if j in EYE_CORNERS else (0, 255, 0)
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)
        sheet.paste(tile, (i * scale_to, 0))
    sheet.save(path, optimize=True)  # smaller files for committing a sample


__all__ = [
    "DEFAULT_SIZE",
    "GENERATOR",
    "LIGHTS",
    "META_FILE",
    "POSE_RANGE",
    "Identity",
    "identity_name",
    "read_meta",
    "render_again",
    "sample_track",
    "synthesize",
]
