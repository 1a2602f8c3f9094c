"""fabnet.data: synthetic face tracks, the frame-folder layout, and DALI / PIL loaders.

Data root layout (synthetic and real alike; VoxCeleb1/2 frames at 1 fps plug in)::

    ROOT/<identity>/<video>/<track>/<frame>.jpg  +  optional ROOT/labels.csv (fabnet.data.labels)

Public API:
    synthesize(out, identities, tracks_per_identity, frames_per_track, size, seed)  -> records
    load_index(root, split=None, *, split_seed=0) -> list[FrameRecord]
    make_loader(root, *, split, batch_size, num_sources, size, backend="auto", ...) -> FrameLoader
        batches: target (B, 3, S, S), sources (B, K, 3, S, S) float32 RGB in [0, 1],
        identity (B names), paths, box
    load_frames(paths, size, crop="center") -> (N, 3, S, S) float32 in [0, 1]
    label names: POSE_NAMES, EXPRESSION_NAMES, ATTRIBUTE_NAMES, LANDMARK_NAMES, EYE_CORNERS,
        OUTER_EYE_CORNERS (inter-ocular distance), NOSE_TIP, MOUTH_CORNERS; label_info(root)

Command line (fabnet.data.cli): ``fabnet synth OUT`` renders a synthetic root with labels and
preview PNGs; ``fabnet extract-frames VIDEOS OUT --fps 1`` builds a root from videos (PyAV).

Pixel range everywhere: float32 RGB in [0, 1] (no mean / std normalisation).
"""

from fabnet.data.frames import load_frames
from fabnet.data.index import DataWarning, group_tracks, load_index
from fabnet.data.labels import (
    ATTRIBUTE_NAMES,
    EXPRESSION_NAMES,
    EYE_CORNERS,
    LANDMARK_NAMES,
    MOUTH_CORNERS,
    NOSE_TIP,
    OUTER_EYE_CORNERS,
    POSE_NAMES,
    SPLITS,
    FrameRecord,
    label_info,
)
from fabnet.data.loader import FrameLoader, make_loader
from fabnet.data.sampling import CENTER_FRACTION, CROP_FRACTION, crop_box, crop_landmarks
from fabnet.data.synth import synthesize

__all__ = [
    "ATTRIBUTE_NAMES", "CENTER_FRACTION", "CROP_FRACTION", "DataWarning", "EXPRESSION_NAMES", "EYE_CORNERS",
    "FrameLoader", "FrameRecord", "LANDMARK_NAMES", "MOUTH_CORNERS", "NOSE_TIP", "OUTER_EYE_CORNERS",
    "POSE_NAMES", "SPLITS", "crop_box", "crop_landmarks", "group_tracks", "label_info", "load_frames",
    "load_index", "make_loader", "synthesize",
]  # fmt: skip
