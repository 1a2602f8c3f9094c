"""Shapes, the loss against the reference-op path, checkpoints and load_encoder."""

import math
import os

import pytest
import torch
import torch.nn as nn

from fabnet import ops
from fabnet.model import (
    FORMAT,
    OP_KWARGS,
    Decoder,
    Encoder,
    FabNet,
    build_model,
    check_compatible,
    init_from,
    level_channels,
    load_checkpoint,
    load_encoder,
    save_checkpoint,
)


def _frames(B, K, S, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, S, S, generator=g), torch.rand(B, K, 3, S, S, generator=g)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_encoder_decoder_shapes(size):
    enc = Encoder(size)
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in enc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == int(math.log2(size))  # one stride-2 conv per halving, down to 1x1
    assert len(norms) == len(convs) - 1  # no BatchNorm after the first conv
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert max(c.out_channels for c in convs) <= 512
    x = torch.rand(3, 3, size, size)
    assert enc(x).shape == (3, 256)
    dec = Decoder(size, 512, 2)
    y = dec(torch.randn(3, 512))
    assert y.shape == (3, 2, size, size)
    assert y.abs().max() <= 1  # tanh
    assert Decoder(size, 256, 3)(torch.randn(2, 256, 1, 1)).shape == (2, 3, size, size)


def test_width_sets_every_level():
    """width, 2 width, 4 width, then 8 width: pix2pix at 64, the authors' release at 16."""
    assert level_channels(256) == [64, 128, 256, 512, 512, 512, 512]
    assert level_channels(256, 16) == [16, 32, 64, 128, 128, 128, 128]
    assert level_channels(32, 5) == [5, 10, 20, 40]
    enc, dec = Encoder(64, width=16), Decoder(64, 512, 2, width=16)
    assert [m.out_channels for m in enc.modules() if isinstance(m, nn.Conv2d)] == [16, 32, 64, 128, 128, 256]
    assert [m.out_channels for m in dec.modules() if isinstance(m, nn.Conv2d)] == [128, 128, 64, 32, 16, 2]
    model = FabNet(64, 3, width=16)
    target, sources = _frames(2, 3, 64)
    assert model(target, sources).shape == (2,)
    assert model.config()["width"] == 16


@pytest.mark.parametrize("bad", [0, -4, 8.0, "16", True])
def test_bad_width(bad):
    with pytest.raises(ValueError, match=f"width must be an integer >= 1 .*got {bad!r}"):
        FabNet(32, 1, width=bad)


@pytest.mark.parametrize("size,K", [(32, 1), (64, 3), (32, 2)])
def test_fabnet_shapes(size, K):
    model = FabNet(size, K)
    assert (model.confidence_decoder is None) == (K == 1)
    target, sources = _frames(2, K, size)
    flows, logits = model.predict(target, sources)
    assert flows.shape == (2, K, 2, size, size)
    assert logits is None if K == 1 else logits.shape == (2, K, size, size)
    losses = model(target, sources)
    assert losses.shape == (2,) and torch.isfinite(losses).all()
    losses.mean().backward()
    assert model.encoder.net[0].weight.grad is not None


@pytest.mark.parametrize("bad", [48, 16, 512, 100, "64", 64.0])
def test_bad_size(bad):
    with pytest.raises(ValueError, match="size must be a power of two in \\[32, 256\\]"):
        FabNet(bad, 1)


def test_bad_input_shape():
    model = FabNet(32, 2)
    target, sources = _frames(2, 3, 32)
    with pytest.raises(ValueError, match="num_sources=2"):
        model(target, sources)


def test_decode_is_predict_from_embeddings():
    torch.manual_seed(0)
    model = FabNet(size=32, num_sources=2).eval()
    target, sources = torch.rand(3, 3, 32, 32), torch.rand(3, 2, 3, 32, 32)
    with torch.no_grad():
        flows, logits = model.predict(target, sources)
        v_t, v_s = model.encoder(target), model.encoder(sources.flatten(0, 1)).view(3, 2, -1)
        flows2, logits2 = model.decode(v_t, v_s)
    torch.testing.assert_close(flows2, flows)
    torch.testing.assert_close(logits2, logits)
    with pytest.raises(ValueError, match=r"source_embeddings \(B, K=2, 256\).*\(3, 1, 256\)"):
        model.decode(v_t, v_s[:, :1])
    with pytest.raises(ValueError, match=r"target_embedding \(B, 256\)"):
        model.decode(v_t[:, :8], v_s)


