"""Stopping and continuing a run: an identical resumed state, kill -9, SIGTERM."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fabnet.model import load_checkpoint
from fabnet.train import train
from tests.train.runs import REPO, child_env, read_metrics, small_args, small_config, spawn, wait_for


def test_resume_gives_identical_state(synth_root, tmp_path):
    """6 steps straight == 4 steps, stop (checkpoint), resume to 6: weights, optimiser, curriculum.

    An epoch is 12 samples = 3 batches, so the stop falls one batch into the second epoch and the
    resumed run must skip exactly that batch of the epoch's plan."""
    full = train(small_config(synth_root, str(tmp_path / "full"), epoch_length=12, figures=True, val_at_start=True))
    assert not full.interrupted and full.step == 6
    part = train(small_config(synth_root, str(tmp_path / "part"), epoch_length=12, stop_after=4))
    assert part.interrupted and part.step == 4 and part.stop_reason == "stop_after"
    stopped = load_checkpoint(part.checkpoint)
    assert (stopped["step"], stopped["epoch"], stopped["batch_in_epoch"]) == (4, 1, 1)
    resumed = train(small_config(synth_root, str(tmp_path / "part"), epoch_length=12, resume=True))
    assert resumed.step == 6
    restored = [m for m in resumed.metrics if m["kind"] == "resume"]
    assert len(restored) == 1 and restored[0]["curriculum"] == stopped["curriculum"]
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert (a["epoch"], a["batch_in_epoch"]) == (1, 3)
    assert (a["step"], a["epoch"], a["batch_in_epoch"]) == (b["step"], b["epoch"], b["batch_in_epoch"])
    assert a["curriculum"] == b["curriculum"]
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert len(a["optimizer"]["state"]) == len(b["optimizer"]["state"]) > 0
    for va, vb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert va.keys() == vb.keys()  # Adam: step, exp_avg, exp_avg_sq; SGD: momentum_buffer
        for key in va:
            torch.testing.assert_close(vb[key], va[key], rtol=1e-4, atol=1e-6, msg=key)
    steps = [m["step"] for m in read_metrics(str(tmp_path / "part")) if m["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]  # no step lost or repeated in the log
    # the same losses step by step: the resumed run read the batches the full run read
    loss_full = [m["loss_batch"] for m in full.metrics if m["kind"] == "train"]
    loss_resumed = [m["loss_batch"] for m in read_metrics(str(tmp_path / "part")) if m["kind"] == "train"]
    assert loss_resumed == pytest.approx(loss_full, rel=1e-5)
    val = [m for m in full.metrics if m["kind"] == "val"]
    assert [m["step"] for m in val] == [0, 2, 4, 6] and val[0]["initial"]
    # The identity initialisation starts at exactly the no-warp loss; training moves off it.
    assert 0 < val[0]["zero_flow_loss"] < 1 and val[0]["zero_flow_loss"] == pytest.approx(val[0]["val_loss"])
    assert val[-1]["val_loss"] != pytest.approx(val[0]["val_loss"], rel=1e-6)
    assert all("window" in m and "bad_rounds" in m for m in val)
    figs = os.listdir(tmp_path / "full" / "figures")
    assert "loss.png" in figs and "samples_final.png" in figs


def test_kill9_then_resume(synth_root, tmp_path):
    run = str(tmp_path / "run")
    args = small_args(
        synth_root,
        run,
        "--steps",
        "200",
        "--checkpoint-every",
        "2",
        "--log-every",
        "1",
        "--val-every",
        "2",
        "--val-batches",
        "1",
        "--curriculum",
        "--patience",
        "1",
    )
    proc = spawn(args)
    ckpt = os.path.join(run, "checkpoints", "last.pt")
    # metrics.jsonl is cheap to poll (a checkpoint is tens of MB); step 5 logged means the step-4
    # checkpoint was written before it
    wait_for(lambda: any(m["kind"] == "train" and m["step"] >= 5 for m in read_metrics(run)), proc=proc)
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    before = load_checkpoint(ckpt)
    s = before["step"]
    last_logged = max(m["step"] for m in read_metrics(run) if m["kind"] == "train")
    assert last_logged - 2 <= s <= last_logged  # lost at most the steps since the last checkpoint
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fabnet",
            *small_args(
                synth_root,
                run,
                "--steps",
                str(s + 3),
                "--checkpoint-every",
                "2",
                "--log-every",
                "1",
                "--val-every",
                "2",
                "--val-batches",
                "1",
                "--curriculum",
                "--patience",
                "1",
                "--resume",
            ),
        ],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    after = load_checkpoint(ckpt)
    assert after["step"] == s + 3
    # the resumed process started from exactly the checkpoint's curriculum, step and data position
    restored = [m for m in read_metrics(run) if m["kind"] == "resume"]
    assert len(restored) == 1
    assert restored[0]["curriculum"] == before["curriculum"]
    assert (restored[0]["step"], restored[0]["epoch"], restored[0]["batch_in_epoch"]) == (
        s,
        before["epoch"],
        before["batch_in_epoch"],
    )
    assert restored[0]["rng_restored"]
    # and went on from it: shifts made before the kill are kept
    assert after["curriculum"]["shifts"][: len(before["curriculum"]["shifts"])] == before["curriculum"]["shifts"]
    train_steps = [m["step"] for m in read_metrics(run) if m["kind"] == "train"]
    assert train_steps == list(range(1, s + 4))  # records after the checkpoint were dropped, then redone


def test_sigterm_leaves_fresh_checkpoint(synth_root, tmp_path):
    run = str(tmp_path / "run")
    proc = spawn(
        small_args(
            synth_root,
            run,
            "--steps",
            "500",
            "--checkpoint-every",
            "1000",
            "--log-every",
            "1",
            "--val-every",
            "1000",
            "--curriculum",
            progress=True,
        )
    )
    wait_for(lambda: any(m["kind"] == "train" and m["step"] >= 2 for m in read_metrics(run)), proc=proc)
    t_signal = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "--resume" in err
    # the progress bar (stderr) shows the loss, the curriculum window and the throughput
    assert "loss=" in err and "window=0.0-0.5" in err and "/s" in err
    ckpt = os.path.join(run, "checkpoints", "last.pt")
    state = load_checkpoint(ckpt)
    assert os.path.getmtime(ckpt) >= t_signal - 1
    records = read_metrics(run)
    stop = [m for m in records if m["kind"] == "interrupt"]
    assert stop and stop[-1]["reason"] == "SIGTERM" and stop[-1]["step"] == state["step"] >= 2
