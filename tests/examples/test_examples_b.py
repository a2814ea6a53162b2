"""Run tutorials 4-6's example scripts end to end at tiny sizes and check what they write."""

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
LSSCD = ["building", "road", "water", "bare land", "tree", "cropland", "others"]


def run_example(name: str, out: Path, *flags: str, timeout: int = 600) -> dict[str, Any]:
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


def test_semantic_change_example(tmp_path: Path) -> None:
    out = tmp_path / "scd"
    summary = run_example(
        "semantic_change",
        out,
        *("--size", "384", "--patch-size", "64", "--batch-size", "4", "--samples", "8"),
        *("--epochs", "1", "--max-steps", "2", "--threshold", "0.05"),
    )
    for split in ("validation", "test"):
        scores = summary[split]
        assert set(scores) >= {"sek", "fscd", "miou", "iou_change", "f1"}
        assert all(-1.0 <= float(v) <= 1.0 for v in scores.values())
        assert 0.0 <= scores["miou"] <= 1.0 and 0.0 <= scores["fscd"] <= 1.0

    prediction = out / "prediction"
    with rasterio.open(out / "scene_test" / "pre.tif") as ref:
        grid = (ref.crs, ref.transform, ref.shape)
    for name in ("semantic_pre", "semantic_post"):
        with rasterio.open(prediction / f"{name}.tif") as src:
            assert (src.crs, src.transform, src.shape) == grid
            assert json.loads(src.tags()["GEOCHANGE_CLASS_NAMES"]) == LSSCD
            assert src.colormap(1)[0][:3] != src.colormap(1)[1][:3]  # one colour per class
            assert int(src.read(1).max()) < len(LSSCD)
    with rasterio.open(prediction / "transition.tif") as src:
        names = json.loads(src.tags()["GEOCHANGE_TRANSITION_NAMES"])
        codes = src.read(1)
        change = rasterio.open(prediction / "change.tif").read(1)
        pre = rasterio.open(prediction / "semantic_pre.tif").read(1)
        post = rasterio.open(prediction / "semantic_post.tif").read(1)
    assert names[str(0 * 7 + 5)] == "building -> cropland"
    changed = change == 1
    # transition codes are from * K + to where changed, 254 elsewhere
    assert np.array_equal(codes[changed], pre[changed].astype(int) * 7 + post[changed])
    assert np.all(codes[change == 0] == 254)

    polygons = gpd.read_file(out / "changes.gpkg", layer="changes")
    assert len(polygons) == summary["polygons"] > 0
    assert polygons.crs == grid[0]
    assert set(polygons["from_class"]) | set(polygons["to_class"]) <= set(LSSCD)
    for row in polygons.itertuples():
        if row.to_class == "building" and row.from_class != "building":
            assert row.change_type == "new building"
        elif row.from_class != "building" and row.to_class != "building":
            assert row.change_type == f"{row.from_class} → {row.to_class}"

    report = json.loads((out / "report" / "report.json").read_text())
    labels = report["transition_confusion"]["labels"]
    matrix = np.array(report["transition_confusion"]["matrix"])
    assert labels[0] == "no change" and matrix.shape == (len(labels), len(labels))
    assert matrix.sum() == 384 * 384  # every reference pixel is valid in a synthetic scene
    assert (out / "report" / "figures" / "transitions.png").stat().st_size > 1000
    assert (out / "maps.png").stat().st_size > 1000


