"""A small labelled synthetic root shared by the probe tests (rendered once per session)."""

import pytest


@pytest.fixture(scope="session")
def records(tmp_path_factory):
    """The records of 4 identities x 2 tracks x 5 frames of 48 px, with pose labels."""
    from fabnet.data.index import load_index
    from fabnet.data.synth import synthesize

    d = tmp_path_factory.mktemp("synth")
    synthesize(
        str(d), identities=4, tracks_per_identity=2, frames_per_track=5, size=48, seed=5, progress=False, previews=False
    )
    return load_index(str(d))
