"""Within-identity probes: embeddings and labels centred per identity, predictions given the
identity's mean label back (fabnet.probe.pipeline.probe_outcome)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fabnet.probe.linear import ProbeConfig
from fabnet.probe.pipeline import Embedded, identity_means, probe_outcome


def test_identity_means_average_each_identity():
    values = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0]])
    ids = np.array(["b", "a", "b"])
    np.testing.assert_allclose(identity_means(values, ids), [[3.0, 30.0], [3.0, 30.0], [3.0, 30.0]])


def _split(name, rng, identities, frames, mode):
    """Frames whose pose is an identity offset plus a per-frame change. ``mode`` says what the
    embedding holds: "who" (only the identity), "change" (only the frame's change, nothing about
    the identity) or "both"."""
    records, rows = [], []
    for i in range(identities):
        code = rng.normal(size=8)
        offset = rng.normal(0, 15, 3)  # a person's usual pose
        for _ in range(frames):
            change = rng.normal(0, 5, 3)
            pose = offset + change
            records.append(SimpleNamespace(identity=f"{name}{i}", pose=pose.astype(np.float32)))
            who = np.r_[code, np.zeros(3)]
            what = np.r_[np.zeros(8), change]
            rows.append({"who": who, "change": what, "both": who + what}[mode] + rng.normal(0, 0.01, 11))
    return Embedded(name, records, np.array(rows, np.float32), np.zeros((len(records), 4), np.float32))


SPLITS = (("train", 60), ("val", 10), ("test", 30))


def _replay_to_test():
    """The generator state and sizes that draw the test split as ``_outcome`` does."""
    rng = np.random.default_rng(0)
    for name, n in SPLITS[:2]:
        _split(name, rng, n, 6, "change")
    return rng, 30, 6, "change"


def _outcome(mode, within):
    rng = np.random.default_rng(0)
    emb = {s: _split(s, rng, n, 6, mode) for s, n in SPLITS}
    cfg = ProbeConfig(max_epochs=150, patience=20, seed=0)
    return probe_outcome("pose", emb, config=cfg, within_identity=within)


def test_within_identity_reads_the_change_and_ignores_who():
    # An embedding that only knows who is shown: within identity it can do no better than each
    # identity's mean pose, i.e. the spread of the changes (mean |N(0, 5)| = 4 degrees).
    who = _outcome("who", True).score()["mae_deg"]
    assert who == pytest.approx(5 * np.sqrt(2 / np.pi), rel=0.15)
    # An embedding of the change alone is nearly exact within identity ...
    change = _outcome("change", True)
    assert change.score()["mae_deg"] < 0.5
    # ... while in absolute terms it misses each person's offset (spread 15 degrees).
    assert _outcome("change", False).score()["mae_deg"] > 8
    # The within-identity targets are back in absolute units: the real poses of the test frames.
    test = np.array([r.pose for r in _split("test", *_replay_to_test()).records])
    np.testing.assert_allclose(change.y, test, atol=1e-4)


def test_attributes_have_no_within_identity_probe():
    with pytest.raises(ValueError, match="within_identity probes are for"):
        probe_outcome("attributes", {}, within_identity=True)
