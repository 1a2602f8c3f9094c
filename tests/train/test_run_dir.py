"""A run directory under real mistakes: a second run on it, a run already there, an earlier
checkpoint resumed, other options on resume, a loader worker killed, memory running out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fabnet.cli import main as fabnet_main
from fabnet.model import load_checkpoint
from tests.train.runs import REPO, child_env, read_metrics, small_args, spawn, wait_for

QUICK = ("--steps", "2", "--val-every", "100", "--width", "8")


def _train(root, out, *extra):
    return fabnet_main(small_args(root, out, *QUICK, *extra))


def _long_run(root, run, *, checkpoint_every: int):
    """A child `fabnet train` of 400 steps that logs every step: the run another process meets."""
    every = ("--checkpoint-every", str(checkpoint_every), "--log-every", "1")
    return spawn(small_args(root, run, "--steps", "400", "--val-every", "1000", "--width", "8", *every))


def test_a_second_run_on_the_same_out_is_refused_naming_the_holder(synth_root, tmp_path):
    """Item 1: the first run holds RUN/.lock; the second exits 2 naming the first's pid, and the
    first finishes with its own metrics and checkpoints, untouched."""
    run = str(tmp_path / "run")
    first = _long_run(synth_root, run, checkpoint_every=1000)
    try:
        wait_for(lambda: any(m["kind"] == "train" for m in read_metrics(run)), proc=first)
        second = subprocess.run(
            [sys.executable, "-m", "fabnet", *small_args(synth_root, run, *QUICK, "--resume")],
            cwd=REPO,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr
        assert f"is in use by another run (pid {first.pid}, started " in second.stderr
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM
    steps = [m["step"] for m in read_metrics(run) if m["kind"] == "train"]
    assert steps == list(range(1, len(steps) + 1))  # one run's records, none interleaved


def test_the_lock_dies_with_its_process(synth_root, tmp_path):
    """kill -9 of the holder frees the directory at once: no stale lock to clear by hand."""
    run = str(tmp_path / "run")
    holder = _long_run(synth_root, run, checkpoint_every=1)
    wait_for(lambda: os.path.exists(os.path.join(run, "checkpoints", "last.pt")), proc=holder)
    holder.kill()
    holder.communicate()
    assert _train(synth_root, run, "--resume") == 0


def test_an_existing_run_is_not_replaced_without_overwrite(synth_root, tmp_path, capsys):
    """Item 2: the same --out again without --resume is refused and leaves every file as it was;
    --overwrite starts afresh."""
    run = str(tmp_path / "run")
    assert _train(synth_root, run) == 0
    files = {name: os.path.getmtime(os.path.join(run, name)) for name in ("metrics.jsonl", "checkpoints/last.pt")}
    capsys.readouterr()
    assert _train(synth_root, run) == 2
    err = capsys.readouterr().err
    assert (
        "already holds a run (metrics.jsonl / checkpoints); continue it with --resume, replace it with "
        "--overwrite" in err
    )
    assert files == {name: os.path.getmtime(os.path.join(run, name)) for name in files}
    assert _train(synth_root, run, "--overwrite", "--steps", "1") == 0
    assert load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))["step"] == 1
    assert [m["step"] for m in read_metrics(run) if m["kind"] == "train"] == [1]


def test_resuming_an_earlier_checkpoint_needs_consent_or_a_new_directory(synth_root, tmp_path, capsys):
    """Item 3: --resume of a checkpoint behind last.pt would drop steps; refused, naming them.
    --overwrite rewinds; another --out branches and keeps the original run whole."""
    run = str(tmp_path / "run")
    assert _train(synth_root, run) == 0
    early = os.path.join(run, "checkpoints", "step2.pt")
    os.replace(os.path.join(run, "checkpoints", "last.pt"), early)
    assert _train(synth_root, run, "--resume", early, "--steps", "4") == 0  # continues to step 4
    capsys.readouterr()
    assert _train(synth_root, run, "--resume", early, "--steps", "5") == 2
    err = capsys.readouterr().err
    assert f"--resume {early!r} is at step 2, but the run" in err and "went on to step 4" in err
    assert "would drop steps 3-4" in err and "--overwrite to rewind" in err
    assert load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))["step"] == 4

    branch = str(tmp_path / "branch")
    assert _train(synth_root, branch, "--resume", early, "--steps", "3") == 0
    assert load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))["step"] == 4  # untouched
    assert load_checkpoint(os.path.join(branch, "checkpoints", "last.pt"))["step"] == 3

    assert _train(synth_root, run, "--resume", early, "--steps", "3", "--overwrite") == 0
    # Logged at the last step of each run: step 4 of the dropped branch is gone.
    assert [m["step"] for m in read_metrics(run) if m["kind"] == "train"] == [2, 3]


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--optimizer", "sgd"), "was trained with --optimizer adam, but this run asks for sgd"),
        (("--paper",), "was trained with --optimizer adam, but this run asks for sgd (--paper sets sgd)"),
        (("--confidence-range", "1"), "was trained with --confidence-range 8, part of its model"),
        (("--momentum", "0.5"), "--momentum 0.5 has no effect on the adam optimiser"),
    ],
    ids=["optimizer", "paper", "confidence-range", "momentum"],
)
def test_resume_refuses_options_it_cannot_take(synth_root, tmp_path, capsys, flags, message):
    """Item 5: before, --optimizer sgd over an Adam run was a KeyError: 'momentum' traceback."""
    run = str(tmp_path / "run")
    assert _train(synth_root, run) == 0
    capsys.readouterr()
    assert _train(synth_root, run, "--resume", "--steps", "3", *flags) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_resume_applies_a_new_learning_rate_and_records_it(synth_root, tmp_path):
    """Item 5: --lr on resume is applied to the optimiser, logged, and config.json is true; options
    not given keep the checkpoint's (here --weight-decay, set at the start)."""
    run = str(tmp_path / "run")
    assert _train(synth_root, run, "--weight-decay", "0.001") == 0
    assert _train(synth_root, run, "--resume", "--steps", "3", "--lr", "1e-5") == 0
    resumed = [m for m in read_metrics(run) if m["kind"] == "resume"]
    assert resumed[0]["changed"] == {"lr": [0.01, 1e-05]} and resumed[0]["lr"] == 1e-05
    with open(os.path.join(run, "config.json")) as f:
        config = json.load(f)
    assert config["lr"] == 1e-05 and config["weight_decay"] == 0.001
    state = load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))
    assert state["optimizer"]["param_groups"][0]["lr"] == 1e-05
    assert state["optimizer"]["param_groups"][0]["weight_decay"] == 0.001


