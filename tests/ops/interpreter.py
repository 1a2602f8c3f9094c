"""Run a snippet under Triton's interpreter in a child process and read back its JSON result.

Triton chooses between compiling and interpreting when a kernel is defined, from TRITON_INTERPRET
at its first import, so interpreter runs cannot share the test session's process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
requires_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


def run_interpreted(code: str, timeout: int = 600):
    """Runs ``code`` with TRITON_INTERPRET=1 (the repository importable); the JSON value its last
    printed line holds."""
    env = dict(
        os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
