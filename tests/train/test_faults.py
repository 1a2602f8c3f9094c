"""Training faults lose nothing: non-finite steps, cut-off logs, full disks, bad --init files."""

from __future__ import annotations

import json
import os
import zlib

import pytest
import torch

from fabnet.cli import main as fabnet_main
from fabnet.model import load_checkpoint
from tests.train.runs import small_args


def test_non_finite_step_stops_training_and_keeps_the_checkpoint(synth_root, tmp_path, capsys):
    """An update that overflows the weights: the next step's loss is NaN, training stops with
    exit 1 naming that step, and last.pt keeps the last finite weights. (The paper's SGD and
    random init: Adam's step is bounded by the LR per weight, and a zero last conv takes the
    whole first step, saturating the tanh, so the loss stays finite.)"""
    out = str(tmp_path / "run")
    args = ("--steps", "4", "--checkpoint-every", "1", "--val-every", "100", "--lr", "1e30", "--paper")
    rc = fabnet_main(small_args(synth_root, out, *args))
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "fabnet train: error: step " in err and "not finite" in err and "Lower --lr (now 1e+30)" in err
    last = os.path.join(out, "checkpoints", "last.pt")
    if os.path.exists(last):
        state = load_checkpoint(last)
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


_FULL_DISK = """
import resource, signal, sys
# A file-size limit stands in for a full disk: writes past it fail (EFBIG) instead of killing us.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from fabnet.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_disk_full_while_writing_a_checkpoint(synth_root, tmp_path):
    """The write fails: one line naming the file, exit 1, the last good checkpoint kept intact."""
    import subprocess
    import sys

    from tests.train.runs import REPO, child_env

    out = str(tmp_path / "run")
    assert fabnet_main(small_args(synth_root, out, "--steps", "2", "--val-every", "100", "--width", "8")) == 0
    last = os.path.join(out, "checkpoints", "last.pt")
    before = load_checkpoint(last)
    size = os.path.getsize(last)
    args = small_args(synth_root, out, "--steps", "4", "--val-every", "100", "--width", "8", "--resume")
    # Room for the logs, not for another checkpoint of that size.
    proc = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(size // 2), *args],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "fabnet train: error: no space left on device writing " + last in proc.stderr
    assert "Traceback" not in proc.stderr
    after = load_checkpoint(last)
    assert after["step"] == before["step"] == 2
    assert not [n for n in os.listdir(os.path.dirname(last)) if n.startswith(".tmp-")]


def test_cut_off_metrics_line_does_not_block_resume(synth_root, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert fabnet_main(small_args(synth_root, out, "--steps", "2", "--val-every", "100", "--width", "8")) == 0
    metrics = os.path.join(out, "metrics.jsonl")
    with open(metrics, "a") as f:
        f.write('{"kind": "train", "st')  # the power went here
    with pytest.warns(UserWarning, match=r"metrics.jsonl: dropped 1 unreadable line"):
        rc = fabnet_main(small_args(synth_root, out, "--steps", "4", "--val-every", "100", "--width", "8", "--resume"))
    assert rc == 0, capsys.readouterr().err
    with open(metrics) as f:
        records = [json.loads(line) for line in f]
    assert records[-1]["kind"] == "end" and records[-1]["step"] == 4


def test_unwritable_out_is_refused_before_work(synth_root, tmp_path):
    from fabnet.train import train
    from tests.train.runs import small_config

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"--out '.*file/run' is not writable \(Not a directory\)"):
        train(small_config(synth_root, str(blocker / "run")))


def test_frames_breaking_mid_run_checkpoint_then_stop(synth_root, tmp_path, monkeypatch, capsys):
    """Past 5 % unreadable samples in an epoch the run writes last.pt and exits 1, naming files."""
    from fabnet.data import pil_backend

    real = pil_backend.read_crop
    calls = {"n": 0}

    def failing_after_a_while(path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 40 and zlib.crc32(path.encode()) % 3 == 0:  # a third of the files go bad mid-run
            raise OSError(f"[Errno 5] Input/output error: {path!r}")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pil_backend, "read_crop", failing_after_a_while)
    out = str(tmp_path / "run")
    with pytest.warns(UserWarning, match="skipping unreadable frame"):
        rc = fabnet_main(small_args(synth_root, out, "--steps", "50", "--val-every", "100", "--width", "8"))
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "samples had unreadable frames, more than 5%" in err and "continue with --resume" in err
    state = load_checkpoint(os.path.join(out, "checkpoints", "last.pt"))
    assert 0 < state["step"] < 50
