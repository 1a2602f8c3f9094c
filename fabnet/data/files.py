"""What fabnet opens from a data root: regular files of bounded size, images of bounded pixels.

A data root is not always the user's own: a FIFO named ``x.jpg`` blocks the first ``open``
forever, a link to ``/dev/zero`` reads without end, and a JPEG of a few KB can declare
144 megapixels. Every frame, label file and video is stat-ed first: only regular files are
opened (a link counts as what it points to), each below a size bound; an image's declared size
is read from its header and bounded before any pixel is decoded.
"""

from __future__ import annotations

import os
import stat
import warnings

# A face frame, even a 4K video frame stored as a high-quality JPEG, is a few MB.
MAX_FRAME_BYTES = 64 * 2**20
# 8K UHD (7680 x 4320) is 33 Mpx; PIL's own warning starts at 89 Mpx, its error at 179 Mpx.
MAX_FRAME_PIXELS = 40_000_000
# labels.csv of a VoxCeleb2-sized root (1.1 M frames x ~200 bytes) is ~220 MB.
MAX_TABLE_BYTES = 2**30


class UnreadableFile(OSError):
    """A path that is not a regular file, is too large, or is an image too large to decode."""


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_regular(path: str, max_bytes: int | None) -> os.stat_result:
    """The stat of ``path`` when it is a regular file of at most ``max_bytes`` (None: any size);
    else UnreadableFile saying what it is. Never opens the file."""
    st = os.stat(path)  # follows links: a link to /dev/zero is a character device
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableFile(f"{_kind(st.st_mode)}, not a regular file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise UnreadableFile(f"{st.st_size / 2**20:.0f} MiB, more than the {max_bytes / 2**20:.0f} MiB bound")
    return st


def open_image(path: str, max_pixels: int = MAX_FRAME_PIXELS):
    """``PIL.Image.open(path)`` of a regular frame file whose declared size is within
    ``max_pixels``: the header is parsed, no pixel is decoded yet. UnreadableFile otherwise."""
    from PIL import Image

    check_regular(path, MAX_FRAME_BYTES)
    with warnings.catch_warnings():
        # PIL's own warning (past 89 Mpx) and error (past 179 Mpx): the bound below says more.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as err:
            raise UnreadableFile(f"{err} (a decompression bomb, or not a face frame)") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise UnreadableFile(
            f"declares {width} x {height} = {width * height / 1e6:.0f} Mpx, more than the "
            f"{max_pixels / 1e6:.0f} Mpx bound (a decompression bomb, or not a face frame)"
        )
    return image
