"""The training loop end to end on a tiny synthetic set: errors, resume, signals, torchrun."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fabnet.cli import main as fabnet_main
from fabnet.model import FabNet, load_checkpoint, save_checkpoint
from fabnet.model.checkpoint import FORMAT
from fabnet.train import TrainConfig, train
from fabnet.train import distributed as D
from fabnet.train.batches import make_loader
from fabnet.train.curriculum import Curriculum
from fabnet.train.loop import plateau_step

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small_args(root, out, *extra, progress=False):
    """CLI arguments of a seconds-long run: S=32, K=2, batch 4, no workers, no progress bar, no
    figures, no validation before the first step."""
    return [
        "train",
        "--data",
        root,
        "--out",
        out,
        "--size",
        "32",
        "--sources",
        "2",
        "--batch-size",
        "4",
        "--data-backend",
        "pil",
        "--num-workers",
        "0",
        "--device",
        "cpu",
        "--no-figures",
        "--no-initial-val",
        *([] if progress else ["--no-progress"]),
        "--lr",
        "0.01",
        *extra,
    ]


def small_config(root, out, **kw):
    base = dict(
        data=root,
        out=out,
        size=32,
        num_sources=2,
        batch_size=4,
        data_backend="pil",
        num_workers=0,
        device="cpu",
        progress=False,
        figure_every=0,
        figures=False,
        val_at_start=False,
        lr=0.01,
        curriculum=True,
        patience=1,
        val_every=2,
        val_batches=1,
        checkpoint_every=2,
        log_every=1,
        steps=6,
    )
    base.update(kw)
    return TrainConfig(**base)


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # two shared cores: keep child processes from oversubscribing
    return env


def spawn(args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "fabnet", *args],
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def read_metrics(run):
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().endswith("}")]


def wait_for(pred, timeout=90, proc=None):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended early ({proc.returncode}):\n{err[-3000:]}")
        time.sleep(0.2)
    pytest.fail("timed out")


# ---------------------------------------------------------------------------------------------


def _cli_error(capsys, args):
    """Exit code 2 and the message, from argparse (SystemExit) or from the command."""
    try:
        rc = fabnet_main(args)
    except SystemExit as exit_:
        rc = exit_.code
    err = capsys.readouterr().err
    assert rc == 2, err
    return err


def test_bad_inputs(synth_root, tmp_path, capsys):
    out = str(tmp_path / "run")
    err = _cli_error(capsys, small_args(str(tmp_path / "nope"), out))
    assert "--data" in err and "nope" in err and "fabnet synth" in err
    err = _cli_error(capsys, small_args(synth_root, out, "--size", "48"))
    assert "argument --size: expected a power of two in [32, 256], got 48" in err
    err = _cli_error(capsys, small_args(synth_root, out, "--sources", "6"))
    assert "--sources 6 needs tracks of at least 7 frames" in err and "has 6" in err
    # a checkpoint of another configuration
    os.makedirs(os.path.join(out, "checkpoints"))
    m = FabNet(32, 1)
    save_checkpoint(
        dict(format=FORMAT, model_config=m.config(), model=m.state_dict()), os.path.join(out, "checkpoints", "last.pt")
    )
    err = _cli_error(capsys, small_args(synth_root, out, "--sources", "2", "--resume"))
    assert "--sources 1, but --sources is 2" in err
    err = _cli_error(
        capsys,
        small_args(
            synth_root, str(tmp_path / "r2"), "--size", "64", "--init", os.path.join(out, "checkpoints", "last.pt")
        ),
    )
    assert "--init" in err and "--size 32, but --size is 64" in err
    err = _cli_error(capsys, small_args(synth_root, str(tmp_path / "r3"), "--resume"))
    assert "--resume: no checkpoint" in err
    # weights without training state cannot be resumed, only used as --init
    m2 = FabNet(32, 2)
    weights_only = os.path.join(out, "checkpoints", "k2.pt")
    save_checkpoint(dict(format=FORMAT, model_config=m2.config(), model=m2.state_dict()), weights_only)
    err = _cli_error(capsys, small_args(synth_root, out, "--resume", weights_only))
    assert "holds weights only" in err and f"--init {weights_only}" in err
    err = _cli_error(capsys, small_args(synth_root, str(tmp_path / "r4"), "--freeze-flow-decoder"))
    assert "--freeze-flow-decoder needs --init" in err


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


def test_two_process_gloo(synth_root, tmp_path):
    run = str(tmp_path / "ddp")
    args = small_args(
        synth_root, run, "--steps", "3", "--val-every", "3", "--val-batches", "1", "--batch-size", "2", "--curriculum"
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "fabnet",
        *args,
    ]
    done = subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]
    end = [m for m in read_metrics(run) if m["kind"] == "end"]
    assert len(end) == 1  # rank 0 alone writes metrics
    assert end[0]["world_size"] == 2 and end[0]["step"] == 3
    c0, c1 = end[0]["checksums"]
    assert c0 == c1, f"ranks out of sync: parameter digests {c0} vs {c1}"
    # the ranks trained (parameters moved from the seed's initialisation)
    torch.manual_seed(0)
    init = D.parameter_checksums(FabNet(32, 2), D.World())[0]
    assert c0 != init
    assert load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))["world_size"] == 2


def test_two_stages_init_and_frozen_flow_decoder(synth_root, tmp_path):
    """Stage 1 (K=1) then K=2 fine-tuning from it with the flow decoder frozen."""
    k1 = train(small_config(synth_root, str(tmp_path / "k1"), num_sources=1, steps=2, val_every=2))
    s1 = load_checkpoint(k1.checkpoint)
    assert s1["model_config"]["num_sources"] == 1
    assert not any(k.startswith("confidence_decoder.") for k in s1["model"])
    k2 = train(
        small_config(
            synth_root,
            str(tmp_path / "k2"),
            num_sources=2,
            steps=2,
            val_every=2,
            init=k1.checkpoint,
            freeze_flow_decoder=True,
        )
    )
    s2 = load_checkpoint(k2.checkpoint)
    init = [m for m in k2.metrics if m["kind"] == "init"]
    assert init and init[0]["loaded"] == ["encoder", "flow_decoder"] and init[0]["frozen"] == ["flow_decoder"]
    flow = [k for k in s1["model"] if k.startswith("flow_decoder.")]
    assert any("running_mean" in k for k in flow)
    for k in flow:  # weights and BatchNorm statistics untouched
        torch.testing.assert_close(s2["model"][k], s1["model"][k], rtol=0, atol=0, msg=k)
    moved = [
        k
        for k in s1["model"]
        if k.startswith("encoder.") and k.endswith("weight") and not torch.equal(s2["model"][k], s1["model"][k])
    ]
    assert moved, "the encoder did not train in stage 2"
    assert any(k.startswith("confidence_decoder.") for k in s2["model"])
    assert s2["train_config"]["freeze_flow_decoder"] and s2["train_config"]["init"] == k1.checkpoint


class _Opt:
    def __init__(self, lr):
        self.param_groups = [{"lr": lr}]


def test_lr_falls_only_after_the_curriculum_ends():
    """Plateaus shift the window 4 times (0-50% ... 40-90%) at a constant LR; then LR / 10."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=0, threshold=1e-3)
    cur = Curriculum(True, patience=1)
    rounds = [plateau_step(cur, sched, opt, 1.0, step) for step in range(1, 12)]
    shifted = [r["window"] for r in rounds if r["shifted"]]
    assert shifted == [[0.1, 0.6], [0.2, 0.7], [0.3, 0.8], [0.4, 0.9]]
    first_cut = next(i for i, r in enumerate(rounds) if r["lr_reduced"])
    last_shift = max(i for i, r in enumerate(rounds) if r["shifted"])
    assert first_cut > last_shift
    assert all(r["lr"] == 1e-3 for r in rounds[: last_shift + 1])
    assert rounds[first_cut]["lr"] == pytest.approx(1e-4)
    # without a curriculum the schedule acts from the first plateau
    opt2 = torch.optim.SGD([param], lr=1e-3)
    sched2 = torch.optim.lr_scheduler.ReduceLROnPlateau(opt2, factor=0.1, patience=0, threshold=1e-3)
    plain = [plateau_step(Curriculum(False, patience=1), sched2, opt2, 1.0, s) for s in range(3)]
    assert [r["lr_reduced"] for r in plain] == [False, True, True]


