"""Checkpoints cannot run code on load; old files still load; files get the user's umask."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from fabnet.model import FabNet, load_checkpoint, load_encoder, save_checkpoint
from fabnet.model.checkpoint import FORMAT, UnsafeCheckpointError


class _RunsCode:
    """Unpickling this calls ``touch MARKER``: what a crafted checkpoint does."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> str:
    """4 identities x 2 tracks x 4 frames at 48 px: enough for every command to reach its checkpoint."""
    from fabnet.data.synth import synthesize

    root = str(tmp_path_factory.mktemp("synth") / "data")
    synthesize(
        root, identities=4, tracks_per_identity=2, frames_per_track=4, size=48, seed=0, progress=False, previews=False
    )
    return root


def _crafted(tmp_path, model: FabNet | None = None) -> tuple[str, str]:
    marker = str(tmp_path / "pwned")
    model = model or FabNet(32, 1)
    state = {"format": FORMAT, "model_config": model.config(), "model": model.state_dict(), "x": _RunsCode(marker)}
    path = str(tmp_path / "evil.pt")
    torch.save(state, path)
    return path, marker


def test_crafted_checkpoint_is_refused_without_running(tmp_path):
    path, marker = _crafted(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pt' refused: it holds (posix|os)\.system"):
        load_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        load_encoder(path)
    assert not os.path.exists(marker), "loading the checkpoint ran its code"


@pytest.mark.parametrize(
    "command",
    [
        ["embed", "--checkpoint", "{ck}", "--data", "{data}", "--out", "{out}/emb.npz"],
        ["train", "--data", "{data}", "--out", "{out}/run", "--size", "32", "--steps", "1", "--init", "{ck}"],
        ["train", "--data", "{data}", "--out", "{out}/run", "--size", "32", "--steps", "1", "--resume", "{ck}"],
    ],
)
def test_crafted_checkpoint_through_the_cli(tmp_path, tiny_data, command):
    """The commands that read checkpoints exit 2 with the refusal, and the code never runs."""
    path, marker = _crafted(tmp_path)
    args = [a.format(ck=path, data=tiny_data, out=tmp_path) for a in command]
    proc = subprocess.run([sys.executable, "-m", "fabnet", *args], capture_output=True, text=True, timeout=300)
    assert not os.path.exists(marker), f"fabnet {command[0]} ran the checkpoint's code"
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "refused: it holds" in proc.stderr and f"fabnet {command[0]}: error:" in proc.stderr


def test_training_checkpoint_round_trips_the_random_streams(tmp_path):
    """The generator states a training checkpoint stores load as plain data and restore exactly."""
    from fabnet.train.state import rng_state, set_rng_state

    np.random.seed(3)
    random.seed(4)
    torch.manual_seed(5)
    model = FabNet(32, 1)
    path = save_checkpoint(
        {"format": FORMAT, "model_config": model.config(), "model": model.state_dict(), "rng": rng_state()},
        str(tmp_path / "a.pt"),
    )
    expected = (np.random.rand(3), random.random(), torch.rand(3))
    np.random.seed(0)
    random.seed(0)
    torch.manual_seed(0)
    set_rng_state(load_checkpoint(path)["rng"])
    got = (np.random.rand(3), random.random(), torch.rand(3))
    np.testing.assert_array_equal(got[0], expected[0])
    assert got[1] == expected[1]
    torch.testing.assert_close(got[2], expected[2], rtol=0, atol=0)


def test_file_of_the_previous_format_still_loads(tmp_path):
    """Files written before the numpy state became plain values hold np.random.get_state()."""
    from fabnet.train.state import set_rng_state

    model = FabNet(32, 1)
    np.random.seed(11)
    old_numpy_state = np.random.get_state()
    expected = np.random.rand(2)
    state = {
        "format": FORMAT,
        "model_config": model.config(),
        "model": model.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "numpy": old_numpy_state, "python": random.getstate(), "cuda": None},
    }
    path = str(tmp_path / "old.pt")
    torch.save(state, path)
    loaded = load_checkpoint(path)
    set_rng_state(loaded["rng"])
    np.testing.assert_array_equal(np.random.rand(2), expected)


def test_checkpoint_gets_the_users_umask(tmp_path):
    model = FabNet(32, 1)
    old = os.umask(0o022)
    try:
        path = save_checkpoint(
            {"format": FORMAT, "model_config": model.config(), "model": model.state_dict()}, str(tmp_path / "m.pt")
        )
        assert os.stat(path).st_mode & 0o777 == 0o644
        os.umask(0o077)
        save_checkpoint({"format": FORMAT, "model_config": model.config(), "model": model.state_dict()}, path)
        assert os.stat(path).st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