@pytest.mark.parametrize("K", [1, 3])
def test_loss_matches_reference_path(K):
    """The fused op inside the model == flows/logits fed to the plain-PyTorch reference, with grads."""
    torch.manual_seed(0)
    fused = FabNet(32, K, op_backend="cpu" if ops.extension.available() else "reference")
    ref = FabNet(32, K, op_backend="reference")
    ref.load_state_dict(fused.state_dict())
    target, sources = _frames(4, K, 32, seed=1)
    l_fused = fused(target, sources)
    l_ref = ref(target, sources)
    torch.testing.assert_close(l_fused, l_ref, rtol=1e-5, atol=1e-6)
    # and the reference is the formula: flows / logits from the decoders, grid_sample, softmax, L1
    flows, logits = ref.predict(target, sources)
    manual = ops.warp_blend_l1_reference(sources, flows, logits, target, **OP_KWARGS)
    torch.testing.assert_close(l_ref, manual, rtol=1e-5, atol=1e-6)
    w = torch.linspace(0.5, 1.5, 4)
    (l_fused * w).sum().backward()
    (l_ref * w).sum().backward()
    for (name, a), (_, b) in zip(fused.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_zero_flows_reproduce_the_source():
    """The model's op options: tanh offsets added to the identity grid (residual), so a flow
    decoder that outputs 0 copies the source; offsets past the edge clamp to it (border)."""
    assert OP_KWARGS == dict(residual=True, padding_mode="border", align_corners=True)
    torch.manual_seed(0)
    model = FabNet(32, 1).eval()
    last = model.flow_decoder.blocks[-1].conv
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    target, sources = _frames(2, 1, 32)
    out = model.generate(target, sources)
    torch.testing.assert_close(out["generated"], sources[:, 0])
    # Within rounding, not exactly: the identity is F.affine_grid's, whose points miss pixel
    # centres by an ulp with align_corners, and grid_sample's own copy is off by as much.
    assert model(sources[:, 0], sources).max() < 1e-6
    # offsets of +2 in x push every sample past the right edge: border padding repeats the last column
    last.bias.data = torch.tensor([10.0, 0.0])  # tanh(10) ~ 1: x offset ~ 1 (half the frame)
    shifted = model.generate(target, sources)["generated"]
    torch.testing.assert_close(shifted[..., -1], sources[:, 0, ..., -1], rtol=1e-4, atol=1e-4)
    assert shifted.abs().min() > 0  # no zero padding anywhere


def test_generate_and_channels_last():
    torch.manual_seed(0)
    model = FabNet(32, 3).eval()
    target, sources = _frames(2, 3, 32)
    out = model.generate(target, sources)
    assert out["generated"].shape == (2, 3, 32, 32)
    torch.testing.assert_close(out["confidence"].sum(1), torch.ones(2, 32, 32))
    torch.testing.assert_close(out["loss"], model(target, sources), rtol=1e-5, atol=1e-6)
    cl = FabNet(32, 3, channels_last=True).eval()
    cl.load_state_dict(model.state_dict())
    torch.testing.assert_close(cl(target, sources), model(target, sources), rtol=1e-4, atol=1e-5)


def _state(model, **extra):
    return dict(format=FORMAT, model_config=model.config(), model=model.state_dict(), **extra)


def test_checkpoint_roundtrip_and_load_encoder(tmp_path):
    torch.manual_seed(0)
    model = FabNet(32, 2)
    model(*_frames(4, 2, 32))  # move BatchNorm statistics away from their init
    path = save_checkpoint(_state(model, step=7), str(tmp_path / "ck" / "last.pt"))
    assert os.listdir(tmp_path / "ck") == ["last.pt"]  # no temporary left behind
    state = load_checkpoint(path)
    assert state["step"] == 7
    rebuilt = build_model(state)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[k], v)
    enc = load_encoder(path)
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    x = torch.rand(3, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(enc(x), model.encoder(x))


def test_width_survives_the_checkpoint(tmp_path):
    """A width-16 model comes back at width 16 from build_model and load_encoder; a file written
    before the width was stored loads at the default, 64."""
    torch.manual_seed(0)
    model = FabNet(32, 1, width=16).eval()
    path = save_checkpoint(_state(model), str(tmp_path / "thin.pt"))
    x = torch.rand(2, 3, 32, 32)
    assert build_model(load_checkpoint(path)).width == 16
    enc = load_encoder(path)
    assert enc.width == 16
    torch.testing.assert_close(enc(x), model.encoder(x))
    old = _state(FabNet(32, 1))
    del old["model_config"]["width"]
    old_path = save_checkpoint(old, str(tmp_path / "old.pt"))
    assert build_model(load_checkpoint(old_path)).width == 64 and load_encoder(old_path).width == 64
    with pytest.raises(ValueError, match="trained with --width 16, but --width is 64; pass --width 16"):
        check_compatible(_state(model), size=32, num_sources=1, width=64, path="thin.pt")
    with pytest.raises(ValueError, match="--init 'thin.pt' was trained with --width 16, but --width is 64"):
        init_from(FabNet(32, 3), _state(model), path="thin.pt")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    model = FabNet(32, 1)
    path = save_checkpoint(_state(model, step=1), str(tmp_path / "last.pt"))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(_state(model, step=2, bad=Unpicklable()), path)
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a fabnet checkpoint"):
        load_checkpoint(str(tmp_path / "other.pt"))
    (tmp_path / "garbage.pt").write_bytes(b"garbage\n")
    with pytest.raises(ValueError, match="garbage.pt' is not a readable fabnet checkpoint"):
        load_checkpoint(str(tmp_path / "garbage.pt"))
    good = tmp_path / "good.pt"
    save_checkpoint(_state(FabNet(32, 1)), str(good))
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:1000])  # a copy cut off part-way
    with pytest.raises(ValueError, match="cut.pt' is not a readable fabnet checkpoint"):
        load_checkpoint(str(tmp_path / "cut.pt"))
    state = _state(FabNet(32, 1))
    with pytest.raises(ValueError, match="--size 32, but --size is 64"):
        check_compatible(state, size=64, num_sources=1, path="x.pt")
    with pytest.raises(ValueError, match="--sources 1, but --sources is 3"):
        check_compatible(state, size=32, num_sources=3, path="x.pt")


