"""make_loader: same-track sampling, sharding, and the DALI and PIL backends against each other."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from fabnet.data import DataWarning, crop_box, load_frames, make_loader
from fabnet.data.pil_backend import read_crop
from fabnet.data.sampling import CROP_FRACTION
from tests.data.conftest import requires_dali


def _loader(root, **kw):
    args = dict(split="all", batch_size=4, num_sources=3, size=32, backend="pil", num_workers=0)
    args.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return make_loader(root, **args)


def _track_of(path: str) -> str:
    return os.path.dirname(path)


def _crop(path, box, size) -> np.ndarray:
    return read_crop(path, box, size).copy()  # writable, for torch.from_numpy


def _key(sample) -> tuple:
    """A comparable form of a planned sample: its frame paths and its box."""
    return tuple(r.path for r in sample.frames), sample.box


def test_batches_are_k_distinct_frames_of_one_track(synth_root):
    loader = _loader(synth_root, split="train", batch_size=6, num_sources=3, size=32, num_workers=1)
    batches = list(loader)
    assert len(batches) == len(loader) == len(loader.tracks) // 6  # train drops the partial batch
    for batch in batches:
        assert batch["target"].shape == (6, 3, 32, 32) and batch["sources"].shape == (6, 3, 3, 32, 32)
        assert batch["target"].dtype == batch["sources"].dtype == torch.float32
        for paths, ident in zip(batch["paths"], batch["identity"]):
            assert len(paths) == 4 and len(set(paths)) == 4, "target and sources are distinct frames"
            assert len({_track_of(p) for p in paths}) == 1, "all from one track"
            assert paths[0].split(os.sep)[-4] == ident
    # Over the epoch every track of the split is visited once.
    visited = [_track_of(p[0]) for b in batches for p in b["paths"]]
    assert len(set(visited)) == len(visited)


def test_target_and_sources_are_the_named_frames_cropped_by_the_box(synth_root):
    batch = next(iter(_loader(synth_root, size=40, crop="random", shuffle=True)))
    for b in range(2):
        box = tuple(batch["box"][b].tolist())
        side = box[2] - box[0]
        assert box[3] - box[1] == side and CROP_FRACTION[0] * 48 - 1 <= side <= CROP_FRACTION[1] * 48 + 1
        frames = torch.cat([batch["target"][b : b + 1], batch["sources"][b]])
        for k, path in enumerate(batch["paths"][b]):
            expected = torch.from_numpy(_crop(path, box, 40)).permute(2, 0, 1).float() / 255
            torch.testing.assert_close(frames[k], expected, atol=0, rtol=0)


def test_plan_is_deterministic_per_seed_and_epoch(synth_root):
    def epoch(seed, e):
        loader = _loader(synth_root, split="train", seed=seed)
        return [_key(s) for batch in loader.plan(e) for s in batch]

    assert epoch(0, 0) == epoch(0, 0)
    assert epoch(0, 0) != epoch(0, 1), "a new epoch draws new frames and crops"
    assert epoch(0, 0) != epoch(1, 0)
    val = _loader(synth_root, split="val")
    assert [[_key(s) for s in b] for b in val.plan(0)] == [[_key(s) for s in b] for b in val.plan(3)], (
        "validation (no shuffle) is the same every epoch"
    )
    assert {s.box for b in val.plan(0) for s in b} == {crop_box(48, 48, "center")}


def test_shards_are_disjoint_and_equal(synth_root):
    full = _loader(synth_root, split="train", batch_size=1, epoch_length=30)
    everything = [_key(s) for b in full.plan(0) for s in b]
    shards = [
        _loader(synth_root, split="train", batch_size=1, epoch_length=30, shard_id=i, num_shards=3) for i in range(3)
    ]
    parts = [[_key(s) for b in sh.plan(0) for s in b] for sh in shards]
    assert [len(p) for p in parts] == [10, 10, 10]
    interleaved = [parts[j % 3][j // 3] for j in range(30)]
    assert interleaved == everything, "shards are interleaved slices of one global plan"


def test_iter_from_skips_batches_without_changing_the_rest(synth_root):
    loader = _loader(synth_root, split="train", batch_size=4)
    loader.set_epoch(2)
    full = [b["paths"] for b in loader]
    loader.set_epoch(2)
    rest = [b["paths"] for b in loader.iter_from(3)]
    assert rest == full[3:]


def test_load_frames_matches_the_eval_loader(synth_root):
    batch = next(iter(_loader(synth_root, split="val", size=24, crop="center")))
    frames = load_frames([p[0] for p in batch["paths"]], 24)
    assert frames.shape == (4, 3, 24, 24) and frames.dtype == torch.float32
    torch.testing.assert_close(frames, batch["target"], atol=0, rtol=0)
    with pytest.raises(ValueError, match="fixed crop"):
        load_frames(batch["paths"][0], 24, crop="random")


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("batch_size", 0, "batch_size must be an integer >= 1, got 0"),
        ("num_sources", 0, "num_sources must be an integer >= 1, got 0"),
        ("size", 4, "size must be an integer >= 8, got 4"),
        ("backend", "opencv", "backend must be one of"),
        ("shard_id", 2, "shard_id must be in \\[0, num_shards=2\\), got 2"),
        ("crop", "left", "crop must be 'random', 'center', 'full' or a fraction"),
        ("split", "dev", "split must be one of"),
        ("device", "meta", "device must be 'cpu' or 'cuda\\[:i\\]', got 'meta'"),
    ],
)
def test_bad_arguments(synth_root, name, value, match):
    kw = dict(split="train", batch_size=2, num_sources=1, size=16, backend="pil", num_shards=2)
    kw[name] = value
    with pytest.raises(ValueError, match=match):
        make_loader(synth_root, **kw)


# --- DALI against PIL --------------------------------------------------------------------------


def _pair(root, **kw):
    out = {}
    for backend in ("pil", "dali"):
        loader = _loader(root, backend=backend, num_threads=1, **kw)
        out[backend] = list(loader)
    return out["pil"], out["dali"]


@requires_dali
@pytest.mark.parametrize(
    ("size", "crop", "mean_tol", "max_tol"),
    [
        # Tolerances are about twice the differences measured (mean, max): upscaling a 67 px crop
        # to 80 px, both decode the same JPEG and resample linearly (0.0007, 1/255: rounding only).
        (80, "center", 0.002, 2.5 / 255),
        (80, "random", 0.002, 2.5 / 255),
        # Downscaling 67 px to 24 px: one antialiased resampling in both, different filters (0.004, 0.055).
        (24, "random", 0.01, 0.12),
        # The whole 96 px frame to 24 px: Pillow decodes at 1/2 scale in the DCT first (0.0075, 0.2).
        (24, "full", 0.015, 0.4),
    ],
)
def test_dali_and_pil_agree(wide_root, size, crop, mean_tol, max_tol):
    pil, dali = _pair(wide_root, batch_size=3, num_sources=2, size=size, crop=crop, shuffle=crop == "random")
    assert len(pil) == len(dali) >= 2
    for p, d in zip(pil, dali):
        n = len(p["paths"])  # the last batch of an evaluation epoch may be partial
        assert d["target"].shape == p["target"].shape == (n, 3, size, size)
        assert d["sources"].shape == p["sources"].shape == (n, 2, 3, size, size)
        assert d["target"].dtype == d["sources"].dtype == torch.float32 and d["target"].device.type == "cpu"
        for t in (d["target"], d["sources"]):
            assert t.min() >= 0 and t.max() <= 1 and t.max() > 0.5, "float RGB in [0, 1], not [0, 255]"
        assert d["identity"] == p["identity"] and d["paths"] == p["paths"]
        torch.testing.assert_close(d["box"], p["box"])
        frames_d = torch.cat([d["target"][:, None], d["sources"]], 1)
        frames_p = torch.cat([p["target"][:, None], p["sources"]], 1)
        diff = (frames_d - frames_p).abs()
        assert diff.mean() < mean_tol and diff.max() < max_tol, (diff.mean().item(), diff.max().item())
    # The tolerance is tight enough to catch a wrong crop: DALI's frames against PIL's of the
    # next sample (another frame, another box) differ by far more.
    d, p = dali[0]["sources"], pil[0]["sources"].roll(1, 0)
    assert (d - p).abs().mean() > 3 * mean_tol


@requires_dali
def test_dali_crop_is_not_transposed(wide_root):
    """Tall and wide boxes expose an x / y swap of the ROI, which square centred crops hide."""
    from fabnet.data import dali_backend
    from fabnet.data.sampling import Sample

    loader = _loader(wide_root, batch_size=2, num_sources=1, size=32)
    track = loader.tracks[0]
    boxes = [(4, 30, 40, 66), (50, 2, 86, 38)]  # off-centre, different in x and y
    batch = [Sample((track[0], track[1]), box) for box in boxes]
    runner = dali_backend.DaliRunner(2, 2, 32, num_threads=1, device=torch.device("cpu"), seed=0)
    got = next(iter(runner.epoch([batch])))
    for b, box in enumerate(boxes):
        expected = torch.from_numpy(_crop(track[0].path, box, 32)).permute(2, 0, 1).float() / 255
        assert (got["target"][b] - expected).abs().mean() < 0.01
        swapped = torch.from_numpy(_crop(track[0].path, (box[1], box[0], box[3], box[2]), 32))
        assert (got["target"][b] - swapped.permute(2, 0, 1).float() / 255).abs().mean() > 0.03


@requires_dali
@pytest.mark.parametrize("size", [80, 24, 9])
def test_dali_slice_decode_equals_full_decode(wide_root, size):
    """Decoding only the box plus its margin gives the pixels of a whole-frame decode."""
    from fabnet.data import dali_backend

    loader = _loader(wide_root, batch_size=4, num_sources=2, size=size, crop="random", shuffle=True)
    batches = loader.plan(0)
    out = {}
    for slice_decode in (True, False):
        runner = dali_backend.DaliRunner(
            3, 4, size, num_threads=1, device=torch.device("cpu"), seed=0, slice_decode=slice_decode
        )
        out[slice_decode] = list(runner.epoch(batches))
    assert len(out[True]) == len(out[False]) == len(batches)
    for a, b in zip(out[True], out[False]):
        for key in ("target", "sources"):
            assert (a[key] - b[key]).abs().max() <= 1.01 / 255, key  # libjpeg's chroma upsampling at the cut


@requires_dali
def test_dali_epochs_follow_the_plan(synth_root):
    loader = _loader(synth_root, split="train", backend="dali", batch_size=4, num_threads=1, size=16)
    for epoch in range(3):  # a finished epoch reuses the pipeline; each follows its own plan
        plan = loader.plan(epoch)
        got = [b["paths"] for b in loader]
        assert got == [[[r.path for r in s.frames] for s in batch] for batch in plan]
    # An epoch left early does not leak its prefetched batches into the next one.
    it = iter(loader)
    next(it)
    plan = loader.plan(loader.epoch)
    assert [b["paths"] for b in loader][0] == [[r.path for r in s.frames] for s in plan[0]]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised on a machine without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error(synth_root):
    with pytest.raises(ValueError, match="torch.cuda.is_available\\(\\) is False; pass device='cpu'"):
        make_loader(synth_root, split="train", batch_size=2, num_sources=1, size=16, device="cuda")


def test_auto_backend_picks_an_installed_one(synth_root):
    from fabnet.data import dali_backend

    loader = _loader(synth_root, backend="auto")
    assert loader.backend == ("dali" if dali_backend.available() else "pil")
    assert np.isfinite(next(iter(loader))["target"].numpy()).all()
