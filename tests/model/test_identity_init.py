"""The decoders' starting point: near the identity warp and equal confidences (the default),
or the paper's random last convs; and the confidence logits' bound."""

from __future__ import annotations

import math

import pytest
import torch

from fabnet.model import FabNet
from fabnet.model.checkpoint import build_model


def _frames(B=2, K=3, S=32):
    g = torch.Generator().manual_seed(0)
    return torch.rand(B, 3, S, S, generator=g), torch.rand(B, K, 3, S, S, generator=g)


def test_identity_init_starts_near_the_unwarped_blend():
    torch.manual_seed(0)
    model = FabNet(32, 3, width=8).eval()
    target, sources = _frames()
    flows, logits = model.predict(target, sources)
    # 0.01 of the default start: offsets of a few thousandths of the half-width, not zero.
    assert 0 < flows.abs().max() < 0.02 and 0 < logits.abs().max() < 0.02 * model.confidence_range
    out = model.generate(target, sources)
    torch.testing.assert_close(out["generated"], sources.mean(1), atol=0.02, rtol=0)
    # Every layer learns from the first step: at an exactly zero last conv the layers below it
    # would get no gradient.
    model.train()
    model(target, sources).sum().backward()
    for decoder in (model.flow_decoder, model.confidence_decoder):
        assert decoder.blocks[-1].conv.weight.grad.abs().sum() > 0
        assert decoder.blocks[-2].conv.weight.grad.abs().sum() > 0
    assert model.encoder.net[0].weight.grad.abs().sum() > 0


def test_decoder_last_scale_zero_is_exactly_zero_and_checked():
    from fabnet.model.networks import Decoder

    d = Decoder(32, 16, 2, width=8, last_scale=0.0).eval()
    assert torch.equal(d(torch.randn(3, 16)), torch.zeros(3, 2, 32, 32))
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="last_scale"):
            Decoder(32, 16, 2, width=8, last_scale=bad)


def test_paper_init_is_random():
    torch.manual_seed(0)
    model = FabNet(32, 3, width=8, identity_init=False, confidence_range=1.0).eval()
    flows, logits = model.predict(*_frames())
    assert flows.abs().max() > 0.01 and logits.abs().max() > 0.01
    assert logits.abs().max() <= 1.0


@pytest.mark.parametrize("bound", [1.0, 8.0])
def test_confidence_range_bounds_the_largest_weight(bound):
    """One source's weight is at most e^r / (e^r + (K - 1) e^-r): 0.79 for the paper's r = 1
    with K = 3, within 3e-7 of 1 for r = 8."""
    model = FabNet(32, 3, width=8, confidence_range=bound).eval()
    last = model.confidence_decoder.blocks[-1].conv
    with torch.no_grad():
        last.bias.fill_(50.0)  # saturate tanh: every logit at +r ...
    target, sources = _frames()
    with torch.no_grad():
        v_t = model.encoder(target)
        v_s = model.encoder(sources.flatten(0, 1)).view(2, 3, -1)
        _, logits = model.decode(v_t, v_s)
    assert logits.max().item() == pytest.approx(bound)
    logits[:, 1:] = -bound  # ... and the other sources at -r
    best = torch.softmax(logits, 1)[:, 0].min().item()
    assert best == pytest.approx(math.exp(bound) / (math.exp(bound) + 2 * math.exp(-bound)), rel=1e-5)


def test_confidence_range_must_be_positive():
    with pytest.raises(ValueError, match="confidence_range must be a finite number > 0; got 0"):
        FabNet(32, 3, width=8, confidence_range=0)


def test_old_checkpoints_load_with_the_papers_bound():
    model = FabNet(32, 3, width=8, confidence_range=1.0)
    config = model.config()
    assert config["confidence_range"] == 1.0
    del config["confidence_range"]  # as files written before it was stored
    rebuilt = build_model({"model_config": config, "model": model.state_dict()})
    assert rebuilt.confidence_range == 1.0
