"""`fabnet export`: the encoder as .safetensors with its metadata and a model card, loaded back equal."""

import hashlib
import json

import pytest
import torch

from fabnet import __version__
from fabnet.cli import main
from fabnet.model import load_encoder, load_exported_encoder

safetensors = pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-init encoder checkpoint at 32 px, width 16 (no data needed)."""
    from fabnet.model import FORMAT, Encoder

    torch.manual_seed(0)
    encoder = Encoder(32, 256, width=16)
    state = {
        "format": FORMAT,
        "fabnet_version": __version__,
        "model_config": {"size": 32, "num_sources": 1, "embedding_dim": 256, "width": 16},
        "model": {f"encoder.{k}": v for k, v in encoder.state_dict().items()},
        "train_config": {"data": "/data/voxceleb-like", "steps": 123},
        "step": 123,
    }
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    torch.save(state, path)
    return str(path)


def test_export_loads_back_equal_with_metadata_and_card(checkpoint, tmp_path, capsys):
    out = tmp_path / "enc.safetensors"
    assert main(["export", checkpoint, str(out)]) == 0
    assert "model card" in capsys.readouterr().out
    x = torch.rand(3, 3, 32, 32)
    exported = load_exported_encoder(str(out))
    assert not exported.training and not any(p.requires_grad for p in exported.parameters())
    assert torch.equal(exported(x), load_encoder(checkpoint)(x))
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    with open(checkpoint, "rb") as f:
        assert meta["checkpoint_sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert json.loads(meta["model_config"])["width"] == 16 and meta["fabnet_version"] == __version__
    assert json.loads(meta["train_config"])["data"] == "/data/voxceleb-like" and meta["step"] == "123"
    card = (tmp_path / "enc.md").read_text()
    assert meta["checkpoint_sha256"] in card and "/data/voxceleb-like" in card and "fabnet export" in card


def test_export_refuses_other_names_and_foreign_files(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", checkpoint, str(tmp_path / "enc.pt")])
    assert "expected a file name ending in .safetensors" in capsys.readouterr().err
    plain = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match="is not a fabnet encoder export"):
        load_exported_encoder(str(plain))
