"""torchrun: two gloo processes in step, and the ranks' disjoint data shards."""

import os
import subprocess
import sys

import torch

from fabnet.model import FabNet, load_checkpoint
from fabnet.train import distributed as D
from fabnet.train.batches import make_loader
from tests.train.runs import REPO, child_env, read_metrics, small_args, small_config


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


def test_ranks_read_disjoint_shards(synth_root, tmp_path):
    cfg = small_config(synth_root, str(tmp_path / "x"), epoch_length=16)
    plans = [make_loader(cfg, "train", D.World(rank=r, size=2), 4).plan(0) for r in range(2)]
    paths = [{s.frames[0].path for batch in plan for s in batch} for plan in plans]
    assert all(len(p) == 8 for p in paths)  # 16 samples, 8 per rank, each target a different track
    assert not paths[0] & paths[1]
