"""Untrusted checkpoint files: each malformed one is refused in one line naming the file and
what is wrong, before anything is built, allocated or computed from it."""

from __future__ import annotations

import os
import resource
import zipfile

import pytest
import torch

from fabnet.cli import main
from fabnet.model import FabNet, build_model, load_checkpoint, load_encoder, save_checkpoint
from fabnet.model.checkpoint import FORMAT, MAX_EXPANSION


def _state(**overrides) -> dict:
    model = FabNet(32, 1, width=8)
    state = {"format": FORMAT, "model_config": model.config(), "model": model.state_dict(), "step": 0}
    state.update(overrides)
    return state


def _saved(tmp_path, state, name="c.pt") -> str:
    path = str(tmp_path / name)
    save_checkpoint(state, path)
    return path


@pytest.mark.parametrize(
    "config, message",
    [
        ({"num_sources": 1, "embedding_dim": 256, "width": 8}, "model_config lacks 'size'"),
        ({"size": "32", "num_sources": 1, "embedding_dim": 256}, "model_config['size'] must be a power of two"),
        ({"size": 48, "num_sources": 1, "embedding_dim": 256}, "must be a power of two in [32, 256], got 48"),
        ({"size": 32, "num_sources": True, "embedding_dim": 256}, "model_config['num_sources'] must be an integer"),
        ({"size": 32, "num_sources": 1, "embedding_dim": 2**40}, "model_config['embedding_dim'] must be"),
        (
            {"size": 32, "num_sources": 1, "embedding_dim": 256, "width": 8, "confidence_range": float("nan")},
            "model_config['confidence_range'] must be a finite number > 0",
        ),
    ],
    ids=["missing", "string", "not-power", "bool", "huge", "nan"],
)
def test_model_config_is_checked_before_use(tmp_path, config, message):
    path = _saved(tmp_path, _state(model_config=config))
    with pytest.raises(ValueError) as err:
        load_checkpoint(path)
    assert message in str(err.value) and path in str(err.value) and "\n" not in str(err.value)


def test_weights_that_do_not_fit_model_config_are_named(tmp_path):
    """The config says width 16, the tensors are width 8's: one line, not load_state_dict's
    page of size mismatches."""
    state = _state()
    state["model_config"] = dict(state["model_config"], width=16)
    path = _saved(tmp_path, state)
    for load in (lambda: load_encoder(path), lambda: build_model(load_checkpoint(path), path)):
        with pytest.raises(ValueError) as err:
            load()
        text = str(err.value)
        assert text.startswith(f"{path!r}: its weights do not fit the model its model_config describes")
        assert "missing or of another shape encoder." in text or "missing or of another shape " in text
        assert "\n" not in text


def test_non_tensor_weights_are_refused(tmp_path):
    path = _saved(tmp_path, _state(model={"encoder.w": [1, 2, 3]}))
    with pytest.raises(ValueError, match="'model' must map parameter names to tensors"):
        load_checkpoint(path)


def test_nan_weights_are_refused(tmp_path):
    """Item 11: before, NaN weights gave NaN embeddings and metrics with exit 0."""
    state = _state()
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    path = _saved(tmp_path, state)
    with pytest.raises(ValueError, match=rf"holds non-finite weights \({name}\): its embeddings and metrics"):
        load_checkpoint(path)


def _deflated_copy(source: str, target: str) -> None:
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)


def test_a_decompression_bomb_is_refused_before_it_expands(tmp_path):
    """Item 10: 64 M zeros deflate to ~0.25 MB; the zip directory says 256 MB. Refused from the
    directory alone: the process's peak memory does not grow by the expansion."""
    plain = str(tmp_path / "plain.pt")
    torch.save({"format": FORMAT, "model": {"w": torch.zeros(64 * 2**20)}, "model_config": {}}, plain)
    bomb = str(tmp_path / "bomb.pt")
    _deflated_copy(plain, bomb)
    os.unlink(plain)
    assert os.path.getsize(bomb) < 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError) as err:
        load_checkpoint(bomb)
    assert f"{bomb!r} refused: its records expand to 256 MiB from 0.2 MiB on disk" in str(err.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 64 * 2**10  # KiB: < 64 MiB more


def test_a_checkpoint_zipped_with_mild_compression_still_loads(tmp_path):
    """Below MAX_EXPANSION a compressed file (another tool re-zipped it) is not a bomb."""
    path = _saved(tmp_path, _state())
    packed = str(tmp_path / "packed.pt")
    _deflated_copy(path, packed)
    with zipfile.ZipFile(packed) as z:
        expanded = sum(i.file_size for i in z.infolist())
    assert expanded <= MAX_EXPANSION * os.path.getsize(packed)
    assert load_checkpoint(packed)["model_config"]["width"] == 8


@pytest.mark.parametrize("content", [b"hello\n", os.urandom(3000), b"PK\x03\x04" + os.urandom(200)])
def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path, content, capsys):
    """Item 11: torch's advice to retry with weights_only=False is false and unsafe; one line."""
    path = str(tmp_path / "x.pt")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(ValueError) as err:
        load_checkpoint(path)
    text = str(err.value)
    assert text.startswith(f"{path!r} is not a readable fabnet checkpoint") and "\n" not in text
    assert "weights_only" not in text
    data = str(tmp_path / "data")
    os.makedirs(data)
    assert main(["embed", "--checkpoint", path, "--data", data, "--out", str(tmp_path / "e.pt")]) == 2
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and "weights_only" not in err_text


def test_embed_refuses_to_overwrite_its_checkpoint(tmp_path, capsys):
    """Item 6: `fabnet embed --out CKPT` would replace the trained model with embeddings."""
    from fabnet.data.synth import synthesize

    data = str(tmp_path / "data")
    synthesize(data, identities=3, tracks_per_identity=1, frames_per_track=2, size=48, progress=False, previews=False)
    path = _saved(tmp_path, _state())
    before = os.stat(path).st_mtime_ns
    link = str(tmp_path / "link.pt")
    os.symlink(path, link)
    for out in (path, link, os.path.join(str(tmp_path), ".", "c.pt")):
        assert main(["embed", "--checkpoint", path, "--data", data, "--out", out]) == 2
        err = capsys.readouterr().err
        assert f"--out {out!r} is the input --checkpoint {path!r}; writing it would destroy the input" in err
    assert os.stat(path).st_mtime_ns == before
    labels = os.path.join(data, "labels.json")
    assert main(["probe", "--pixels", "8", "--data", data, "--task", "pose", "--json", labels]) == 2
    assert "is a file inside the input --data" in capsys.readouterr().err