def test_demo_never_continues_a_run_made_with_other_settings(synth_root, tmp_path, capsys):
    """Item 4: the demo's stage runs carry their settings; a run made otherwise (``--quick``
    then the full demo) is trained afresh, said in one line, never resumed."""
    from fabnet.demo.config import DemoConfig
    from fabnet.demo.runs import train_fabnet

    run = str(tmp_path / "runs" / "fabnet_1src")
    quick = DemoConfig(size=32, val_every=100, val_batches=1)
    options = dict(num_sources=1, batch=4, curriculum=False, init=None, patience=2, progress=False)
    first = train_fabnet(quick, synth_root, run, steps=2, **options)
    assert first.step == 2
    again = train_fabnet(quick, synth_root, run, steps=2, **options)
    assert "reusing the finished run" in capsys.readouterr().out and again.step == 2
    other = DemoConfig(size=32, val_every=100, val_batches=1, lr=1e-3)
    result = train_fabnet(other, synth_root, run, steps=3, **options)
    out = capsys.readouterr().out
    assert "holds a run made with other settings (lr, steps): training it afresh" in out
    assert result.step == 3
    records = read_metrics(run)
    assert not [m for m in records if m["kind"] == "resume"]
    assert [m["step"] for m in records if m["kind"] == "end"] == [3]  # the earlier run's records are gone


_KILL_WORKER = r"""
import os, signal, sys, threading, time
from fabnet.cli import main

def kill_workers():
    # Once training runs, kill the loader's worker processes as the OOM killer does (again and
    # again: the tiny epochs start new workers, and a worker killed after its last batch is
    # never missed).
    me = os.getpid()
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.1)
    while True:
        with open(f"/proc/{me}/task/{me}/children") as f:
            for pid in f.read().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.2)

threading.Thread(target=kill_workers, daemon=True).start()
sys.exit(main(sys.argv[2:]))
"""


def test_a_killed_loader_worker_saves_then_stops_with_one_line(synth_root, tmp_path):
    """Item 7: the main process is alive, so the steps done are saved; exit 1, one line."""
    run = str(tmp_path / "run")
    marker = os.path.join(run, "metrics.jsonl")  # training has started once it exists
    args = small_args(
        synth_root,
        run,
        "--steps",
        "100000",
        "--val-every",
        "100000",
        "--width",
        "8",
        "--num-workers",
        "1",
        "--checkpoint-every",
        "100000",
        "--log-every",
        "1",
    )
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_WORKER, marker, *args],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "a data-loading worker died (DataLoader worker (pid" in err[0] and "Lower --num-workers (now 1)" in err[0]
    assert "written at step" in err[0] or "mid-update" in err[0]
    if "written at step" in err[0]:
        state = load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))
        assert f"written at step {state['step']}" in err[0]  # every step done is saved


