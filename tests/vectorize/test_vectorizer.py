"""geochange.vectorize.vectorize_changes end to end: grouping, filters, CLI, a synthetic scene."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyogrio
import pytest
import shapely

from geochange.errors import ConfigurationError
from geochange.vectorize import (
    vectorize_changes,
)

from .conftest import (
    CLASSES,
    RES,
    assert_same_polygons,
    semantic_scene,
    whole_raster_polygons,
    write_raster,
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
    truth = gpd.read_file(scene.changed_buildings, layer="changed_buildings")
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


def test_binary_polygons_take_classes_from_per_date_maps(tmp_path: Path) -> None:
    # A binary model's polygons had NULL from/to/change_type even with per-date class maps.
    change = np.zeros((32, 32), np.uint8)
    pre = np.full((32, 32), 5, np.uint8)  # cropland
    post = pre.copy()
    change[4:10, 4:14] = 1  # one changed region: 42 px new building, 18 px new road
    post[4:10, 4:11] = 0
    post[4:10, 11:14] = 1
    change[20:24, 20:24] = 1  # changed, but no class known on either date
    pre[20:24, 20:24] = post[20:24, 20:24] = 255
    paths = {
        "semantic_pre": write_raster(tmp_path / "pre.tif", pre, class_names=CLASSES),
        "semantic_post": write_raster(tmp_path / "post.tif", post, class_names=CLASSES),
    }
    change_path = write_raster(tmp_path / "change.tif", change)
    binary = vectorize_changes(change_path, workers=1)
    assert binary["change_type"].tolist() == ["change", "change"]
    assert binary["from_class"].isna().all() and binary["to_class"].isna().all()

    whole = vectorize_changes(change_path, group_by="change", workers=1, **paths)
    # The binary polygons kept whole, with the majority class of each date inside them.
    assert whole["pixel_count"].tolist() == [60, 16]
    assert whole["from_class"].tolist() == ["cropland", None]
    assert whole["to_class"].tolist() == ["building", None]
    assert whole["change_type"].tolist() == ["new building", "change"]
    assert [g.equals(b) for g, b in zip(whole.geometry, binary.geometry, strict=True)] == [
        True,
        True,
    ]
    by_type = vectorize_changes(change_path, workers=1, **paths)  # group_by="change_type"
    assert sorted(zip(by_type["change_type"], by_type["pixel_count"], strict=True)) == [
        ("change", 16),
        ("cropland → road", 18),
        ("new building", 42),
    ]
    # The same from the command line.
    out = tmp_path / "cli.gpkg"
    done = subprocess.run(
        [sys.executable, "-m", "geochange", "vectorize", str(change_path), "--out", str(out),
         "--semantic-pre", str(paths["semantic_pre"]), "--semantic-post",
         str(paths["semantic_post"]), "--group-by", "change", "--workers", "1", "--quiet"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    back = pyogrio.read_dataframe(out, layer="changes")
    assert back["change_type"].tolist() == ["new building", "change"]
    assert back["from_class"].iloc[0] == "cropland" and back["from_class"].isna().iloc[1]
