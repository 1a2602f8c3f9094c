"""``fabnet demo --quick`` end to end: every stage runs and report.json has its documented schema
(every task, method and metric key); Ctrl-C stops it and the same command continues."""

import json
import math
import os
import re

import pytest

from fabnet.cli import main

pytestmark = pytest.mark.slow  # the longest test module: a whole (tiny) demo run, ~17 s on 2 cores

TASK_METRIC = {"landmarks": "nme_iod_pct", "pose": "mae_deg", "expression": "auc_mean", "attributes": "auc_mean"}
METHODS = ("fabnet_1src", "fabnet_3src_curriculum", "autoencoder", "random_init", "pixels", "noise")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    # A relative --out, as in the README's command: the report's links must still resolve.
    cwd = os.getcwd()
    os.chdir(out.parent)
    try:
        assert main(["demo", "--quick", "--out", out.name]) == 0
    finally:
        os.chdir(cwd)
    return out


def test_report_json_schema(demo_dir):
    report = json.loads((demo_dir / "report.json").read_text())
    assert set(report["probes"]) == set(TASK_METRIC)
    for task, metric in TASK_METRIC.items():
        assert set(report["probes"][task]) == set(METHODS), task
        for method in METHODS:
            value = report["probes"][task][method][metric]
            assert isinstance(value, float) and math.isfinite(value), (task, method, value)
            if metric == "auc_mean":
                assert 0.0 <= value <= 1.0
            else:
                assert value > 0.0
    assert set(report["probes"]["pose"]["random_init"]) >= {"mae_yaw", "mae_pitch", "mae_roll"}
    # the seeds, sizes, steps and times the numbers came from
    assert set(report["seeds"]) >= {"data", "training", "probes"}
    sizes = report["sizes"]
    assert sizes["frames"] == sizes["train_frames"] + sizes["val_frames"] + sizes["test_frames"] > 0
    assert report["steps"]["fabnet_1src"] == report["config"]["steps_1src"]
    assert report["steps"]["fabnet_3src_curriculum"] == report["config"]["steps_3src"]
    assert report["steps"]["random_init"] == report["steps"]["pixels"] == 0
    assert report["steps"]["autoencoder"] == report["config"]["ae_steps"]
    times = report["times"]
    assert times["total"] > 0 and all(v >= 0 for v in times.values())
    assert times["total"] >= sum(v for k, v in times.items() if k.startswith("train_"))
    conf = report["confidence"]
    assert conf["num_sources"] == 3 and 1 / 3 - 1e-6 <= conf["max_confidence_mean"] <= 1.0
    assert 0.0 <= conf["nearest_pose_share"] <= 1.0
    for method in METHODS:
        r = report["retrieval"][method]
        assert 0.0 <= r["identity_share"] <= 1.0 and 0.0 <= r["within_track_pose_r2"] <= 1.0, (method, r)
    from fabnet.probe.swap import CONDITIONS

    for method, k in (("fabnet_1src", 1), ("fabnet_3src_curriculum", 3)):
        swap = report["target_swap"][method]
        assert swap["num_sources"] == k and swap["samples"] == report["sizes"]["test_frames"], (method, swap)
        assert set(swap["l1"]) == set(CONDITIONS), (method, swap)
        assert all(0.0 < v < 1.0 for v in swap["l1"].values()), (method, swap)


def test_figures_exist_and_are_small(demo_dir):
    from PIL import Image

    report = json.loads((demo_dir / "report.json").read_text())
    figures = report["figures"]
    for name in ["loss_curves", "probe_metrics", "confidence_heatmaps"] + [f"retrieval_{m}" for m in METHODS]:
        assert name in figures, name
    for name, rel in figures.items():
        path = demo_dir / rel  # relative to the report's directory
        assert path.is_file(), name
        assert os.path.getsize(path) < 400_000, (name, os.path.getsize(path))
        with Image.open(path) as im:
            assert min(im.size) >= 100, (name, im.size)