_MEMORY_LIMIT = r"""
import resource, sys
import torch  # noqa: F401  (its libraries are mapped before the limit)
from fabnet.cli import main
import fabnet.train.loop, fabnet.data.pil_backend, fabnet.model  # noqa: F401
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
limit = vm + int(sys.argv[1])  # room for a few small steps, not for a 192-px batch of 64
resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
sys.exit(main(sys.argv[2:]))
"""


def test_out_of_memory_is_one_line_naming_the_options(synth_root, tmp_path):
    """Item 8: a memory limit in a child process; the allocation that fails is named with the
    options that set the size, exit 1, the checkpoint of the first run kept."""
    run = str(tmp_path / "run")
    big = ("--val-every", "100", "--width", "8")
    first = small_args(synth_root, run, "--steps", "1", *big)
    first[first.index("--size") + 1] = "128"
    assert fabnet_main(first) == 0
    before = load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))["step"]
    args = small_args(synth_root, run, "--steps", "4", "--resume", "--batch-size", "64", "--epoch-length", "64", *big)
    args[args.index("--size") + 1] = "128"
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_LIMIT, str(320 * 2**20), *args],
        cwd=REPO,
        env={**child_env(), "PYTHONWARNINGS": "ignore"},  # the resume's note on the changed batch size
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "out of memory on cpu" in err[0] and "lower --batch-size (now 64), --size (128) or --width (8)" in err[0]
    assert "the last checkpoint" in err[0] and "is kept" in err[0]
    assert load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))["step"] == before


def test_an_optimizer_state_that_does_not_fit_is_named(synth_root, tmp_path, capsys):
    """Item 9 (resume): an edited optimiser state loads into torch without complaint and fails at
    the first step far from the file; it is refused up front."""
    from fabnet.model import save_checkpoint

    run = str(tmp_path / "run")
    assert _train(synth_root, run) == 0
    last = os.path.join(run, "checkpoints", "last.pt")
    state = load_checkpoint(last)
    first = next(iter(state["optimizer"]["state"]))
    state["optimizer"]["state"][first]["exp_avg"] = torch.zeros(3)
    save_checkpoint(state, last)
    capsys.readouterr()
    assert _train(synth_root, run, "--resume", "--steps", "3") == 2
    assert "its optimizer state does not fit the model (exp_avg of shape (3,)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.update(step=-1), "its 'step' must be an integer >= 0, got -1"),
        (lambda s: s.update(epoch="3"), "its 'epoch' must be an integer >= 0, got '3'"),
        (lambda s: s.update(rng={"torch": torch.zeros(3)}), "its random-generator state is malformed"),
        (lambda s: s["scheduler"].update(best="x") or s.update(scheduler=[1]), "its scheduler state does not fit"),
    ],
    ids=["step", "epoch", "rng", "scheduler"],
)
def test_malformed_resume_state_is_one_line(synth_root, tmp_path, capsys, edit, message):
    from fabnet.model import save_checkpoint

    run = str(tmp_path / "run")
    assert _train(synth_root, run) == 0
    last = os.path.join(run, "checkpoints", "last.pt")
    state = load_checkpoint(last)
    edit(state)
    save_checkpoint(state, last)
    capsys.readouterr()
    assert _train(synth_root, run, "--resume", "--steps", "3") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("WORLD_SIZE", "abc", "environment variable WORLD_SIZE='abc': expected an integer >= 1"),
        ("LOCAL_WORLD_SIZE", "0", "environment variable LOCAL_WORLD_SIZE='0': expected an integer >= 1"),
        ("RANK", "5", "environment variable RANK='5': expected an integer in [0, 0]"),
    ],
)
def test_torchrun_variables_are_checked_by_name(synth_root, tmp_path, monkeypatch, capsys, variable, value, message):
    """Item 17: before, WORLD_SIZE=abc named no variable and LOCAL_WORLD_SIZE=0 divided by zero."""
    monkeypatch.setenv(variable, value)
    assert _train(synth_root, str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_fewer_than_three_identities_names_the_missing_split(tmp_path, capsys):
    """Item 16: two identities give no val split; the error says so instead of blaming --sources."""
    from fabnet.data.synth import synthesize

    root = str(tmp_path / "two")
    synthesize(root, identities=2, tracks_per_identity=1, frames_per_track=4, size=48, progress=False, previews=False)
    assert _train(root, str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "has no val frames: its 2 identities are split by identity 75/15/10" in err and "--sources" not in err


def test_run_directory_lock_is_released_after_an_error(synth_root, tmp_path):
    """A refused run (bad option) must not leave the directory locked for the next one."""
    run = str(tmp_path / "run")
    assert _train(synth_root, run) == 0
    assert _train(synth_root, run, "--resume", "--optimizer", "sgd") == 2
    started = time.time()
    assert _train(synth_root, run, "--resume", "--steps", "3") == 0
    assert time.time() - started < 60
