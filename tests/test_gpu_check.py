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


def test_gpu_check_script_parses():
    proc = subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _gpu_bench(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_bench", "--smoke", "--out", str(tmp_path), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_gpu_bench_smoke_measures_every_provider_on_the_cpu(tmp_path):
    """The GPU bench's code paths at toy sizes: rows for each provider and mode, ratios in the
    table, parity against float64 within float32's reach."""
    proc = _gpu_bench(tmp_path, "--deadline", "300", "--sections", "parity", "op", "drop_in", "deterministic")
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "bench.json").read_text())
    rows = doc["rows"]
    assert not [r for r in rows if "error" in r]
    op = {(r["case"], r["provider"]) for r in rows if r["section"] == "op"}
    for mode in ("forward", "fwd+bwd", "fwd+bwd+src"):
        assert {("smoke fp32 smooth " + mode, p) for p in ("cpu", "eager")} <= op
    assert ("smoke fp32 smooth forward", "compiled") in op
    assert {r["provider"] for r in rows if r["section"] == "drop_in"} == {"fabnet", "F.grid_sample"}
    parity = {(r["case"], r["provider"]): r for r in rows if r["section"] == "parity"}
    assert parity[("2x3x3x16x16 fp32", "cpu")]["loss"] < 1e-6
    assert parity[("2x3x3x16x16 bf16", "cpu")]["d_flows"] < 2e-2
    table = (tmp_path / "bench.md").read_text()
    assert "| op | smoke fp32 smooth forward | eager |" in table and "1.00x" in table
    assert "deterministic: CUDA only" in table


def test_gpu_bench_deadline_skips_sections_and_still_reports(tmp_path):
    proc = _gpu_bench(tmp_path, "--deadline", "0", "--sections", "op", "train")
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["rows"] == []
    assert [n.split(":")[0] for n in doc["notes"]] == ["op", "train"]
    assert all("deadline" in n for n in doc["notes"])
