"""Tests of geochange.synthetic.layout: land-cover transitions, buildings, parcels."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
import shapely

from geochange.synthetic import CLASS_NAMES, Scene
from geochange.synthetic.layout import _Layout
from tests.builders import read_raster


def test_change_equals_semantic_transitions(scene: Scene) -> None:
    pre, post, change = (
        read_raster(scene.semantic_pre, 1),
        read_raster(scene.semantic_post, 1),
        read_raster(scene.change, 1),
    )
    np.testing.assert_array_equal(change, (pre != post).astype(np.uint8))
    assert set(np.unique(pre)) <= set(range(7)) and set(np.unique(post)) <= set(range(7))
    assert len(np.unique(pre)) >= 5  # a varied scene, not a single class
    fraction = change.mean()
    assert 0.002 < fraction < 0.3
    assert scene.stats["changed_pixels"] == int(change.sum())
    # Transitions are the documented ones only.
    moved = pre != post
    pairs = set(zip(pre[moved].tolist(), post[moved].tolist(), strict=True))
    building, bare, tree, crop = 0, 3, 4, 5
    allowed_land_cover = {(crop, bare), (tree, crop)}
    for before, after in pairs:
        assert before == building or after == building or (before, after) in allowed_land_cover, (
            before,
            after,
        )
    assert (building, bare) in pairs  # demolished buildings leave bare land


def test_changed_buildings_match_change_pixels(scene: Scene) -> None:
    frame = pyogrio.read_dataframe(scene.changed_buildings, layer="changed_buildings")
    assert set(frame["change_type"]) == {"new building", "demolished building"}
    assert {"building_id", "from_class", "to_class", "area_m2"} <= set(frame.columns)
    pre, post, change = (
        read_raster(scene.semantic_pre, 1),
        read_raster(scene.semantic_post, 1),
        read_raster(scene.change, 1),
    )
    pixel_area = 0.6 * 0.6
    with rasterio.open(scene.change) as ds:
        transform, shape = ds.transform, ds.shape
    for row in frame.itertuples():
        inside = rasterio.features.geometry_mask(
            [row.geometry], out_shape=shape, transform=transform, invert=True
        )
        if row.change_type == "new building":
            changed = inside & (change == 1) & (post == 0) & (pre != 0)
            assert row.to_class == "building" and row.from_class in CLASS_NAMES
        else:
            changed = inside & (change == 1) & (pre == 0) & (post != 0)
            assert row.from_class == "building"
        # Area agreement within one pixel along the perimeter.
        tolerance = row.geometry.length * 0.6
        assert abs(changed.sum() * pixel_area - row.geometry.area) <= tolerance, row
        assert row.area_m2 == pytest.approx(row.geometry.area)
        assert shapely.get_num_coordinates(row.geometry) == 5  # a rotated rectangle
    # Every changed building pixel belongs to one of the polygons.
    building_change = (pre == 0) != (post == 0)
    covered = rasterio.features.geometry_mask(
        list(frame.geometry), out_shape=shape, transform=transform, invert=True
    )
    assert (building_change & ~covered).sum() <= 0.01 * building_change.sum()


def test_buildings_do_not_depend_on_the_cells_asked_for_and_never_overlap() -> None:
    layout = _Layout(4)
    whole = layout.buildings(0, 4, 0, 4)
    part = layout.buildings(1, 3, 2, 4)
    assert len(whole["id"]) > 20 and 0 < len(part["id"]) < len(whole["id"])
    index = {int(i): n for n, i in enumerate(whole["id"])}
    same = [index[int(i)] for i in part["id"]]
    np.testing.assert_array_equal(whole["corners"][same], part["corners"])
    np.testing.assert_array_equal(whole["state"][same], part["state"])
    polygons = shapely.polygons(whole["corners"])
    union = shapely.union_all(polygons)
    assert union.area == pytest.approx(shapely.area(polygons).sum())
    assert not layout.water(whole["corners"][..., 1], whole["corners"][..., 0]).any()


def test_parcels_are_the_same_on_a_grid_and_at_scattered_points() -> None:
    layout = _Layout(7)
    y = np.arange(-300, 500, 3, dtype=np.float64)[:, None] + 0.5
    x = np.arange(900, 1700, 3, dtype=np.float64)[None, :] + 0.5
    grid = layout.parcels(y, x)
    yy, xx = (a.ravel() for a in np.broadcast_arrays(y, x))
    points = layout.parcels(yy, xx)
    for name in ("class0", "class1", "orientation", "tone"):
        np.testing.assert_array_equal(
            grid.attrs[name][grid.index].ravel(), points.attrs[name][points.index], name
        )
    assert len(np.unique(grid.index)) > 4  # several parcels, so the test can fail