def test_init_from_single_source():
    """Stage 2: a K=3 model takes encoder + flow decoder from a K=1 model; confidence stays new."""
    torch.manual_seed(0)
    k1 = FabNet(32, 1)
    k3 = FabNet(32, 3)
    fresh_conf = {k: v.clone() for k, v in k3.confidence_decoder.state_dict().items()}
    assert init_from(k3, _state(k1)) == ["encoder", "flow_decoder"]
    for k, v in k1.encoder.state_dict().items():
        torch.testing.assert_close(k3.encoder.state_dict()[k], v)
    for k, v in k1.flow_decoder.state_dict().items():
        torch.testing.assert_close(k3.flow_decoder.state_dict()[k], v)
    for k, v in fresh_conf.items():
        torch.testing.assert_close(k3.confidence_decoder.state_dict()[k], v)
    with pytest.raises(ValueError, match="--init"):
        init_from(FabNet(64, 3), _state(k1))


def test_init_from_weights_that_fit_nothing_is_refused():
    """--init with a file whose weights match none of the model's keys used to train from scratch."""
    model = FabNet(32, 1)
    foreign = _state(model)
    foreign["model"] = {"backbone.conv1.weight": torch.zeros(3), "head.bias": torch.zeros(2)}
    with pytest.raises(
        ValueError,
        match=r"holds no FAb-Net encoder and flow decoder \(loaded: none\); "
        r"missing encoder\..* unexpected backbone\.conv1\.weight, head\.bias",
    ):
        init_from(FabNet(32, 1), foreign, path="other.pt")
    # right names, wrong shapes: named too, not a RuntimeError from load_state_dict
    partial = _state(model)
    key = next(k for k in partial["model"] if k.startswith("encoder.") and k.endswith("weight"))
    partial["model"][key] = torch.zeros(1)
    with pytest.raises(ValueError, match=rf"its encoder does not fit this model's: missing {key[8:]}"):
        init_from(FabNet(32, 1), partial, path="other.pt")
