"""embed / probe / retrieve on a tiny synthetic root, with baseline checkpoints."""

import json

import numpy as np
import pytest
import torch

from fabnet.cli import main


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from fabnet.data.synth import synthesize

    d = tmp_path_factory.mktemp("synth")
    synthesize(
        str(d),
        identities=12,
        tracks_per_identity=2,
        frames_per_track=8,
        size=48,
        seed=3,
        progress=False,
        previews=False,
    )
    return str(d)


@pytest.fixture(scope="module")
def checkpoints(root, tmp_path_factory):
    from fabnet.data.index import load_index
    from fabnet.train.baselines import BaselineConfig, train_baseline

    d = tmp_path_factory.mktemp("ckpt")
    recs = load_index(root, "train")
    out = {}
    methods = (("random_init", 0), ("autoencoder", 2), ("rotation", 2), ("contrastive", 2), ("supervised", 2))
    for method, steps in methods:
        cfg = BaselineConfig(method=method, size=32, steps=steps, batch_size=4, optimizer="sgd", lr=1e-2, bn_batches=2)
        out[method] = train_baseline(cfg, recs, str(d / f"{method}.pt")).checkpoint
    return out


def test_baseline_checkpoints_load_like_fabnet(checkpoints):
    from fabnet.model import load_encoder

    x = torch.rand(2, 3, 32, 32)
    embs = {}
    for method, path in checkpoints.items():
        enc = load_encoder(path)
        assert not enc.training and not any(p.requires_grad for p in enc.parameters())
        embs[method] = enc(x)
        assert embs[method].shape == (2, 256) and torch.isfinite(embs[method]).all()
        assert torch.load(path, weights_only=False)["baseline"] == method
    assert not torch.allclose(embs["random_init"], embs["autoencoder"])


def test_baseline_weight_decay_shrinks_the_weights(root, tmp_path):
    # The same seed, batches and steps: only the decay term differs, so the decayed encoder's
    # conv weights must end smaller (BatchNorm re-normalises, so the loss barely resists it).
    from fabnet.data.index import load_index
    from fabnet.train.baselines import BaselineConfig, train_baseline

    recs = load_index(root, "train")
    norms = {}
    for wd in (0.0, 0.5):
        cfg = BaselineConfig(
            method="autoencoder", size=32, steps=3, batch_size=4, optimizer="sgd", lr=1e-2, weight_decay=wd
        )
        path = train_baseline(cfg, recs, str(tmp_path / f"ae{wd}.pt")).checkpoint
        state = torch.load(path, weights_only=False)["model"]
        norms[wd] = sum(float(v.norm()) for k, v in state.items() if k.startswith("encoder.") and v.dim() == 4)
    assert norms[0.5] < 0.99 * norms[0.0]


def test_embed_cli(root, checkpoints, tmp_path):
    out = tmp_path / "emb.pt"
    assert main(["embed", "--checkpoint", checkpoints["random_init"], "--data", root, "--out", str(out)]) == 0
    blob = torch.load(out, weights_only=False)
    e = blob["splits"]["all"]
    assert e["embeddings"].shape == (192, 256) and len(e["paths"]) == 192 and len(set(e["identities"])) == 12
    npz = tmp_path / "emb.npz"
    assert (
        main(
            ["embed", "--checkpoint", checkpoints["random_init"], "--data", root, "--out", str(npz), "--split", "test"]
        )
        == 0
    )
    z = np.load(npz)
    assert z["embeddings"].shape[1] == 256 and len(z["paths"]) == len(z["identities"]) == len(z["embeddings"])


@pytest.mark.parametrize("task", ["landmarks", "pose", "expression", "attributes"])
def test_probe_cli(root, checkpoints, tmp_path, task, capsys):
    js = tmp_path / "p.json"
    rc = main(
        [
            "probe",
            "--checkpoint",
            checkpoints["autoencoder"],
            "--data",
            root,
            "--task",
            task,
            "--json",
            str(js),
            "--max-epochs",
            "5",
            "--name",
            "ae",
        ]
    )
    assert rc == 0
    res = json.loads(js.read_text())["probes"][task]["ae"]
    key = {"landmarks": "nme_iod_pct", "pose": "mae_deg"}.get(task, "auc_mean")
    assert np.isfinite(res[key])
    assert key in capsys.readouterr().out


def test_retrieve_cli(root, checkpoints, tmp_path, capsys):
    from PIL import Image

    png = tmp_path / "r.png"
    assert (
        main(
            [
                "retrieve",
                "--checkpoint",
                checkpoints["rotation"],
                "--data",
                root,
                "--queries",
                "3",
                "--k",
                "4",
                "--split",
                "all",
                "--out",
                str(png),
            ]
        )
        == 0
    )
    assert Image.open(png).size[0] > 4 * 96
    assert "of the within-track variance" in capsys.readouterr().out


def test_pixels_instead_of_a_checkpoint(root, tmp_path, capsys):
    from PIL import Image

    js = tmp_path / "p.json"
    assert (
        main(["probe", "--pixels", "16", "--data", root, "--task", "pose", "--json", str(js), "--max-epochs", "5"]) == 0
    )
    res = json.loads(js.read_text())
    assert res["pixels"] == 16 and np.isfinite(res["probes"]["pose"]["pixels16"]["mae_deg"])
    npz = tmp_path / "pix.npz"
    assert main(["embed", "--pixels", "16", "--data", root, "--out", str(npz), "--split", "test"]) == 0
    z = np.load(npz)
    assert z["embeddings"].shape[1] == 3 * 16 * 16 and float(z["embeddings"].min()) >= 0.0
    png = tmp_path / "r.png"
    assert (
        main(
            [
                "retrieve",
                "--pixels",
                "16",
                "--data",
                root,
                "--queries",
                "2",
                "--k",
                "3",
                "--split",
                "all",
                "--out",
                str(png),
            ]
        )
        == 0
    )
    assert Image.open(png).size[0] > 3 * 96


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--pixels", "0"], "argument --pixels: expected an integer in [1, 256] (3 S^2 features a frame), got 0"),
        (["--pixels", "100000"], "argument --pixels: expected an integer in [1, 256]"),
        (["--pixels", "x"], "argument --pixels: expected an integer in [1, 256], got 'x'"),
        (["--pixels", "16", "--checkpoint", __file__], "not allowed with argument"),
        ([], "one of the arguments --checkpoint --pixels is required"),
    ],
)
def test_pixels_or_checkpoint_errors(root, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["probe", "--data", root, "--task", "pose", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_retrieve_caps_k_at_the_candidates(root, tmp_path):
    """--k beyond the frames of other identities draws those frames, not a blank 22 GB grid."""
    from PIL import Image

    png = tmp_path / "many.png"
    with pytest.warns(UserWarning, match=r"k=100000 is more than the \d+ frames of other identities"):
        assert (
            main(
                [
                    "retrieve",
                    "--pixels",
                    "8",
                    "--data",
                    root,
                    "--queries",
                    "1",
                    "--k",
                    "100000",
                    "--split",
                    "test",
                    "--out",
                    str(png),
                ]
            )
            == 0
        )
    width = Image.open(png).size[0]
    assert 96 < width < 200 * 96  # the test split has a few dozen frames
