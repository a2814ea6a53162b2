"""geochange.vectorize.vectorize_changes end to end: grouping, filters, CLI, a synthetic scene."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pyogrio
import pytest
import shapely

from geochange.errors import ConfigurationError
from geochange.vectorize import (
    vectorize_changes,
)

from .conftest import (
    RES,
    assert_same_polygons,
    semantic_scene,
    whole_raster_polygons,
)


def test_group_by_change_merges_touching_types(semantic_paths: SimpleNamespace) -> None:
    frame = vectorize_changes(semantic_paths, block_size=8, workers=1, group_by="change")
    _, _, change, _ = semantic_scene()
    assert_same_polygons(frame, whole_raster_polygons(change, 4))
    merged = frame[frame["pixel_count"] == 81 + 36].iloc[0]  # building + road
    assert merged["change_type"] == "new building"


def test_change_classes_and_min_area(semantic_paths: SimpleNamespace) -> None:
    only_buildings = vectorize_changes(
        semantic_paths.change,
        semantic_pre=semantic_paths.semantic_pre,
        semantic_post=semantic_paths.semantic_post,
        change_classes=["building"],
        workers=1,
    )
    assert set(only_buildings["change_type"]) == {"new building", "demolished building"}
    large = vectorize_changes(semantic_paths.change, min_area=60 * RES * RES, workers=1)
    assert (large["pixel_count"] >= 60).all() and len(large) >= 1
    with pytest.raises(ConfigurationError, match="unknown class"):
        vectorize_changes(
            semantic_paths,
            change_classes=["castle"],
            workers=1,
        )


def test_cli_vectorize(tmp_path: Path, semantic_paths: SimpleNamespace) -> None:
    out = tmp_path / "cli.gpkg"
    cmd = [
        sys.executable,
        "-m",
        "geochange",
        "vectorize",
        str(semantic_paths.change),
        "--out",
        str(out),
        "--probability",
        str(semantic_paths.probability),
        "--semantic-pre",
        str(semantic_paths.semantic_pre),
        "--semantic-post",
        str(semantic_paths.semantic_post),
        "--min-area",
        "1",
        "--block-size",
        "16",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "new building" in done.stdout
    back = pyogrio.read_dataframe(out)
    assert (back["change_type"] == "new building").sum() == 2
    bad = subprocess.run(
        [*cmd[:5], "--out", str(tmp_path / "x.txt")], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 1 and "unknown output format" in bad.stderr


def test_synthetic_scene_recovers_changed_buildings(tmp_path: Path) -> None:
    synthetic = pytest.importorskip("geochange.synthetic")
    if not hasattr(synthetic, "make_scene"):
        pytest.skip("geochange.synthetic.make_scene not available yet")
    import geopandas as gpd

    scene = synthetic.make_scene(tmp_path / "scene", 1024, 1024, seed=5)
    frame = vectorize_changes(
        scene.change,
        semantic_pre=scene.semantic_pre,
        semantic_post=scene.semantic_post,
        block_size=256,
    )
    truth = gpd.read_file(scene.changed_buildings)
    assert len(truth) > 0
    ours = frame[frame["change_type"].isin(["new building", "demolished building"])]
    tree = shapely.STRtree(ours.geometry.values)
    matched = 0
    for geom, ctype in zip(truth.geometry, truth["change_type"], strict=True):
        best = 0.0
        best_type = None
        for i in tree.query(geom):
            candidate = ours.geometry.values[i]
            iou = geom.intersection(candidate).area / geom.union(candidate).area
            if iou > best:
                best, best_type = iou, ours["change_type"].values[i]
        matched += best >= 0.9 and best_type == ctype
    assert matched >= 0.99 * len(truth)
