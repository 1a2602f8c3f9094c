"""Test videos with a real face: scikit-image's astronaut photograph, panned and zoomed, with or without a cut.

The face box in the photograph (512 x 512) is where OpenCV's frontal cascade finds it: x 177-274,
y 66-163. Each frame shows a 4:3 window of the photograph resized to ``FRAME``; the window's side
and centre move linearly, so the face's box in every frame is known (``face_box``).
"""

from __future__ import annotations

import numpy as np

FRAME = (320, 240)  # width, height
FACE = (177.0, 66.0, 274.0, 163.0)  # x0, y0, x1, y1 in the photograph
RATE = 25


def window(i: int, n: int) -> tuple[float, float, float, float]:
    """The photograph's window (x0, y0, x1, y1) shown in frame i of n: a pan right and down while
    zooming in from 360 to 270 px wide."""
    a = i / max(n - 1, 1)
    w = 360 - 90 * a
    h = w * FRAME[1] / FRAME[0]
    cx, cy = 215 + 40 * a, 150 + 10 * a
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def face_box(i: int, n: int) -> np.ndarray:
    """Where the face is in frame i of n (x0, y0, x1, y1, video pixels)."""
    x0, y0, x1, y1 = window(i, n)
    k = FRAME[0] / (x1 - x0)
    return np.array([(FACE[0] - x0) * k, (FACE[1] - y0) * k, (FACE[2] - x0) * k, (FACE[3] - y0) * k])


def photographs() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut, and the same face pasted on another photograph (coffee): the second shot of a cut."""
    from PIL import Image
    from skimage import data

    astronaut = data.astronaut()
    other = np.asarray(Image.fromarray(data.coffee()).resize((512, 512), Image.BICUBIC)).copy()
    other[30:200, 140:310] = astronaut[30:200, 140:310]
    return astronaut, other


def write_video(path, frames: int = 50, cut_at: int | None = None) -> None:
    """An MPEG-4 video at 25 fps panning and zooming across the face; from frame ``cut_at`` on, the
    face on another background (same place and motion: only the cut separates the shots)."""
    import av
    from PIL import Image

    first, second = photographs()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=RATE)
        stream.width, stream.height = FRAME
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 4_000_000
        for i in range(frames):
            photo = second if cut_at is not None and i >= cut_at else first
            box = tuple(round(v) for v in window(i, frames))
            img = Image.fromarray(photo).crop(box).resize(FRAME, Image.BICUBIC)
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
