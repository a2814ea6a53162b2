"""Run tutorials 1-3's example scripts end to end at tiny sizes and check what they write.

The fast runs train for one or two steps, so their change maps are not meaningful; where a
test needs a known change map it passes ``--threshold 0`` (every valid pixel is change), which
makes areas, nodata and recall exactly predictable. The trained-model checks are ``slow``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio

EXAMPLES = Path(__file__).parents[2] / "examples"
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
METRIC_KEYS = {"iou_change", "f1", "precision", "recall", "oa", "kappa"}


def run_example(name: str, out: Path, *flags: str, timeout: int = 900) -> dict[str, Any]:
    """Run ``examples/NAME.py --out OUT FLAGS`` in a fresh interpreter; return its summary."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--out", str(out), *flags],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    summary["_stdout"] = completed.stdout
    return summary


def assert_scores(scores: dict[str, float]) -> None:
    assert set(scores) >= METRIC_KEYS
    for key in METRIC_KEYS - {"kappa"}:
        assert 0.0 <= scores[key] <= 1.0, (key, scores[key])
    assert -1.0 <= scores["kappa"] <= 1.0


TINY_TRAINING = ("--epochs", "1", "--max-steps", "1", "--batch-size", "4", "--patch-size", "64")
ALL_CHANGE = ("--threshold", "0", "--simplify", "0", "--regularize", "none", "--min-area", "0")
ONE_TILE = ("--tile-size", "512")  # the 512-pixel scenes in one prediction tile: fast


def test_quickstart_example(tmp_path: Path) -> None:
    out = tmp_path / "quickstart"
    summary = run_example(
        "quickstart", out, "--size", "512", "--samples", "4", *TINY_TRAINING, *ALL_CHANGE, *ONE_TILE
    )
    pre = out / "scene_test" / "pre.tif"
    change_path = out / "prediction" / "change.tif"
    with rasterio.open(pre) as ref, rasterio.open(change_path) as src:
        assert src.crs == ref.crs and src.crs.to_epsg() == 32650
        assert src.transform == ref.transform and src.shape == ref.shape == (512, 512)
        change = src.read(1)
    assert (out / "prediction" / "probability.tif").is_file()
    # Threshold 0: every pixel is change, so one polygon covers the scene, 0.6 m x 0.6 m pixels.
    assert set(np.unique(change)) == {1}
    polygons = gpd.read_file(out / "changed_buildings.gpkg", layer="changes")
    assert polygons.crs.to_epsg() == 32650
    assert len(polygons) == summary["polygons"] == 1
    assert (polygons["area_m2"] > 0).all()
    assert polygons["area_m2"].sum() == pytest.approx(512 * 512 * 0.36, rel=1e-9)
    assert summary["crs"] == "EPSG:32650"
    assert_scores(summary["pixel"])
    assert_scores(summary["validation"])
    # Everything predicted as change: pixel recall is exactly 1, precision the changed share.
    assert summary["pixel"]["recall"] == 1.0
    reference = gpd.read_file(out / "scene_test" / "changed_buildings.gpkg")
    changed_share = reference.area.sum() / (512 * 512 * 0.36)
    assert summary["pixel"]["precision"] == pytest.approx(changed_share, abs=0.01)
    assert summary["objects"]["reference_buildings"] == len(reference)
    figure = out / "map.png"
    assert figure.is_file() and 10_000 < figure.stat().st_size < 300_000

    from geochange.trainers import read_checkpoint_metadata

    meta = read_checkpoint_metadata(out / "building_change.ckpt")
    assert meta["task"] == "binary" and meta["in_channels"] == 3
    assert len(meta["normalization"]["mean"]) == 3


