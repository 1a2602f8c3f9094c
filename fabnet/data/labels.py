"""The label table ``ROOT/labels.csv`` and the names of its columns.

Layout of a data root (synthetic or real; VoxCeleb1/2 frames extracted at 1 fps plug in as is)::

    ROOT/<identity>/<video>/<track>/<frame>.jpg
    ROOT/labels.csv      optional: one row per frame (below); without it every frame is unlabelled
    ROOT/labels.json     optional: {"expression_names": [...], "landmark_names": [...]}

``labels.csv`` has a header row. Columns, in this order (extra columns are ignored):

==================  =========================================================================
``path``            frame path relative to ROOT, ``/``-separated: ``identity/video/track/f.jpg``
``identity``        person name; the train/val/test split is disjoint in identities
``video``           video name (unique within the identity)
``track``           face-track name (unique within the video)
``frame``           integer order of the frame within its track
``split``           ``train`` / ``val`` / ``test``, or empty: then the split is drawn by identity
``width, height``   image size in pixels, or empty (read from the JPEG header at indexing time)
``yaw, pitch, roll`` head pose in degrees (yaw > 0: face turns to the image's right; pitch > 0:
                    face tilts up; roll > 0: counter-clockwise in the image), or empty
``expression``      integer class, an index into ``expression_names``, or empty
``attr_<name>``     zero or more binary attributes (0 / 1, or empty), e.g. ``attr_smile``
``x0, y0, x1, ...`` zero or more landmarks in pixels of the stored image (x right, y down,
                    pixel ``j`` spans ``[j, j + 1)``), or empty
==================  =========================================================================

Empty cells mean "unknown" and load as NaN (pose, attributes, landmarks) or -1 (expression).
To use MAFL / 300-W / AFLW / AffectNet / EmotioNet annotations, write one such row per image
(an image set without tracks can use one track per image), fill the columns the data set has
and the ``split`` column with its official split, and keep the rest empty.

The synthetic generator writes every column: 23 landmarks (``LANDMARK_NAMES``), 4 expression
classes (``EXPRESSION_NAMES``) and 4 attributes (``ATTRIBUTE_NAMES``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import posixpath
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from fabnet.data.face import EYE_CORNERS, LANDMARK_NAMES, MOUTH_CORNERS, NOSE_TIP, OUTER_EYE_CORNERS
from fabnet.data.files import MAX_TABLE_BYTES, UnreadableFile, check_regular

LABELS_FILE = "labels.csv"


class DataWarning(UserWarning):
    """Frames or tracks of a data root left out (unreadable files, short tracks, table problems)."""


def name_some(items: list[str], shown: int) -> str:
    """The first ``shown`` of ``items`` joined by "; ", then "; ... and N more": what a warning
    about many files names without growing with them."""
    more = f"; ... and {len(items) - shown} more" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more


LABEL_INFO_FILE = "labels.json"
POSE_NAMES = ("yaw", "pitch", "roll")
EXPRESSION_NAMES = ("neutral", "smile", "surprise", "sleepy")
ATTRIBUTE_NAMES = ("mouth_open", "smile", "eyes_closed", "brows_raised")
SPLITS = ("train", "val", "test")
BASE_COLUMNS = (
    "path",
    "identity",
    "video",
    "track",
    "frame",
    "split",
    "width",
    "height",
    "yaw",
    "pitch",
    "roll",
    "expression",
)

__all__ = [
    "ATTRIBUTE_NAMES",
    "BASE_COLUMNS",
    "EXPRESSION_NAMES",
    "EYE_CORNERS",
    "FrameRecord",
    "LABELS_FILE",
    "LABEL_INFO_FILE",
    "LANDMARK_NAMES",
    "MOUTH_CORNERS",
    "NOSE_TIP",
    "OUTER_EYE_CORNERS",
    "POSE_NAMES",
    "SPLITS",
    "read_labels",
    "write_labels",
    "label_info",
]


@dataclass
class FrameRecord:
    """One frame and its labels.

    ``pose``: (3,) float32 yaw, pitch, roll in degrees (NaN if unknown);
    ``landmarks``: (L, 2) float32 pixel coordinates in the stored image (L = 0 if none);
    ``expression``: int class (-1 if unknown); ``attributes``: (A,) float32 0/1 (NaN if unknown).
    """

    path: str  # absolute path of the JPEG
    relpath: str  # relative to the data root, "/"-separated
    identity: str
    video: str
    track: str
    frame: int
    split: str = ""
    width: int = 0
    height: int = 0
    pose: np.ndarray = field(default_factory=lambda: np.full(3, np.nan, np.float32))
    expression: int = -1
    attributes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))

    @property
    def track_key(self) -> tuple[str, str, str]:
        return (self.identity, self.video, self.track)


def _fmt(v: float) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}".rstrip("0").rstrip(".")


def write_labels(
    root: str,
    records: list[FrameRecord],
    attribute_names=ATTRIBUTE_NAMES,
    expression_names=EXPRESSION_NAMES,
    landmark_names=LANDMARK_NAMES,
) -> str:
    """Write ``ROOT/labels.csv`` (and ``labels.json`` with the class names); returns the csv path."""
    num_lm = max((len(r.landmarks) for r in records), default=0)
    header = list(BASE_COLUMNS) + [f"attr_{a}" for a in attribute_names]
    header += [f"{c}{i}" for i in range(num_lm) for c in "xy"]
    path = os.path.join(root, LABELS_FILE)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for r in records:
            row = [r.relpath, r.identity, r.video, r.track, r.frame, r.split, r.width or "", r.height or ""]
            row += [_fmt(float(v)) for v in r.pose]
            row.append("" if r.expression < 0 else r.expression)
            row += [_fmt(float(v)) if not np.isnan(v) else "" for v in r.attributes]
            row += [_fmt(float(v)) for v in np.asarray(r.landmarks, np.float64).reshape(-1)]
            w.writerow(row)
    with open(os.path.join(root, LABEL_INFO_FILE), "w") as fh:
        json.dump(
            {
                "expression_names": list(expression_names),
                "attribute_names": list(attribute_names),
                "landmark_names": list(landmark_names),
            },
            fh,
            indent=1,
        )
    return path


def _float(s: str) -> float:
    """An empty cell is unknown (NaN); a number must be finite (an infinite pose or landmark would
    turn every metric of its probe into NaN)."""
    if not s.strip():
        return math.nan
    value = float(s)
    if not math.isfinite(value):
        raise ValueError(f"{s.strip()!r} is not a finite number (leave the cell empty for unknown)")
    return value


def _size(s: str) -> int:
    """A stored image side in pixels: empty (read from the file) or an integer in [1, 65535]."""
    if not s.strip():
        return 0
    value = int(s)
    if not 1 <= value <= MAX_SIDE:
        raise ValueError(f"image side {s.strip()[:20]!r} must be in [1, {MAX_SIDE}] pixels (or empty)")
    return value


# JPEG's own limit on a side.
MAX_SIDE = 65535


def _normalised(rel: str) -> str:
    """One spelling per frame: ``a//b/./c.jpg`` and ``./a/b/c.jpg`` both name ``a/b/c.jpg``."""
    return posixpath.normpath(rel.replace("\\", "/"))


