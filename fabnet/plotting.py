"""matplotlib for every figure fabnet draws: the file backend, and saving a figure.

One module low in the house (it imports nothing of fabnet), so that training, probes and the
demo draw the same way and no floor imports another for its plotting.
"""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot on the Agg (file) backend: figures are written, never shown, so a machine
    without a display draws them too. Imported on first use: ``fabnet --help`` does not pay for it."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str) -> str:
    """Write ``fig`` to ``path``, close it (a long run draws hundreds) and return the path."""
    fig.savefig(path)
    pyplot().close(fig)
    return path


__all__ = ["pyplot", "save"]
