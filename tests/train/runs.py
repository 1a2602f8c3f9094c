"""Small training runs for the tests: CLI arguments and configs of seconds-long runs, child
processes, and reading their metrics."""

import json
import os
import subprocess
import sys
import time

import pytest

from fabnet.train import TrainConfig

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
        "--no-tensorboard",
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
        tensorboard=False,
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
