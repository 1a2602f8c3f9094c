import pytest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A tiny synthetic data root: 12 identities x 2 tracks x 6 frames at 48 px (crops resize to 32)."""
    from fabnet.data.synth import synthesize

    root = str(tmp_path_factory.mktemp("synth") / "data")
    synthesize(
        root, identities=12, tracks_per_identity=2, frames_per_track=6, size=48, seed=0, progress=False, previews=False
    )
    return root


@pytest.fixture(scope="session")
def train_records(synth_root):
    """The training split of ``synth_root`` (labelled FrameRecords)."""
    from fabnet.data.index import load_index

    return load_index(synth_root, "train")