def test_ranks_read_disjoint_shards(synth_root, tmp_path):
    cfg = small_config(synth_root, str(tmp_path / "x"), epoch_length=16)
    plans = [make_loader(cfg, "train", D.World(rank=r, size=2), 4).plan(0) for r in range(2)]
    paths = [{s.frames[0].path for batch in plan for s in batch} for plan in plans]
    assert all(len(p) == 8 for p in paths)  # 16 samples, 8 per rank, each target a different track
    assert not paths[0] & paths[1]


def test_adam_option_trains_with_adam(synth_root, tmp_path):
    out = str(tmp_path / "adam")
    train(small_config(synth_root, out, optimizer="adam", lr=1e-3, steps=2, curriculum=False))
    state = load_checkpoint(os.path.join(out, "checkpoints", "last.pt"), "cpu")
    moments = [s for s in state["optimizer"]["state"].values()]
    assert moments and all("exp_avg" in s and "exp_avg_sq" in s for s in moments)
    with pytest.raises(ValueError, match="optimizer must be 'sgd' or 'adam'"):
        train(small_config(synth_root, str(tmp_path / "bad"), optimizer="rmsprop", steps=1))


def test_width_option_through_the_cli(synth_root, tmp_path, capsys):
    """--width 16 trains the authors' release width; --resume / --init at another width are refused."""
    out = str(tmp_path / "thin")
    assert fabnet_main(small_args(synth_root, out, "--width", "16", "--steps", "2", "--val-every", "2")) == 0
    state = load_checkpoint(os.path.join(out, "checkpoints", "last.pt"), "cpu")
    assert state["model_config"]["width"] == 16 and state["train_config"]["width"] == 16
    assert state["model"]["encoder.net.0.weight"].shape == (16, 3, 4, 4)
    err = _cli_error(capsys, small_args(synth_root, out, "--steps", "4", "--resume"))
    assert "--width 16, but --width is 64; pass --width 16" in err
    err = _cli_error(
        capsys,
        small_args(
            synth_root, str(tmp_path / "k3"), "--sources", "3", "--init", os.path.join(out, "checkpoints", "last.pt")
        ),
    )
    assert "--init" in err and "--width 16, but --width is 64" in err
    err = _cli_error(capsys, small_args(synth_root, str(tmp_path / "bad"), "--width", "0"))
    assert "argument --width: expected an integer >= 1, got 0" in err
    # the CLI offers the model's default width
    from fabnet.cli import build_parser
    from fabnet.model import DEFAULT_WIDTH

    assert build_parser().parse_args(["train", "--data", "d", "--out", "o"]).width == DEFAULT_WIDTH
