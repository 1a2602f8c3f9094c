"""The raw-pixel reference: the crop itself as the embedding, through the same probes and retrieval."""

import numpy as np
import pytest
import torch
from PIL import Image

from fabnet.probe.pixels import PixelEncoder


def test_pixel_encoder_flattens_channel_major():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    e = PixelEncoder(4)(x)
    assert e.shape == (2, 48) and PixelEncoder(4).embedding_dim == 48
    assert e[1, 16 + 2 * 4 + 3] == x[1, 1, 2, 3]  # channel 1, row 2, column 3


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_pixel_encoder_bad_size_named(size):
    with pytest.raises(ValueError, match=r"size must be an integer >= 1, got "):
        PixelEncoder(size)


def test_pixel_encoder_bad_shape_named():
    with pytest.raises(ValueError, match=r"x: expected \(B, 3, 8, 8\), got \(2, 3, 8, 9\)"):
        PixelEncoder(8)(torch.zeros(2, 3, 8, 9))


def test_embed_splits_with_pixels_is_the_resized_crop(tmp_path):
    # Two frames: a flat colour must come back as that colour everywhere, and a noise frame as
    # PIL's own crop + bilinear resize of the stored file, in [0, 1], channel-major.
    from fabnet.probe.frames import eval_boxes
    from fabnet.probe.pipeline import embed_splits

    rng = np.random.default_rng(0)
    images = [np.full((40, 40, 3), (200, 100, 50), np.uint8), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)]
    for i, im in enumerate(images):
        d = tmp_path / f"id{i:04d}" / "vid00" / "track0"
        d.mkdir(parents=True)
        Image.fromarray(im).save(d / "000.jpg", quality=100)
    emb = embed_splits(PixelEncoder(8), str(tmp_path), splits=("all",))["all"]
    assert emb.embeddings.shape == (2, 192)
    order = [r.identity for r in emb.records]
    flat = emb.embeddings[order.index("id0000")].reshape(3, -1)
    np.testing.assert_allclose(flat.mean(1), np.array([200, 100, 50]) / 255, atol=2 / 255)
    assert flat.std(1).max() < 2 / 255
    rec = emb.records[order.index("id0001")]
    box = eval_boxes([rec])[0]
    with Image.open(rec.path) as im:
        want = np.asarray(im.convert("RGB").crop(tuple(int(v) for v in box)).resize((8, 8), Image.BILINEAR))
    got = emb.embeddings[order.index("id0001")].reshape(3, 8, 8).transpose(1, 2, 0)
    np.testing.assert_allclose(got, want / 255, atol=1e-6)
