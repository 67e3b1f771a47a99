"""benchmarks/gpu_suite.sh on a machine without CUDA: it refuses at once, in one line, and writes nothing.

The suite itself (the GPU figures) runs only on a lent GPU machine; `--dry-run` checks its plumbing on a CPU
(benchmarks/README.md, "GPU figures")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_without_cuda_the_suite_stops_at_once_with_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():  # a GPU machine runs the real suite instead; nothing to check here
        pytest.skip("a CUDA GPU is visible: this test checks the refusal on a machine without one")
    out = tmp_path / "gpu_suite.json"
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "gpu_suite: error: no CUDA GPU visible to torch (torch.cuda.is_available() is False); run it on a GPU "
        "machine, or --dry-run"
    ]
    assert not out.exists() and result.stdout == ""
