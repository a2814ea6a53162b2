"""geochange.vectorize.schema: output fields, change-type names and measures."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from affine import Affine

from geochange.vectorize import (
    SCHEMA,
    change_type_name,
    vectorize_changes,
)

from .conftest import (
    assert_same_polygons,
    semantic_scene,
    whole_raster_polygons,
    write_raster,
)


def test_change_type_name() -> None:
    assert change_type_name("cropland", "building") == "new building"
    assert change_type_name("building", "road") == "demolished building"
    assert change_type_name("tree", "road") == "tree → road"
    assert change_type_name(None, None) is None


def test_semantic_attributes_and_change_types(semantic_paths: SimpleNamespace) -> None:
    # A PredictionResult-like object (duck typing); class names from the rasters' tag.
    frame = vectorize_changes(semantic_paths, block_size=8, workers=1)
    assert list(frame.columns) == [*SCHEMA, "geometry"]
    by_type = frame.groupby("change_type")["pixel_count"].apply(sorted).to_dict()
    assert by_type["new building"] == [6 * 9, 9 * 9]
    assert by_type["demolished building"] == [6 * 10]
    assert by_type["cropland → road"] == [9 * 4]
    new = frame[frame["change_type"] == "new building"].sort_values("pixel_count")
    # The building over cropland and bare land: to building, from the majority (cropland 4x6
    # vs bare land 5x6 -> bare land).
    assert new["to_class"].tolist() == ["building", "building"]
    assert new["from_class"].tolist() == ["bare land", "cropland"]
    big = new.iloc[1]
    assert big["max_prob"] == pytest.approx(1.0)
    assert big["mean_prob"] == pytest.approx((200 * 80 + 255) / 81 / 255)
    demolished = frame[frame["change_type"] == "demolished building"].iloc[0]
    assert (demolished["from_class"], demolished["to_class"]) == ("building", "bare land")
    # Geometries equal whole-raster polygonization of the change-type regions.
    pre, post, change, _ = semantic_scene()
    codes = np.where(change == 1, 3 + pre.astype(np.int32) * 8 + post, 0)
    codes[(change == 1) & (post == 0)] = 1
    codes[(change == 1) & (pre == 0)] = 2
    codes[(change == 1) & (pre == 255)] = 3 + 7 * 8 + post[(change == 1) & (pre == 255)]
    assert_same_polygons(frame, whole_raster_polygons(codes, 4))


def test_geographic_crs_area_in_square_metres(tmp_path: Path) -> None:
    transform = Affine(1e-4, 0, 10.0, 0, -1e-4, 45.0)
    mask = np.zeros((10, 10), np.uint8)
    mask[2:5, 2:5] = 1
    path = write_raster(tmp_path / "geo.tif", mask, transform=transform, crs="EPSG:4326")
    frame = vectorize_changes(path, workers=1)
    # 3 x 3 pixels of ~7.87 m x 11.1 m at 45° N.
    assert 700 < frame["area_m2"].iloc[0] < 850
    assert frame["pixel_count"].iloc[0] == 9
