"""The synthetic data's own geometry: the light setting, synth.json, frames rendered again,
point correspondences between frames, and the oracle warp budget (fabnet.data.budget)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from fabnet.data.budget import oracle_budget, oracle_grid, oracle_markdown
from fabnet.data.face import sample_identity
from fabnet.data.render import corresponding_points, head_rotation, project_landmarks, render_frame
from fabnet.data.synth import GENERATOR, META_FILE, read_meta, render_again, sample_track


@pytest.mark.parametrize("mode", ["head", "camera"])
def test_light_modes_fix_the_light_in_head_or_camera_axes(mode):
    track = sample_track(np.random.default_rng(3), 12, mode)
    states = [f.state for f in track]
    if mode == "camera":
        lights = [s.light for s in states]
    else:  # in head-local axes the light is the same in every frame
        lights = [head_rotation(s.yaw, s.pitch, s.roll).T @ s.light for s in states]
    for light in lights[1:]:
        np.testing.assert_allclose(light, lights[0], atol=1e-12)
    # The two settings draw the same track otherwise.
    other = sample_track(np.random.default_rng(3), 12, "camera" if mode == "head" else "head")
    assert [f.state.yaw for f in other] == [s.yaw for s in states]
    with pytest.raises(ValueError, match="light_mode must be one of"):
        sample_track(np.random.default_rng(3), 4, "sun")


def test_synth_json_lets_any_frame_render_again(synth_root):
    from fabnet.data.index import load_index

    meta = read_meta(synth_root)
    assert meta["generator"] == GENERATOR and meta["light"] == "head" and meta["size"] == 48
    rec = load_index(synth_root)[13]
    ident, st = render_again(meta, rec.identity, rec.video, rec.frame)
    np.testing.assert_allclose(project_landmarks(ident, st, meta["size"]), rec.landmarks, atol=1e-4)
    from PIL import Image

    with Image.open(rec.path) as im:
        stored = np.asarray(im.convert("RGB"), np.float64)
    again = render_frame(ident, st, meta["size"]).astype(np.float64)
    _, st_next = render_again(meta, rec.identity, rec.video, rec.frame + 1)
    neighbour = render_frame(ident, st_next, meta["size"]).astype(np.float64)
    # The same frame up to JPEG's loss (chroma subsampled at 48 px: ~3 levels of 255), far
    # closer than the next frame of the track.
    assert np.abs(stored - again).mean() < 5.0
    assert np.abs(stored - again).mean() < 0.5 * np.abs(stored - neighbour).mean()


def test_read_meta_names_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="has no synth.json"):
        read_meta(str(tmp_path))
    (tmp_path / META_FILE).write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_meta(str(tmp_path))
    (tmp_path / META_FILE).write_text(json.dumps({"generator": "fabnet-synth-1"}))
    with pytest.raises(ValueError, match="generator 'fabnet-synth-1'"):
        read_meta(str(tmp_path))


def _states(yaw_a, yaw_b):
    track = sample_track(np.random.default_rng(0), 2)
    a, b = track[0].state, track[1].state
    import dataclasses

    a = dataclasses.replace(a, yaw=yaw_a, pitch=0.0, roll=0.0, body_yaw=0.0)
    b = dataclasses.replace(a, yaw=yaw_b)  # the same frame but for the head's yaw
    return a, b


def test_corresponding_points_follow_the_landmarks():
    ident = sample_identity(np.random.default_rng(1))
    a, b = _states(0.0, 12.0)
    size = 128
    lm_a, lm_b = project_landmarks(ident, a, size), project_landmarks(ident, b, size)
    moved = corresponding_points(ident, a, b, size, lm_a)
    # Landmarks lie on (or within a hair of) the painted surface, so the ray through a landmark
    # in frame a hits next to it and lands next to the landmark in frame b: the yaw moves them
    # by several pixels, the correspondence by less than one.
    assert np.abs(lm_b - lm_a).max() > 5
    assert np.median(np.linalg.norm(moved - lm_b, axis=1)) < 1.0
    # The same frame maps every point to itself, background included.
    xy = np.random.default_rng(2).uniform(0, size, (500, 2))
    np.testing.assert_allclose(corresponding_points(ident, a, a, size, xy), xy, atol=1e-9)


def test_oracle_grid_is_the_identity_for_the_same_frame(synth_root):
    from fabnet.data.index import load_index
    from fabnet.data.sampling import crop_box

    meta = read_meta(synth_root)
    rec = load_index(synth_root)[0]
    grid = oracle_grid(meta, rec, rec, crop_box(48, 48, "center"), 16)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    np.testing.assert_allclose(grid, np.stack([xs.numpy(), ys.numpy()]), atol=1e-6)


def _checkpoint(path, sources: int) -> str:
    from fabnet.model import FabNet
    from fabnet.model.checkpoint import FORMAT, save_checkpoint

    model = FabNet(32, sources, width=8)
    return save_checkpoint(dict(format=FORMAT, model=model.state_dict(), model_config=model.config()), str(path))


def test_oracle_budget_beats_not_warping_and_scores_a_checkpoint(synth_root, tmp_path):
    o = oracle_budget(synth_root, size=32, pairs=12, split=None, bootstrap=50)
    assert 0 < o["oracle_l1"] < 0.8 * o["no_warp_l1"] and o["learned_l1"] is None
    torch.manual_seed(0)
    path = _checkpoint(tmp_path / "m.pt", 1)
    o = oracle_budget(synth_root, size=32, pairs=12, split=None, checkpoint=[path, path], bootstrap=50)
    # An untrained model barely moves from the identity: about none of the oracle's gain.
    assert abs(o["share"]) < 0.1 and o["share_each"] == [pytest.approx(o["share"])] * 2
    lo, hi = o["share_ci95"]
    assert lo <= o["share"] <= hi
    assert "learned warp" in oracle_markdown(o)


def test_oracle_budget_refuses_other_roots_and_models(synth_root, tmp_path):
    with pytest.raises(ValueError, match="has no synth.json"):
        oracle_budget(str(tmp_path), pairs=4)
    path = _checkpoint(tmp_path / "k3.pt", 3)
    with pytest.raises(ValueError, match="1-source model at size 32"):
        oracle_budget(synth_root, size=32, pairs=4, split=None, checkpoint=path)


def test_command_line_prints_the_oracle_table(synth_root, capsys):
    from fabnet.data.budget import main

    assert main(["--oracle", synth_root, "--pairs", "6", "--size", "16", "--split", "all"]) == 0
    out = capsys.readouterr().out
    assert "exact-geometry warp (oracle)" in out and "not warping" in out
    assert os.path.exists(os.path.join(synth_root, META_FILE))
