"""Small synthetic data roots shared by the data tests (rendered once per session)."""

from __future__ import annotations

import os
import shutil

import pytest

from fabnet.data.dali_backend import available as dali_available

requires_dali = pytest.mark.skipif(
    not dali_available(), reason="nvidia-dali is not installed (pip install nvidia-dali-cuda130)"
)

# 20 identities so the 75/15/10 split is exactly 15 / 3 / 2 identities.
IDENTITIES, TRACKS, FRAMES, SIZE = 20, 2, 5, 48


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> str:
    """20 identities x 2 tracks x 5 frames of 48 px, with labels and the two preview PNGs."""
    from fabnet.data.synth import synthesize

    root = str(tmp_path_factory.mktemp("synth") / "root")
    synthesize(root, IDENTITIES, TRACKS, FRAMES, size=SIZE, seed=0, progress=False, previews=True)
    return root


@pytest.fixture(scope="session")
def wide_root(tmp_path_factory) -> str:
    """A root of 96 px frames (no labels.csv: indexed by scanning) for the loader comparisons.

    96 px frames let a crop be resized both up (S = 80) and down by more than 2x (S = 24,
    where Pillow decodes at reduced scale).
    """
    from fabnet.data.synth import synthesize

    root = str(tmp_path_factory.mktemp("wide") / "root")
    synthesize(root, 4, 2, 5, size=96, seed=1, supersample=1, progress=False, previews=False)
    os.remove(os.path.join(root, "labels.csv"))
    return root


def copy_root(src: str, dst) -> str:
    """A copy of a data root without its index cache."""
    dst = str(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".fabnet-index.json"))
    return dst
