"""TensorBoard event files beside metrics.jsonl, read back with tensorboard's own event reader."""

import os

import pytest
import torch

from fabnet.cli import main
from fabnet.train import train
from fabnet.train.tensorboard import sample_panel
from tests.train.runs import read_metrics, small_args, small_config

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _events(run):
    everything = {"scalars": 0, "images": 0}
    acc = event_accumulator.EventAccumulator(os.path.join(run, "tensorboard"), size_guidance=everything)
    acc.Reload()
    return acc


def test_scalars_and_panels_match_the_run(synth_root, tmp_path):
    run = str(tmp_path / "run")
    train(small_config(synth_root, run, tensorboard=True, figures=True, figure_every=2, steps=6))
    acc = _events(run)
    records = read_metrics(run)
    scalars = [("train", "loss", "train/loss_window"), ("train", "lr", "train/lr"), ("val", "val_loss", "val/loss")]
    for kind, key, tag in scalars:
        expected = [(m["step"], m[key]) for m in records if m["kind"] == kind]
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in expected] and len(got) > 0, tag
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6), tag
    lows = [e.value for e in acc.Scalars("curriculum/window_low")]
    assert lows == pytest.approx([m["window"][0] for m in records if m["kind"] == "train"])
    # a panel at each figure step (2, 4, 6; the end adds one at 6): 4 samples of 32 px, K = 2 -> 4 columns
    images = acc.Images("samples")
    assert sorted(set(i.step for i in images)) == [2, 4, 6]
    assert (images[0].width, images[0].height) == (4 * 32, 4 * 32)


def test_resumed_run_has_one_event_per_step(synth_root, tmp_path):
    run = str(tmp_path / "run")
    train(small_config(synth_root, run, tensorboard=True, stop_after=3))
    train(small_config(synth_root, run, tensorboard=True, resume=True))
    steps = [e.step for e in _events(run).Scalars("train/loss_window")]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_no_tensorboard_flag_writes_none(synth_root, tmp_path):
    run = str(tmp_path / "run")
    argv = [a for a in small_args(synth_root, run, "--steps", "1") if a != "--no-tensorboard"]
    assert main(argv + ["--no-tensorboard"]) == 0
    assert not os.path.exists(os.path.join(run, "tensorboard"))
    assert main([*argv[:4], str(tmp_path / "on"), *argv[5:]]) == 0
    assert os.listdir(tmp_path / "on" / "tensorboard")


def test_sample_panel_layout():
    b, k, s = 2, 3, 4
    target = torch.full((b, 3, s, s), 0.1)
    sources = torch.stack([torch.full((b, 3, s, s), 0.2 + 0.1 * j) for j in range(k)], 1)
    generated = torch.full((b, 3, s, s), 0.9)
    panel = sample_panel(target, sources, generated)
    assert panel.shape == (3, b * s, (k + 2) * s)
    columns = panel[0, 0, ::s].tolist()
    assert columns == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.9])
    target[1] = 0.7
    assert sample_panel(target, sources, generated)[0, s, 0] == pytest.approx(0.7)
