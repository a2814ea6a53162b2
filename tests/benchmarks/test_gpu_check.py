"""The CPU-side pieces of benchmarks/gpu_check.py: grid arithmetic, agreement, no-GPU exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def test_the_full_pair_is_10625_tiles_and_its_projection() -> None:
    assert gpu_check.grid_tiles(32500, 48000) == 10_625  # 85 rows x 125 columns
    assert gpu_check.grid_tiles(2048, 2048) == 25
    assert gpu_check.projected_seconds(10.0, 32500, 48000) == pytest.approx(1062.5)


def test_change_agreement_ignores_nodata() -> None:
    reference = np.array([[0, 1, 255], [1, 1, 0]], np.uint8)
    candidate = np.array([[0, 0, 1], [1, 1, 255]], np.uint8)
    assert gpu_check.change_agreement(reference, candidate) == 0.75
    assert gpu_check.change_agreement(reference[:, 2:], candidate[:, 2:]) == 1.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_without_a_gpu_it_says_so_and_exits() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "no CUDA GPU here" in proc.stdout
