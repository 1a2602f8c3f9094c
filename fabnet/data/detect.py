"""Face detectors for ``fabnet tracks``: weights that ship inside a registry package, or a model file the user has.

What ships (wheel contents checked 2026-12): ``opencv-python-headless`` 4.x carries OpenCV's Haar and
LBP cascades in ``cv2/data`` (the 5.x wheels carry none, hence the ``<5`` pin); MTCNN's weights ship in
``facenet-pytorch``, whose metadata pins torch < 2.3; mediapipe's wheel carries no face model. The
default is therefore the ``haarcascade_frontalface_alt2`` cascade: on ``skimage.data.astronaut()`` it
finds the one face, 97 px, in 0.11 s at 512 px on one core. ``--detector MODEL`` takes a stronger
model the user has: a YuNet ``.onnx`` (``cv2.FaceDetectorYN``; OpenCV's model zoo) or another cascade
``.xml``.

A detector maps an RGB ``uint8`` frame (H, W, 3) to an array (N, 5) of boxes ``x0, y0, x1, y1, score``
in that frame's pixels.
"""

from __future__ import annotations

import os

import numpy as np

DEFAULT_CASCADE = "haarcascade_frontalface_alt2.xml"
# Frames are detected at most this wide (the longer side): a 1080p frame takes 4 s at full size
# on one core with the cascade and 0.5 s at 640 px; the faces a talking-head video is about
# stay far above the cascade's 24 px window at that scale.
DETECT_MAX_SIDE = 640
INSTALL_HINT = 'pip install "opencv-python-headless<5"'


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError(f"fabnet tracks detects faces with OpenCV, which is not installed: {INSTALL_HINT}") from None
    return cv2


class CascadeDetector:
    """OpenCV's Haar/LBP cascade (``path``: its ``.xml``; default: the frontal-face cascade the wheel ships).

    ``min_face``: the smallest face side kept, in the frame's pixels. The score is the number of
    overlapping raw detections that voted for the box (the cascade's own confidence).
    """

    def __init__(self, path: str | None = None, *, min_face: int = 32):
        cv2 = _cv2()
        if path is None:
            path = os.path.join(cv2.data.haarcascades, DEFAULT_CASCADE)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"OpenCV's face cascade {path!r} is missing: the 5.x wheels ship none; {INSTALL_HINT}"
                )
        self.path = path
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise ValueError(f"detector {path!r} is not an OpenCV cascade file")
        self.min_face = min_face
        self.name = f"cascade:{os.path.basename(path)}"

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        cv2 = _cv2()
        small, scale = _shrink(frame)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        min_side = max(16, round(self.min_face / scale))
        boxes, _, weights = self.cascade.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=4, minSize=(min_side, min_side), outputRejectLevels=True
        )
        if len(boxes) == 0:
            return np.zeros((0, 5))
        boxes = np.asarray(boxes, np.float64) * scale
        out = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:4], np.asarray(weights, np.float64)[:, None]], 1)
        return out


class YuNetDetector:
    """A YuNet ``.onnx`` model run by ``cv2.FaceDetectorYN`` (OpenCV >= 4.5.4); ``score``: its threshold."""

    def __init__(self, path: str, *, score: float = 0.7, min_face: int = 32):
        cv2 = _cv2()
        if not hasattr(cv2, "FaceDetectorYN"):
            raise ValueError(f"this OpenCV ({cv2.__version__}) has no FaceDetectorYN for {path!r}")
        try:
            self.net = cv2.FaceDetectorYN.create(path, "", (320, 320), score, 0.3, 5000)
        except cv2.error as err:
            raise ValueError(f"detector {path!r} could not be loaded as a YuNet model: {err}") from None
        self.min_face = min_face
        self.name = f"yunet:{os.path.basename(path)}"

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        cv2 = _cv2()
        small, scale = _shrink(frame)
        self.net.setInputSize((small.shape[1], small.shape[0]))
        _, faces = self.net.detect(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        if faces is None:
            return np.zeros((0, 5))
        faces = np.asarray(faces, np.float64)
        boxes = faces[:, :4] * scale
        out = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:4], faces[:, -1:]], 1)
        return out[(out[:, 2] - out[:, 0]) >= self.min_face]


def load_detector(model: str | None = None, *, min_face: int = 32):
    """The default cascade (``model`` None), or the model file ``model`` by its extension (.xml, .onnx)."""
    if model is None:
        return CascadeDetector(min_face=min_face)
    if not os.path.isfile(model):
        raise FileNotFoundError(f"detector model {model!r} does not exist or is not a file")
    ext = os.path.splitext(model)[1].lower()
    if ext == ".xml":
        return CascadeDetector(model, min_face=min_face)
    if ext == ".onnx":
        return YuNetDetector(model, min_face=min_face)
    raise ValueError(
        f"detector model {model!r}: expected an OpenCV cascade .xml or a YuNet .onnx, got {ext or 'no'} extension"
    )


def _shrink(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """The frame at most ``DETECT_MAX_SIDE`` wide and the factor back to its pixels."""
    cv2 = _cv2()
    h, w = frame.shape[:2]
    scale = max(h, w) / DETECT_MAX_SIDE
    if scale <= 1:
        return np.ascontiguousarray(frame), 1.0
    small = cv2.resize(frame, (round(w / scale), round(h / scale)), interpolation=cv2.INTER_AREA)
    return small, max(h, w) / max(small.shape[:2])


__all__ = ["CascadeDetector", "YuNetDetector", "load_detector", "DEFAULT_CASCADE"]