@pytest.mark.slow
def test_semi_supervised_example(tmp_path: Path) -> None:
    from geochange.trainers import read_checkpoint_metadata

    out = tmp_path / "semi"
    summary = run_example(
        "semi_supervised",
        out,
        # seeds whose small scenes hold building changes (most 256 px scenes hold none)
        *("--size", "256x1664", "--test-size", "256", "--seed", "4", "--test-seed", "7"),
        *("--patch-size", "64", "--batch-size", "4", "--samples", "4"),
        *("--epochs", "1", "--max-steps", "2"),
    )
    # CEG pseudo labels in the three modes: 0/1 with 255 ignore, on the scene grid.
    with rasterio.open(out / "scene_train" / "pre.tif") as ref:
        grid = (ref.crs, ref.transform, ref.shape)
    for mode in ("pixel", "instance", "mixed"):
        with rasterio.open(out / f"pseudo_{mode}.tif") as src:
            assert (src.crs, src.transform, src.shape) == grid
            assert set(np.unique(src.read(1)).tolist()) <= {0, 1, 255}
        scores = summary["ceg"][mode]
        assert 0.0 <= scores["iou_change"] <= scores["iou_change_decided"] + 1e-9 <= 1.0 + 1e-9
    # instance matching does not count boundary errors of persisting buildings as change
    assert summary["ceg"]["instance"]["precision"] >= summary["ceg"]["pixel"]["precision"]
    with (
        rasterio.open(out / "pseudo_cli.tif") as cli,
        rasterio.open(out / "pseudo_mixed.tif") as py,
    ):
        assert np.array_equal(cli.read(1), py.read(1))
    assert "IoU^c" in summary["_stdout"]
    assert (out / "ceg.png").stat().st_size > 1000

    meta = read_checkpoint_metadata(out / "semi_supervised.ckpt")
    assert meta["task"] == "binary" and meta["model"] == "siam_diff"
    assert meta["model_kwargs"]["dual_head"] is True
    assert {"loss_sup", "loss_unsup"} <= set(summary["train_terms"])
    with rasterio.open(out / "prediction" / "change.tif") as src:
        assert src.crs.to_epsg() == 32650 and src.shape == (256, 256)
    assert all(0.0 <= v <= 1.0 for v in summary["test"].values())


def _check_large_scene_outputs(out: Path, summary: dict[str, Any], side: int) -> None:
    cog = summary["cog"]
    assert cog["layout"] == "COG" and cog["tiles"] == [512, 512]
    assert cog["overviews"] and cog["crs"] == "EPSG:32650"
    with rasterio.open(out / "full" / "change.tif") as full:
        assert full.shape == (side, side)
        with rasterio.open(out / "aoi" / "change.tif") as part:
            assert part.shape == (side // 2, side // 2)
            # the window's grid is the full grid shifted by a quarter of the scene
            assert part.transform.c == pytest.approx(full.transform.c + side / 4 * full.res[0])
            assert part.transform.f == pytest.approx(full.transform.f - side / 4 * full.res[1])
    assert 0 < summary["full"]["peak_rss_mib"] < 4096
    assert summary["polygons"] == len(gpd.read_file(out / "changes.gpkg", layer="changes"))


def test_large_scene_example(tmp_path: Path) -> None:
    out = tmp_path / "large"
    summary = run_example(
        "large_scene",
        out,
        *("--size", "512", "--tile-size", "256", "--overlap", "64", "--train-size", "512"),
        *("--train-epochs", "1", "--train-samples", "8", "--skip-resume", "--dask-workers", "0"),
    )
    _check_large_scene_outputs(out, summary, 512)


@pytest.mark.slow
def test_large_scene_example_resume_and_dask(tmp_path: Path) -> None:
    out = tmp_path / "large"
    summary = run_example(
        "large_scene",
        out,
        *("--size", "1024", "--tile-size", "256", "--overlap", "64", "--train-size", "512"),
        *("--train-epochs", "1", "--train-samples", "8", "--dask-workers", "2"),
    )
    _check_large_scene_outputs(out, summary, 1024)
    resume = summary["resume"]
    assert resume["rows_before_kill"] >= 512
    assert 0 < resume["tiles"] < summary["full"]["tiles"]
    for agreement in (resume, summary["dask"]):
        # same change map; probabilities may differ by one uint8 step from batch grouping
        assert agreement["change_pixels_differing"] <= 5
        assert agreement["probability_max_difference"] <= 1