def read_labels(root: str) -> list[FrameRecord] | None:
    """Parse ``ROOT/labels.csv`` into records (paths unchecked), or None if there is no table.

    ValueError naming the file (and the line) for anything it cannot use: not UTF-8, a NUL byte,
    a cell that is not a number where one is needed, an infinite value, an image side past 65535.
    """
    path = os.path.join(root, LABELS_FILE)
    if not os.path.exists(path):
        return None
    try:
        check_regular(path, MAX_TABLE_BYTES)
        with open(path, newline="", encoding="utf-8") as fh:
            return _parse_labels(path, root, csv.reader(fh))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8") from None
    except csv.Error as err:
        raise ValueError(f"{path}: not a readable CSV table ({err})") from None
    except UnreadableFile as err:
        raise ValueError(f"{path}: {err}") from None


def _parse_labels(path: str, root: str, reader) -> list[FrameRecord]:
    header = next(reader, None)
    if header is None or header[0] != "path":
        raise ValueError(f"{path}: the first header column must be 'path', got {header[:1]}")
    col = {name: i for i, name in enumerate(header)}
    missing = [c for c in ("identity", "video", "track", "frame") if c not in col]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {missing}; header is {header}")
    attr_cols = [i for i, n in enumerate(header) if n.startswith("attr_")]
    lm_cols = []
    while f"x{len(lm_cols)}" in col and f"y{len(lm_cols)}" in col:
        lm_cols.append((col[f"x{len(lm_cols)}"], col[f"y{len(lm_cols)}"]))
    pose_cols = [col.get(n) for n in POSE_NAMES]
    records, lines_of = [], {}
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if any("\x00" in cell for cell in row):
            raise ValueError(f"{path}, line {line}: a NUL byte in the row; the table is corrupt or not text")
        rel = _normalised(row[0])
        parts = rel.split("/")
        if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel) or ".." in parts:
            raise ValueError(
                f"{path}, line {line}: path {rel!r} leaves the data root; paths must be relative to ROOT, without '..'"
            )
        if rel in lines_of:
            lines_of[rel].append(line)
            continue
        lines_of[rel] = [line]
        try:
            get = lambda name, default="", row=row: row[col[name]] if name in col else default
            records.append(
                FrameRecord(
                    path=os.path.join(root, *rel.split("/")),
                    relpath=rel,
                    identity=get("identity"),
                    video=get("video"),
                    track=get("track"),
                    frame=int(get("frame")),
                    split=get("split").strip(),
                    width=_size(get("width")),
                    height=_size(get("height")),
                    pose=np.array([_float(row[c]) if c is not None else math.nan for c in pose_cols], np.float32),
                    expression=int(get("expression") or -1),
                    attributes=np.array([_float(row[c]) for c in attr_cols], np.float32),
                    landmarks=np.array([[_float(row[x]), _float(row[y])] for x, y in lm_cols], np.float32).reshape(
                        -1, 2
                    ),
                )
            )
        except (ValueError, IndexError) as err:
            raise ValueError(f"{path}, line {line}: cannot parse row {row[:6]}...: {err}") from None
    repeated = {rel: lines for rel, lines in lines_of.items() if len(lines) > 1}
    if repeated:
        # A frame listed twice would be drawn as a source of itself.
        named = "; ".join(f"{rel} (lines {', '.join(map(str, lines))})" for rel, lines in list(repeated.items())[:3])
        warnings.warn(
            f"{path}: {len(repeated)} frame(s) listed more than once, the first row of each kept: {named}",
            DataWarning,
            stacklevel=3,
        )
    return records


