"""bench/gpu_check.py, the script a person with a GPU runs: what can be checked without one."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from conftest import REPO

SCRIPT = REPO / "bench" / "gpu_check.py"


def _module():
    if "gpu_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules["gpu_check"]


def test_without_a_gpu_it_says_so_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # CPU-only, even where CI has a GPU
    out = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "no CUDA GPU" in out.stdout


def test_it_reads_every_estimate_of_the_readme():
    """The memory rows compare with README.md's table: every size and set-up is found there."""
    gpu_check = _module()
    estimates = gpu_check.readme_estimates()
    assert set(estimates) == set(gpu_check.SIZES)
    for size, row in estimates.items():
        assert row["params"] > 1e7
        assert all(column in row for column, _ in gpu_check.MEMORY_SETUPS.values()), size
