"""Tests of geochange.synthetic.scene: reopening a written scene, its manifest."""

from __future__ import annotations

import json
import shutil

import pytest

from geochange.errors import DataError
from geochange.synthetic import MANIFEST_NAME, Scene


def test_load_reopens_the_scene(scene: Scene, tmp_path) -> None:
    loaded = Scene.load(scene.root)
    assert loaded == scene
    assert loaded.bounds == scene.bounds and loaded.shift == scene.shift
    with pytest.raises(DataError, match="no synthetic scene"):
        Scene.load(tmp_path)


def test_manifest_describes_the_files_and_bounds(scene: Scene) -> None:
    manifest = json.loads(scene.manifest.read_text())
    assert manifest == json.loads(json.dumps(scene.to_dict()))
    assert manifest["files"] == {
        "pre": "pre.tif",
        "post": "post.tif",
        "change": "change.tif",
        "semantic_pre": "semantic_pre.tif",
        "semantic_post": "semantic_post.tif",
        "changed_buildings": "changed_buildings.gpkg",
    }
    left, bottom, right, top = scene.bounds
    assert (right - left, top - bottom) == pytest.approx((scene.width * 0.6, scene.height * 0.6))


def test_load_rejects_a_corrupt_or_incomplete_scene(scene: Scene, tmp_path) -> None:
    (tmp_path / MANIFEST_NAME).write_text("{}")
    with pytest.raises(DataError, match="corrupt scene manifest"):
        Scene.load(tmp_path)
    shutil.copy(scene.manifest, tmp_path / MANIFEST_NAME)
    shutil.copy(scene.pre, tmp_path / "pre.tif")
    with pytest.raises(DataError, match="incomplete synthetic scene") as info:
        Scene.load(tmp_path)
    missing = ["post.tif", "change.tif", "semantic_pre.tif", "semantic_post.tif"]
    assert str(info.value).endswith(f"missing {missing}")
