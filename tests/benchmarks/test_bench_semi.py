"""benchmarks/bench_semi.py's segmenter simulations: the systematic one makes worse CEG labels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_semi  # noqa: E402


def test_systematic_segmenter_makes_false_changes_mild_does_not(tmp_path: Path) -> None:
    scene = bench_semi.scene(tmp_path / "scene", 384, 7)
    with rasterio.open(scene.semantic_pre) as src:
        pre = src.read(1)
    # Per-date maps differ from each other where the true maps agree (false changes).
    maps = [bench_semi.degrade_class_map(pre, date, 7, "systematic") for date in (0, 1)]
    building = bench_semi.BUILDING
    assert ((maps[0] == building) != (maps[1] == building)).mean() > 0.01
    scores = {seg: bench_semi.unsupervised_ceg(scene, tmp_path, 7, seg)
              for seg in ("mild", "systematic")}  # fmt: skip
    # The mild simulation makes precise CEG labels; the systematic one false and missed ones.
    assert scores["mild"]["precision"] > 0.95
    assert scores["systematic"]["precision"] < scores["mild"]["precision"] - 0.2
    assert scores["systematic"]["iou_change"] < scores["mild"]["iou_change"] - 0.2
    for seg in ("mild", "systematic"):
        for date in ("pre", "post"):
            with rasterio.open(tmp_path / f"test_segmenter_{seg}" / f"segmenter_{date}.tif") as s:
                assert s.read(1).dtype == np.uint8