def test_own_geotiffs_example(tmp_path: Path) -> None:
    out = tmp_path / "own"
    summary = run_example(
        "own_geotiffs",
        out,
        *("--size", "512", "--seed", "7", "--samples", "4"),
        *TINY_TRAINING,
        *ALL_CHANGE,
        *ONE_TILE,
    )
    pre = out / "scene" / "pre.tif"
    post = out / "my_data" / "post_3857.tif"
    labels = out / "my_data" / "changed_buildings_wgs84.gpkg"
    with rasterio.open(post) as src:
        # Another CRS and pixel size: 0.8 m on the ground is ~1.08 Web Mercator units at 42° N.
        assert src.crs.to_epsg() == 3857 and src.nodata == 0
        assert src.res[0] == pytest.approx(0.8 / np.cos(np.radians(42.0)), rel=0.02)
        post_valid_share = float((src.read_masks(1) > 0).mean())
    assert gpd.read_file(labels).crs.to_epsg() == 4326
    assert 0.75 < post_valid_share < 0.95  # the swath edge and warped footprint are nodata

    with rasterio.open(pre) as ref, rasterio.open(out / "prediction" / "change.tif") as src:
        assert src.crs == ref.crs and src.transform == ref.transform and src.shape == ref.shape
        change = src.read(1)
    assert summary["same_grid"] is True
    # Threshold 0: change wherever both dates have data, nodata (255) outside the post swath.
    assert set(np.unique(change)) == {1, 255}
    assert 0.05 < summary["nodata_share"] < 0.3
    assert (change == 255)[:32, :32].all()  # top-left corner is beyond the swath edge
    assert summary["ignored_share_corner"] == 1.0
    polygons = gpd.read_file(out / "changed_buildings.gpkg")
    assert polygons.crs.to_epsg() == 32650 and len(polygons) >= 1
    assert (polygons["area_m2"] > 0).all()
    # Nodata is no change: the polygons cover exactly the valid pixels.
    assert polygons["area_m2"].sum() == pytest.approx(int((change == 1).sum()) * 0.36, rel=1e-9)
    assert_scores(summary["test"])
    assert (out / "map.png").stat().st_size < 300_000


@pytest.mark.skipif(not (SHARED_DATA / "levircd-samples").is_dir(), reason="no shared data")
def test_folder_benchmark_example(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "bench"
    summary = run_example(
        "folder_benchmark",
        out,
        *("--root", str(SHARED_DATA), "--epochs", "1", "--max-steps", "1"),
        *("--batch-size", "2", "--patch-size", "256", "--figure-pairs", "2"),
    )
    levir, dsifn = summary["datasets"]["levircd"], summary["datasets"]["dsifn"]
    assert levir["pairs"] == 7 and dsifn["pairs"] == 10  # test_* crops; all DSIFN crops
    assert {"BIT", "ChangeFormerV6", "SiamUnet_diff", "SiamUnet_conc", "Unet"} <= set(
        levir["models"]
    )
    for entry in (levir, dsifn):
        for scores in entry["models"].values():
            assert_scores(scores)
        # Whole 256-pixel pairs, threshold 0.5 both ways: Lightning's test loop and the PNG
        # maps written by the example give the same scores.
        ours = entry["models"]["geochange (this run)"]
        for key in METRIC_KEYS:
            assert entry["trainer_test"][key] == pytest.approx(ours[key], abs=1e-3), key

    # Published BIT predictions on LEVIR-CD, recomputed independently with NumPy.
    root = SHARED_DATA / "levircd-samples"
    tp = fp = fn = 0
    for name in sorted(p.stem for p in (root / "A").glob("test_*.png")):
        pred = np.asarray(Image.open(root / "predict_CD_BIT" / f"{name}.png")) > 0
        truth = np.asarray(Image.open(root / "label" / f"{name}.png")) > 0
        tp += int((pred & truth).sum())
        fp += int((pred & ~truth).sum())
        fn += int((~pred & truth).sum())
    assert levir["models"]["BIT"]["iou_change"] == pytest.approx(tp / (tp + fp + fn), abs=1e-4)
    assert levir["models"]["BIT"]["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-4)
    written = sorted((out / "predictions" / "levircd" / "predict_geochange").glob("*.png"))
    assert len(written) == 7
    assert (out / "levircd_predictions.png").stat().st_size < 300_000


@pytest.mark.slow
def test_quickstart_default_training_finds_buildings(tmp_path: Path) -> None:
    """At the default size and training length the model finds real changed buildings."""
    out = tmp_path / "quickstart"
    summary = run_example("quickstart", out, timeout=3600)
    polygons = gpd.read_file(out / "changed_buildings.gpkg")
    assert len(polygons) > 0 and (polygons["area_m2"] > 20).all()
    assert summary["pixel"]["iou_change"] > 0.2
    assert summary["objects"]["found"] > 0


@pytest.mark.parametrize(
    "module", ["synth", "predict", "vectorize", "evaluate", "pseudo_labels", "demo"]
)
def test_cli_reference_lists_every_option(module: str) -> None:
    """docs/tutorials/07-cli.md shows each subcommand's --help; it must not fall behind."""
    import argparse
    import importlib

    page = (Path(__file__).parents[2] / "docs" / "tutorials" / "07-cli.md").read_text()
    parser = argparse.ArgumentParser()
    importlib.import_module(f"geochange.cli.{module}").add_arguments(parser)
    options = {o for action in parser._actions for o in action.option_strings if o.startswith("--")}
    missing = sorted(o for o in options if o not in page)
    assert not missing, f"geochange {module}: options missing from 07-cli.md: {missing}"
