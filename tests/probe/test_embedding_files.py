"""`fabnet embed --out` in .npz, .pt and .parquet: the same rows and provenance in each, any other name refused."""

import hashlib

import numpy as np
import pytest

from fabnet import __version__
from fabnet.cli import main
from fabnet.model import load_checkpoint
from fabnet.probe.embedding_files import read_embeddings


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """12 identities x 2 tracks x 4 frames of 48 px: enough for train, val and test splits."""
    from fabnet.data.synth import synthesize

    d = str(tmp_path_factory.mktemp("synth"))
    synthesize(d, identities=12, tracks_per_identity=2, frames_per_track=4, size=48, seed=3, progress=False)
    return d


@pytest.fixture(scope="module")
def checkpoints(root, tmp_path_factory):
    from fabnet.data.index import load_index
    from fabnet.train.baselines import BaselineConfig, train_baseline

    cfg = BaselineConfig(method="random_init", size=32, steps=0, batch_size=4, bn_batches=2)
    path = str(tmp_path_factory.mktemp("ckpt") / "random_init.pt")
    return {"random_init": train_baseline(cfg, load_index(root, "train"), path).checkpoint}


def _embed(root, checkpoint, out, *extra):
    return main(["embed", "--checkpoint", checkpoint, "--data", root, "--out", str(out), "--no-progress", *extra])


def test_three_formats_hold_the_same_rows_and_provenance(root, checkpoints, tmp_path):
    ckpt = checkpoints["random_init"]
    read = {}
    for ext in ("npz", "pt", "parquet"):
        assert _embed(root, ckpt, tmp_path / f"e.{ext}") == 0
        read[ext] = read_embeddings(str(tmp_path / f"e.{ext}"))
    with open(ckpt, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    for ext, got in read.items():
        assert got["embeddings"].shape == (96, 256) and got["embeddings"].dtype == np.float32, ext
        np.testing.assert_array_equal(got["embeddings"], read["npz"]["embeddings"], err_msg=ext)
        for key in ("paths", "relpaths", "identities", "splits"):
            assert got[key].tolist() == read["npz"][key].tolist(), (ext, key)
        np.testing.assert_allclose(got["boxes"], read["npz"]["boxes"], err_msg=ext)
        info = got["provenance"]
        assert info["checkpoint_sha256"] == sha and info["splits"] == ["all"] and info["fabnet_version"], ext
    # every frame keeps its own split although all were embedded together
    assert set(read["parquet"]["splits"]) == {"train", "val", "test"}
    # the baseline's checkpoint records the version that wrote it, as training checkpoints do
    assert load_checkpoint(ckpt)["fabnet_version"] == read["npz"]["provenance"]["fabnet_version"] == __version__


def test_one_split_is_recorded(root, checkpoints, tmp_path):
    assert _embed(root, checkpoints["random_init"], tmp_path / "t.parquet", "--split", "test") == 0
    got = read_embeddings(str(tmp_path / "t.parquet"))
    assert set(got["splits"]) == {"test"} and got["provenance"]["splits"] == ["test"]


@pytest.mark.parametrize("name", ["x.csv", "x.parquet.tmp", "x"])
def test_other_names_are_refused_before_work(root, checkpoints, tmp_path, capsys, name):
    with pytest.raises(SystemExit):
        _embed(root, checkpoints["random_init"], tmp_path / name)
    assert "expected a file name ending in .npz, .pt, .parquet" in capsys.readouterr().err
    assert not (tmp_path / name).exists()
