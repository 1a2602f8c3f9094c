"""benchmarks/gpu_check.sh on a machine without a GPU: one clear line and exit code 3, before any
build; and its report table from a benchmark JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the check would run")
def test_gpu_check_without_a_gpu_says_so(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_OUT=str(tmp_path / "out"))
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr
    assert "gpu_check: no CUDA device here" in proc.stderr and "torch.cuda.is_available() is False" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing built, nothing written


def test_gpu_report_table(tmp_path):
    def bench(provider, median):
        return {
            "name": f"test_forward[{provider}]",
            "group": "forward 8x3x3x128x128 bf16 cuda",
            "params": {"provider": provider},
            "stats": {"median": median, "min": median * 0.9},
            "extra_info": {"GBps": 100.0, "fraction_of_copy": 0.5},
        }

    path = tmp_path / "bench.json"
    path.write_text(
        json.dumps(
            {"benchmarks": [bench("reference", 0.010), bench("compiled_reference", 0.004), bench("cuda", 0.001)]}
        )
    )
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_report.py"), str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    row = next(line for line in out.splitlines() if "| cuda |" in line)
    assert "| 1.000 | 0.900 | 10.00x | 4.00x | 100.0 | 50 % |" in row
