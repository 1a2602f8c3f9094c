"""The training loop end to end on a tiny synthetic set: bad input, the two stages, the options,
the learning-rate schedule."""

import os

import pytest
import torch

from fabnet.cli import main as fabnet_main
from fabnet.model import FabNet, load_checkpoint, save_checkpoint
from fabnet.model.checkpoint import FORMAT
from fabnet.train import train
from fabnet.train.curriculum import Curriculum
from fabnet.train.loop import plateau_step
from tests.train.runs import small_args, small_config


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
    # resuming takes the run's own width; a different one typed is refused
    err = _cli_error(capsys, small_args(synth_root, out, "--steps", "4", "--resume", "--width", "64"))
    assert "--width 16, but --width is 64; pass --width 16" in err
    assert fabnet_main(small_args(synth_root, out, "--steps", "3", "--resume")) == 0
    assert load_checkpoint(os.path.join(out, "checkpoints", "last.pt"), "cpu")["step"] == 3
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
    from fabnet.train.cli import resolve

    assert resolve(build_parser().parse_args(["train", "--data", "d", "--out", "o"])).width == DEFAULT_WIDTH