def test_report_md_lists_every_method_and_figure(demo_dir):
    text = (demo_dir / "report.md").read_text()
    for method in METHODS:
        assert f"| {method} |" in text, method
    assert "1 source vs 3 sources" in text
    report = json.loads((demo_dir / "report.json").read_text())
    for rel in report["figures"].values():
        assert f"]({rel})" in text, rel
    links = re.findall(r"\]\(([^)]+\.png)\)", text)
    assert links and all((demo_dir / link).is_file() for link in links), links
    assert text.startswith("# FAb-Net demo on synthetic faces: smoke test")
    # every value is filled in: no f-string left unformatted ("{cfg['steps_1src']} adam steps")
    assert not re.search(r"\{[a-z_]+\[", text), re.search(r".{40}\{[a-z_]+\[.{40}", text)


def test_probe_metrics_carry_identity_intervals(demo_dir):
    report = json.loads((demo_dir / "report.json").read_text())
    assert report["sizes"]["test_identities"] == 12  # 30 % of the quick probe set's 40
    for task, metric in TASK_METRIC.items():
        for method, metrics in report["probes"][task].items():
            low, high = metrics["ci95"][metric]
            assert low <= metrics[metric] <= high, (task, method)


def test_ctrl_c_stops_the_whole_demo_and_the_same_command_continues(tmp_path):
    """One Ctrl-C: exit 130 with a line naming the stage, checkpoints kept; the same command then
    resumes the interrupted FAb-Net run, and a second Ctrl-C in a later stage behaves the same."""
    import signal
    import subprocess
    import sys
    import time

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "fabnet", "demo", "--quick", "--no-progress", "--out", str(out)]

    def interrupt_when(exists) -> subprocess.CompletedProcess:
        proc = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.time()
        while not exists() and proc.poll() is None and time.time() - t0 < 300:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=300)
        return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)

    metrics = out / "runs" / "fabnet_1src" / "metrics.jsonl"
    first = interrupt_when(lambda: metrics.exists() and '"kind": "train"' in metrics.read_text())
    assert first.returncode == 130, first.stderr[-2000:]
    assert "fabnet demo: interrupted during FAb-Net" in first.stderr and "run the same command" in first.stderr
    assert "Traceback" not in first.stderr
    assert (out / "runs" / "fabnet_1src" / "checkpoints" / "last.pt").exists()
    assert not (out / "report.md").exists()

    second = interrupt_when(lambda: (out / "runs" / "autoencoder").exists())
    assert "resuming the interrupted run" in second.stdout
    assert second.returncode == 130, second.stderr[-2000:]
    assert "interrupted during baseline" in second.stderr and "Traceback" not in second.stderr

    third = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr[-2000:]
    assert "reusing the finished run" in third.stdout and (out / "report.md").exists()


class _MeanColour(__import__("torch").nn.Module):
    """A dummy method's encoder: each frame's mean colour, repeated to 256 values."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.embedding_dim = 256

    def forward(self, x):
        return x.mean(dim=(2, 3)).repeat(1, 86)[:, :256]


def test_a_new_method_is_one_record(tmp_path, monkeypatch, capsys):
    """One Method record added to the table, nothing else: the demo obtains, probes and
    retrieves it, and both reports name it."""
    from fabnet.demo import methods

    record = methods.Method(
        "mean_colour",
        "mean colour (dummy)",
        methods.RAW,
        "tab:cyan",
        lambda ctx, m: methods.Obtained(_MeanColour(ctx.cfg.size), 0),
        demo=True,
    )
    monkeypatch.setitem(methods.METHODS, record.name, record)
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    for task, metric in TASK_METRIC.items():
        assert math.isfinite(report["probes"][task]["mean_colour"][metric])
    assert report["steps"]["mean_colour"] == 0 and "retrieval_mean_colour" in report["figures"]
    text = (tmp_path / "d" / "report.md").read_text()
    assert re.search(r"^\| mean_colour \| ", text, re.M) and "mean colour (dummy)" in text


def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path):
    """SIGKILL leaves metrics but no checkpoint; the same command restarts that run (before, the
    trainer refused the folder: '... already holds a run ...; continue it with --resume')."""
    import signal
    import subprocess
    import sys
    import time

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "fabnet", "demo", "--quick", "--no-progress", "--out", str(out)]
    run = out / "runs" / "fabnet_1src"
    proc = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    metrics = run / "metrics.jsonl"
    while proc.poll() is None and time.time() - t0 < 300:
        if metrics.exists() and '"kind": "train"' in metrics.read_text():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (run / "checkpoints" / "last.pt").exists()
    again = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "restarting the run" in again.stdout and (out / "report.md").exists()
