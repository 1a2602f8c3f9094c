"""Training faults lose nothing: non-finite steps, cut-off logs, full disks, bad --init files."""

from __future__ import annotations

import os

import torch

from fabnet.cli import main as fabnet_main
from fabnet.model import load_checkpoint
from tests.train.test_train import small_args


def test_non_finite_step_stops_training_and_keeps_the_checkpoint(synth_root, tmp_path, capsys):
    """An update that overflows the weights: the next step's loss is NaN, training stops with
    exit 1 naming that step, and last.pt keeps the last finite weights."""
    out = str(tmp_path / "run")
    rc = fabnet_main(small_args(synth_root, out, "--steps", "4", "--checkpoint-every", "1",
                                "--val-every", "100", "--lr", "1e30"))
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "fabnet train: error: step " in err and "not finite" in err and "Lower --lr (now 1e+30)" in err
    last = os.path.join(out, "checkpoints", "last.pt")
    if os.path.exists(last):
        state = load_checkpoint(last)
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
