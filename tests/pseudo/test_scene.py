"""geochange.pseudo.scene: generate_pseudo_labels over whole rasters, block by block."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from geochange.errors import ConfigurationError, DataError, OutputError
from geochange.pseudo import (
    change_event_generation,
    generate_pseudo_labels,
)
from tests.pseudo.scenes import (
    BUILDING,
    CLASSES,
    CRS,
    TRANSFORM,
    random_class_map,
    read,
    write_raster,
)


@pytest.mark.parametrize(
    ("mode", "connectivity", "threshold", "classes"),
    [
        ("mixed", 8, 0.0, [0]),
        ("instance", 4, 0.0, [0, 2]),
        ("mixed", 4, 0.3, [0, 2]),
        ("instance", 8, 0.25, [2]),
        ("pixel", 8, 0.0, [0, 2]),
    ],
)
def test_blockwise_equals_whole_array(tmp_path, mode, connectivity, threshold, classes):
    rng = np.random.default_rng(7)
    pre = random_class_map(rng, (150, 130))
    post = random_class_map(rng, (150, 130))
    post[:70] = np.where(rng.random((70, 130)) < 0.97, pre[:70], post[:70])  # mostly stable
    write_raster(tmp_path / "pre.tif", pre)
    write_raster(tmp_path / "post.tif", post)
    kwargs = dict(
        change_classes=classes,
        mode=mode,
        connectivity=connectivity,
        overlap_threshold=threshold,
        min_instance_pixels=15,
    )
    expected = change_event_generation(pre, post, **kwargs)
    assert expected.any() and (expected == 0).any()
    for block in (16, 37, 64, 512):  # 16 and 37 cut most instances several times
        summary = generate_pseudo_labels(
            tmp_path / "pre.tif", tmp_path / "post.tif", tmp_path / "out.tif",
            block_size=block, **kwargs,
        )  # fmt: skip
        np.testing.assert_array_equal(read(tmp_path / "out.tif"), expected, err_msg=f"{block=}")
        assert summary.change_pixels == np.count_nonzero(expected == 1)
        assert summary.ignored_pixels == np.count_nonzero(expected == 255)


def test_scene_output_is_a_georeferenced_label_cog(tmp_path, scene_maps):
    pre, post, truth = scene_maps
    pre_path = write_raster(tmp_path / "pre.tif", pre)
    post_path = write_raster(tmp_path / "post.tif", post)
    prob = np.full((7, *pre.shape), 30, dtype=np.uint8)
    prob[0] = 250
    prob[0, 0:2] = 100  # 100/255 < 0.8
    write_raster(tmp_path / "prob.tif", prob, class_names=None)
    out = tmp_path / "sub" / "pseudo.tif"
    generate_pseudo_labels(
        pre_path, post_path, out, change_classes="building", prob_pre=tmp_path / "prob.tif",
        block_size=32,
    )  # fmt: skip
    with rasterio.open(out) as ds:
        assert ds.dtypes[0] == "uint8" and ds.count == 1 and ds.nodata == 255
        assert ds.crs.to_string() == CRS and ds.transform == TRANSFORM
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        params = json.loads(ds.tags()["GEOCHANGE_PSEUDO_LABELS"])
        assert params["mode"] == "mixed" and params["change_class_names"] == ["building"]
        labels = ds.read(1)
    expected = (truth["appearing"] | truth["disappearing"]).astype(np.uint8)
    expected[0:2] = 255
    np.testing.assert_array_equal(labels, expected)
    # The label COG and its GIS sidecars, no temporary leftovers.
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "pseudo.qml",
        "pseudo.tif",
        "pseudo.tif.aux.xml",
    ]
    with rasterio.open(out) as ds:
        assert ds.descriptions == ("change (pseudo labels)",)
        assert ds.colormap(1)[0] == (255, 255, 255, 0) and ds.colormap(1)[1] == (255, 0, 255, 255)


def test_output_may_not_be_an_input(tmp_path, scene_maps):
    pre, post, _ = scene_maps
    pre_path = write_raster(tmp_path / "pre.tif", pre)
    post_path = write_raster(tmp_path / "post.tif", post)
    before = pre_path.read_bytes()
    with pytest.raises(OutputError, match="would overwrite the semantic_pre raster"):
        generate_pseudo_labels(pre_path, post_path, pre_path, change_classes="building")
    assert pre_path.read_bytes() == before


def test_class_raster_nodata_is_unknown(tmp_path, scene_maps):
    pre, post, _ = scene_maps
    pre = pre.copy()
    pre[:, :4] = 7
    write_raster(tmp_path / "pre.tif", pre, nodata=7)
    write_raster(tmp_path / "post.tif", post)
    generate_pseudo_labels(tmp_path / "pre.tif", tmp_path / "post.tif", tmp_path / "o.tif")
    assert (read(tmp_path / "o.tif")[:, :4] == 255).all()


def test_scene_errors_before_work(tmp_path, scene_maps):
    pre, post, _ = scene_maps
    write_raster(tmp_path / "pre.tif", pre)
    shifted = TRANSFORM @ Affine.translation(10, 0)
    write_raster(tmp_path / "moved.tif", post, transform=shifted)
    write_raster(tmp_path / "float.tif", post.astype(np.float32))
    write_raster(tmp_path / "names.tif", post, class_names=["roof", *CLASSES[1:]])
    write_raster(tmp_path / "post.tif", post)
    out = tmp_path / "o.tif"
    with pytest.raises(DataError, match="grid"):
        generate_pseudo_labels(tmp_path / "pre.tif", tmp_path / "moved.tif", out)
    with pytest.raises(DataError, match="integer class ids"):
        generate_pseudo_labels(tmp_path / "pre.tif", tmp_path / "float.tif", out)
    with pytest.raises(DataError, match="name their classes differently"):
        generate_pseudo_labels(tmp_path / "pre.tif", tmp_path / "names.tif", out)
    with pytest.raises(DataError, match="not found"):
        generate_pseudo_labels(tmp_path / "missing.tif", tmp_path / "post.tif", out)
    with pytest.raises(ConfigurationError, match="unknown change class"):
        generate_pseudo_labels(tmp_path / "pre.tif", tmp_path / "post.tif", out, change_classes="x")
    assert not out.exists()


def test_synthetic_scene_true_maps_give_true_building_change(synthetic_scene, tmp_path):
    scene = synthetic_scene
    pre, post = read(scene.semantic_pre), read(scene.semantic_post)
    truth = ((pre == BUILDING) ^ (post == BUILDING)).astype(np.uint8)
    assert truth.sum() > 1000
    out = tmp_path / "pseudo.tif"
    # Names from the scene's GEOCHANGE_CLASS_NAMES tag; 256 px blocks cut buildings.
    summary = generate_pseudo_labels(
        scene.semantic_pre, scene.semantic_post, out, change_classes="building", block_size=256
    )
    np.testing.assert_array_equal(read(out), truth)
    stats = scene.stats
    assert summary.change_events == stats["new_buildings"] + stats["demolished_buildings"]
    with rasterio.open(out) as ds, rasterio.open(scene.change) as ref:
        assert ds.crs == ref.crs and ds.transform == ref.transform
        # Building change is part of the scene's change raster (which has all class changes).
        assert (ref.read(1)[truth == 1] == 1).all()


def test_scene_min_instance_area_still_works_with_a_deprecation_warning(tmp_path, scene_maps):
    pre, post, _ = scene_maps
    write_raster(tmp_path / "pre.tif", pre)
    write_raster(tmp_path / "post.tif", post)
    paths = (tmp_path / "pre.tif", tmp_path / "post.tif")
    new = generate_pseudo_labels(*paths, tmp_path / "new.tif", min_instance_pixels=200)
    with pytest.warns(DeprecationWarning, match="min_instance_pixels") as caught:
        old = generate_pseudo_labels(*paths, tmp_path / "old.tif", min_instance_area=200)
    assert caught[0].filename == __file__
    np.testing.assert_array_equal(read(tmp_path / "old.tif"), read(tmp_path / "new.tif"))
    assert old.change_events == new.change_events == 0  # every building is under 200 px
    with rasterio.open(tmp_path / "new.tif") as ds:
        params = json.loads(ds.tags()["GEOCHANGE_PSEUDO_LABELS"])
    assert params["min_instance_pixels"] == params["min_instance_area"] == 200
