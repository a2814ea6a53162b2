"""benchmarks/bench_sampling.py: every configuration measures the same windows, and says so."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.builders import make_pair

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_sampling  # noqa: E402


@pytest.mark.parametrize(
    "method", ["geochange-random", "geochange-compact", "rasterio-raw", "rasterio-raw-labels"]
)
def test_a_configuration_reads_every_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str
) -> None:
    pair = make_pair(tmp_path / "scene")
    bench_sampling.measure(method, pair.root, 0, 16, 64, 2)
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["method"] == method and result["workers"] == 0
    assert result["samples"] == 16 and len(result["rates"]) == 2
    assert all(rate > 0 for rate in result["rates"])


def test_the_summary_compares_with_raw_reads_with_and_without_labels(
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = {
        ("torchgeo-ts", 0): {"rate": 100.0},
        ("geochange-compact", 0): {"rate": 300.0},
        ("rasterio-raw", 0): {"rate": 200.0},
        ("rasterio-raw-labels", 0): {"rate": 150.0},
    }
    bench_sampling.summary(results, [0])
    out = capsys.readouterr().out
    assert "geochange-compact 300.0 = 3.00x TorchGeo, 150% of raw (200% with labels)" in out


def test_first_passes_are_timed_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pair = make_pair(tmp_path / "scene")
    bench_sampling.measure("geochange-compact", pair.root, 0, 16, 64, 2, first=1)
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(result["first_rates"]) == 1 and len(result["rates"]) == 2
    assert result["pss_mb"] > 10  # the poller read this process's PSS at least once


def test_peak_pss_reads_this_process() -> None:
    assert bench_sampling._PeakPss._pss(os.getpid()) > 10 * 2**20
