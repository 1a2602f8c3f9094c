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

from fabnet._lazy import lazy_exports

# Imported on first use (fabnet._lazy): `fabnet --help` builds every subcommand's parser
# through this package and must not load torch.
_EXPORTS = {
    "load_frames": "fabnet.data.frames",
    "DataWarning": "fabnet.data.labels",
    "group_tracks": "fabnet.data.index",
    "load_index": "fabnet.data.index",
    "ATTRIBUTE_NAMES": "fabnet.data.labels",
    "EXPRESSION_NAMES": "fabnet.data.labels",
    "EYE_CORNERS": "fabnet.data.labels",
    "LANDMARK_NAMES": "fabnet.data.labels",
    "MOUTH_CORNERS": "fabnet.data.labels",
    "NOSE_TIP": "fabnet.data.labels",
    "OUTER_EYE_CORNERS": "fabnet.data.labels",
    "POSE_NAMES": "fabnet.data.labels",
    "SPLITS": "fabnet.data.labels",
    "FrameRecord": "fabnet.data.labels",
    "label_info": "fabnet.data.labels",
    "FrameLoader": "fabnet.data.loader",
    "make_loader": "fabnet.data.loader",
    "CENTER_FRACTION": "fabnet.data.sampling",
    "CROP_FRACTION": "fabnet.data.sampling",
    "crop_box": "fabnet.data.sampling",
    "crop_landmarks": "fabnet.data.sampling",
    "synthesize": "fabnet.data.synth",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