def label_info(root: str) -> dict:
    """Names for the label columns of a root: expression, attribute and landmark names.

    Read from ``ROOT/labels.json`` where present (attribute names also from the csv header);
    defaults are the synthetic data's names.
    """
    info = {
        "pose_names": list(POSE_NAMES),
        "expression_names": list(EXPRESSION_NAMES),
        "attribute_names": list(ATTRIBUTE_NAMES),
        "landmark_names": list(LANDMARK_NAMES),
    }
    path = os.path.join(root, LABEL_INFO_FILE)
    if os.path.exists(path):
        try:
            check_regular(path, MAX_TABLE_BYTES)
            with open(path, encoding="utf-8") as fh:
                names = json.load(fh)
        except (ValueError, UnreadableFile) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ValueError(f"{path}: not a readable labels.json ({err}); fix it or remove it") from None
        if not isinstance(names, dict) or not all(isinstance(v, list) for v in names.values()):
            raise ValueError(f'{path}: expected an object of name lists, e.g. {{"expression_names": [...]}}')
        info.update(names)
    csv_path = os.path.join(root, LABELS_FILE)
    if os.path.exists(csv_path):
        try:
            with open(csv_path, newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), [])
        except (UnicodeDecodeError, csv.Error) as err:
            raise ValueError(f"{csv_path}: not a readable CSV table ({err})") from None
        info["attribute_names"] = [n[len("attr_") :] for n in header if n.startswith("attr_")]
    return info
