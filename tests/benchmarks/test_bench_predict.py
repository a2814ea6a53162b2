"""Pieces of benchmarks/bench_predict.py that run without a benchmark: configurations, model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_predict  # noqa: E402


def test_engines_times_precisions_are_the_configurations() -> None:
    args = argparse.Namespace(
        engines="torch,openvino", engine="torch", precisions="fp32,int8", precision="auto"
    )
    assert bench_predict.configurations(args) == [
        ("torch", "fp32"),
        ("torch", "int8"),
        ("openvino", "fp32"),
        ("openvino", "int8"),
    ]
    args = argparse.Namespace(engines=None, engine="onnxruntime", precisions=None, precision="fp32")
    assert bench_predict.configurations(args) == [("onnxruntime", "fp32")]
    engine, precision = bench_predict.label("openvino", "int8").split("-")
    assert (engine, precision) == ("openvino", "int8")


def test_calibrated_model_is_saved_into_a_missing_directory(tmp_path: Path) -> None:
    # --scenes runs never generate a scene, which was what created bench_data/predict/.
    scene = tmp_path / "scene"
    scene.mkdir()
    rng = np.random.default_rng(0)
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 3, "dtype": "uint8"}
    profile |= {"crs": "EPSG:32633", "transform": from_origin(0, 64, 1, 1)}
    for name in ("pre.tif", "post.tif"):
        with rasterio.open(scene / name, "w", **profile) as dst:
            dst.write(rng.integers(0, 255, (3, 64, 64), dtype=np.uint8))
    path = tmp_path / "missing" / "model.pt"
    bench_predict.calibrated_model(scene, path, 64)
    state = torch.load(path, map_location="cpu")
    running = [v for k, v in state.items() if k.endswith("running_var")]
    assert running and not torch.allclose(running[0], torch.ones_like(running[0]))
