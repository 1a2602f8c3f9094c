"""`fabnet train --config RUN/config.json` and `--resume` without retyping: a saved run's options,
overridden by the command line."""

import dataclasses
import json

import pytest

from fabnet import __version__
from fabnet.cli import build_parser, main
from fabnet.model import load_checkpoint
from fabnet.train import train
from fabnet.train.cli import config_from_args
from tests.train.runs import read_metrics, small_args, small_config


def _config(argv):
    return config_from_args(build_parser().parse_args(argv))


def _saved(tmp_path, **changes):
    """A config.json as a run writes it (dataclasses.asdict of its TrainConfig)."""
    cfg = small_config("ROOT", str(tmp_path / "run"), **changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dataclasses.asdict(cfg)))
    return cfg, str(path)


def test_config_file_gives_every_option_and_flags_override(tmp_path):
    saved, path = _saved(
        tmp_path, width=16, curriculum=True, lr_factor=0.5, figure_samples=2, val_at_start=True, identity_init=False
    )
    cfg = _config(["train", "--config", path, "--out", str(tmp_path / "new"), "--lr", "0.5", "--no-figures"])
    expected = dataclasses.replace(saved, out=str(tmp_path / "new"), lr=0.5, progress=True)
    assert cfg == expected
    # a flag that turns an option off (and its inverted field) overrides the file too
    assert _config(["train", "--config", path, "--no-initial-val"]).val_at_start is False
    assert _config(["train", "--config", path]).out == str(tmp_path / "run")


def test_length_on_the_command_line_replaces_the_files(tmp_path):
    _, path = _saved(tmp_path, steps=6)
    cfg = _config(["train", "--config", path, "--epochs", "3"])
    assert (cfg.steps, cfg.epochs) == (None, 3)


def test_one_invocations_options_are_not_carried(tmp_path):
    _, path = _saved(tmp_path, resume=True, overwrite=True, stop_after=3, progress=False)
    cfg = _config(["train", "--config", path])
    assert (cfg.resume, cfg.overwrite, cfg.stop_after, cfg.progress) == (False, False, None, True)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"data": "x", "wings": 2}', "fields fabnet train does not know: wings"),
        ("[1, 2]", "must hold a JSON object of TrainConfig fields, got list"),
        ("{not json", "is not readable JSON"),
    ],
)
def test_bad_config_files_are_named(tmp_path, capsys, content, message):
    path = tmp_path / "c.json"
    path.write_text(content)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"--config {str(path)!r}" in err and message in err, err


def test_data_and_out_are_required_without_a_config(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r")]) == 2
    assert "argument --data is required (or give --config RUN/config.json)" in capsys.readouterr().err


def test_resume_needs_no_retyped_flags(synth_root, tmp_path, capsys):
    """A run of S=32, K=2, batch 4 stopped after 2 steps continues with only --out and --resume:
    size, K, batch, lr, the log period and the rest come from its checkpoint."""
    out = str(tmp_path / "run")
    assert main(small_args(synth_root, out, "--steps", "4", "--stop-after", "2", "--log-every", "1")) == 0
    capsys.readouterr()
    assert main(["train", "--out", out, "--resume", "--no-progress"]) == 0
    assert "done, 4 steps" in capsys.readouterr().out
    steps = [m["step"] for m in read_metrics(out) if m["kind"] == "train"]
    assert steps == [1, 2, 3, 4]
    resumed = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (resumed["size"], resumed["num_sources"], resumed["batch_size"], resumed["lr"]) == (32, 2, 4, 0.01)


def test_config_of_a_real_run_trains_the_same_way(synth_root, tmp_path):
    first = train(small_config(synth_root, str(tmp_path / "a"), steps=2))
    path = str(tmp_path / "a" / "config.json")
    # the run records the version that made it, in its config and its checkpoint
    with open(path) as f:
        assert json.load(f)["fabnet_version"] == __version__
    assert load_checkpoint(first.checkpoint)["fabnet_version"] == __version__
    cfg = _config(["train", "--config", path, "--out", str(tmp_path / "b"), "--no-progress"])
    second = train(cfg)
    assert second.step == first.step == 2
    losses = lambda r: [m["loss"] for m in r.metrics if m["kind"] == "train"]  # noqa: E731
    assert losses(second) == losses(first)


def test_paper_flag_overrides_the_files_optimisation(tmp_path):
    _, path = _saved(tmp_path, optimizer="adam", lr=2e-4, identity_init=True)
    cfg = _config(["train", "--config", path, "--paper"])
    chosen = (cfg.optimizer, cfg.lr, cfg.momentum, cfg.identity_init, cfg.confidence_range)
    assert chosen == ("sgd", 1e-3, 0.9, False, 1)
    assert _config(["train", "--config", path, "--paper", "--lr", "0.5"]).lr == 0.5
