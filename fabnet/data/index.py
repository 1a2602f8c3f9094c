"""Indexing a data root: the frame records, their train/val/test split and their tracks.

``load_index(root, split)`` reads ``ROOT/labels.csv`` (see ``fabnet.data.labels``) or, without
one, scans ``ROOT/<identity>/<video>/<track>/<frame>.jpg``. Every listed JPEG gets a cheap check
(the SOI marker at the start, the EOI marker in the last bytes, a header PIL can parse for the
size): a truncated or garbage file is left out with ONE warning that names it, so no epoch ever
meets it. A full decode of each frame would be ~1 ms per 256-px JPEG; this check reads ~1 KB.

The results of the check are cached in ``ROOT/.fabnet-index.json`` keyed by (size, mtime) of
each file, so re-indexing a large root only stats the files. A read-only root is not cached.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections import OrderedDict

import numpy as np

from fabnet.data.files import MAX_FRAME_BYTES, MAX_TABLE_BYTES, UnreadableFile, check_regular, open_image
from fabnet.data.labels import SPLITS, DataWarning, FrameRecord, name_some, read_labels

CACHE_FILE = ".fabnet-index.json"
SPLIT_FRACTIONS = (0.75, 0.15, 0.10)  # train / val / test, by identity, as in the paper
_JPEG_EXTENSIONS = (".jpg", ".jpeg")
_MAX_NAMED = 20  # files named in one warning before "... and N more"


def _check_jpeg(path: str) -> tuple[bool, int, int, str]:
    """(ok, width, height, reason) for one file, reading its first and last bytes only (after
    ``files.check_regular``: a FIFO would block the open, /dev/zero would never end)."""
    try:
        size = check_regular(path, MAX_FRAME_BYTES).st_size
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(max(0, size - 64))
            tail = fh.read()
    except UnreadableFile as err:
        return False, 0, 0, str(err)
    except OSError as err:
        return False, 0, 0, f"unreadable ({err.strerror})"
    if head != b"\xff\xd8":
        return False, 0, 0, "not a JPEG (no SOI marker)"
    if b"\xff\xd9" not in tail:
        return False, 0, 0, "truncated (no EOI marker)"
    try:
        with open_image(path) as im:  # parses the header only
            w, h = im.size
    except UnreadableFile as err:
        return False, 0, 0, str(err)
    except Exception as err:  # PIL raises several types for corrupt headers
        return False, 0, 0, f"bad header ({err})"
    return True, w, h, ""


def _warn_files(bad: list[tuple[str, str]], root: str) -> None:
    if not bad:
        return
    named = name_some([f"{p} ({why})" for p, why in bad], _MAX_NAMED)
    warnings.warn(f"left out {len(bad)} unreadable frame(s) under {root}: {named}", DataWarning, stacklevel=3)


def _scan(root: str) -> list[FrameRecord]:
    """Records (unlabelled) for every ``identity/video/track/frame.jpg`` under root."""
    records = []
    for identity in sorted(os.listdir(root)):
        d_id = os.path.join(root, identity)
        if identity.startswith(".") or not os.path.isdir(d_id):
            continue
        for video in sorted(os.listdir(d_id)):
            d_vid = os.path.join(d_id, video)
            if not os.path.isdir(d_vid):
                continue
            for track in sorted(os.listdir(d_vid)):
                d_tr = os.path.join(d_vid, track)
                if not os.path.isdir(d_tr):
                    continue
                names = [n for n in os.listdir(d_tr) if n.lower().endswith(_JPEG_EXTENSIONS)]
                # Numeric frame names sort by number (frame 10 after frame 9), others by name.
                names.sort(
                    key=lambda n: (
                        (0, int(m.group()), n) if (m := re.fullmatch(r"\d+", n.rsplit(".", 1)[0])) else (1, 0, n)
                    )
                )
                for i, name in enumerate(names):
                    rel = f"{identity}/{video}/{track}/{name}"
                    records.append(
                        FrameRecord(
                            path=os.path.join(d_tr, name),
                            relpath=rel,
                            identity=identity,
                            video=video,
                            track=track,
                            frame=i,
                        )
                    )
    return records


def _load_cache(root: str) -> dict:
    """The cached checks {relpath: [size, mtime_ns, ok, width, height, reason]}; an unreadable
    cache, or one of another shape (edited, or written by something else), counts as none and is
    rebuilt."""
    path = os.path.join(root, CACHE_FILE)
    try:
        check_regular(path, MAX_TABLE_BYTES)
        with open(path) as fh:
            cache = json.load(fh)
    except (OSError, ValueError):
        return {}
    if not isinstance(cache, dict) or not all(_cache_entry(v) for v in cache.values()):
        return {}
    return cache


def _cache_entry(value) -> bool:
    if not isinstance(value, list) or len(value) != 6:
        return False
    size, mtime, ok, width, height, reason = value
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (size, mtime, width, height))
    return ints and isinstance(ok, bool) and isinstance(reason, str)


def _save_cache(root: str, cache: dict) -> None:
    tmp = os.path.join(root, f"{CACHE_FILE}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as fh:
            json.dump(cache, fh, separators=(",", ":"))
        os.replace(tmp, os.path.join(root, CACHE_FILE))
    except OSError:  # read-only root: index without a cache
        pass


def _check_files(root: str, records: list[FrameRecord], use_cache: bool) -> list[FrameRecord]:
    cache = _load_cache(root) if use_cache else {}
    new_cache, kept, bad = {}, [], []
    for r in records:
        try:
            st = check_regular(r.path, MAX_FRAME_BYTES)
            stamp = [st.st_size, st.st_mtime_ns]
        except UnreadableFile as err:
            bad.append((r.relpath, str(err)))
            continue
        except OSError:
            bad.append((r.relpath, "missing"))
            continue
        hit = cache.get(r.relpath)
        if hit is not None and hit[:2] == stamp:
            ok, w, h, why = hit[2], hit[3], hit[4], hit[5]
        else:
            ok, w, h, why = _check_jpeg(r.path)
        new_cache[r.relpath] = stamp + [ok, w, h, why]
        if not ok:
            bad.append((r.relpath, why))
            continue
        r.width = r.width or w
        r.height = r.height or h
        kept.append(r)
    if use_cache and new_cache != cache:
        _save_cache(root, new_cache)
    _warn_files(bad, root)
    return kept


def assign_splits(records: list[FrameRecord], seed: int = 0) -> None:
    """Fill empty ``split`` fields: identities shuffled by ``seed``, cut 75/15/10 (in place).

    Identities that already carry a split (from the label table) keep it; the others are
    shuffled in sorted order, so the assignment depends only on the identity names and the
    seed. With at least 3 free identities val and test each get at least one.
    """
    fixed = {r.identity for r in records if r.split}
    free = sorted({r.identity for r in records} - fixed)
    order = [free[i] for i in np.random.default_rng(seed).permutation(len(free))]
    n = len(order)
    n_test = max(1, round(SPLIT_FRACTIONS[2] * n)) if n >= 3 else 0
    n_val = max(1, round(SPLIT_FRACTIONS[1] * n)) if n >= 3 else 0
    n_train = n - n_val - n_test
    which = {
        ident: SPLITS[0] if i < n_train else SPLITS[1] if i < n_train + n_val else SPLITS[2]
        for i, ident in enumerate(order)
    }
    for r in records:
        if not r.split:
            r.split = which[r.identity]


def load_index(root: str, split: str | None = None, *, split_seed: int = 0, cache: bool = True) -> list[FrameRecord]:
    """The readable frames of a data root, with labels, sorted by identity, video, track, frame.

    root: a directory ``ROOT/<identity>/<video>/<track>/<frame>.jpg`` (+ optional labels.csv).
    split: ``"train"``, ``"val"``, ``"test"``, or None / ``"all"`` for every frame.
    split_seed: seed of the identity-disjoint 75/15/10 split (kept apart from sampling seeds so
        that changing a training seed never moves identities between splits).
    cache: reuse / write ``ROOT/.fabnet-index.json`` (the JPEG checks).

    Unreadable frames (missing, truncated, not JPEG) are left out with one ``DataWarning``
    naming them.
    """
    if split not in (None, "all") + SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, 'all' or None; got {split!r}")
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"data root {root!r} does not exist or is not a directory; expected "
            f"ROOT/<identity>/<video>/<track>/<frame>.jpg, e.g. made by `fabnet synth {root}`"
        )
    records = read_labels(root)
    if records is None:
        records = _scan(root)
    else:
        unlisted = len({r.relpath for r in _scan(root)} - {r.relpath for r in records})
        if unlisted:
            warnings.warn(
                f"{unlisted} frame(s) under {root} are not in labels.csv and are left out", DataWarning, stacklevel=2
            )
    if not records:
        raise FileNotFoundError(
            f"no frames under {root!r}: expected ROOT/<identity>/<video>/<track>/<frame>.jpg "
            f"(or a labels.csv listing them)"
        )
    bad_split = sorted({r.split for r in records if r.split and r.split not in SPLITS})
    if bad_split:
        raise ValueError(f"labels.csv under {root!r}: split values must be {SPLITS} or empty; got {bad_split}")
    records = _check_files(root, records, cache)
    assign_splits(records, split_seed)
    records.sort(key=lambda r: (r.identity, r.video, r.track, r.frame))
    if split not in (None, "all"):
        records = [r for r in records if r.split == split]
    return records


def group_tracks(records: list[FrameRecord], min_frames: int) -> list[list[FrameRecord]]:
    """Records grouped by track (frame order kept), tracks shorter than ``min_frames`` dropped.

    Dropped tracks are reported in ONE ``DataWarning`` (a count and a few names), not one per
    track: a VoxCeleb root has hundreds of thousands of tracks.
    """
    tracks: OrderedDict[tuple, list[FrameRecord]] = OrderedDict()
    for r in records:
        tracks.setdefault(r.track_key, []).append(r)
    kept = [t for t in tracks.values() if len(t) >= min_frames]
    short = [k for k, t in tracks.items() if len(t) < min_frames]
    if short:
        names = ", ".join("/".join(k) for k in short[:5]) + (", ..." if len(short) > 5 else "")
        warnings.warn(
            f"skipped {len(short)} of {len(tracks)} track(s) with fewer than {min_frames} readable "
            f"frames (num_sources + 1): {names}",
            DataWarning,
            stacklevel=3,
        )
    return kept
