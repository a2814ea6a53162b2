"""geochange.vectorize.geometry: simplified and regularized outlines."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from shapely.geometry import shape

from geochange.vectorize import (
    regularize_polygon,
    vectorize_changes,
)

from .conftest import (
    RES,
    write_raster,
)


def test_regularize_rotated_building() -> None:
    rect = shapely.affinity.rotate(shapely.box(0, 0, 20, 10), 30, origin=(0, 0))
    staircase = rasterio.features.shapes(
        rasterio.features.rasterize(
            [rect], out_shape=(40, 40), transform=Affine.translation(-15, -5)
        ),
        connectivity=4,
        transform=Affine.translation(-15, -5),
    )
    pixels = max((shape(g) for g, v in staircase if v == 1), key=lambda g: g.area)
    square = regularize_polygon(pixels, "rectangle")
    assert square.is_valid and len(square.exterior.coords) == 5
    assert square.symmetric_difference(rect).area / rect.area < 0.15
    ortho = regularize_polygon(pixels, "orthogonal")
    assert ortho.is_valid
    coords = np.asarray(ortho.exterior.coords)
    edges = np.diff(coords, axis=0)
    angles = np.degrees(np.arctan2(edges[:, 1], edges[:, 0])) % 90
    assert np.all((np.abs(angles - angles[0]) < 1e-6) | (np.abs(angles - angles[0]) > 90 - 1e-6))
    assert len(coords) < len(pixels.exterior.coords)


def test_simplify_keeps_valid_non_overlapping(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    mask = (rng.random((60, 60)) < 0.55).astype(np.uint8)
    path = write_raster(tmp_path / "noise.tif", mask)
    plain = vectorize_changes(path, block_size=16, workers=1)
    simple = vectorize_changes(path, block_size=16, workers=1, simplify=2 * RES)
    assert len(simple) == len(plain)
    assert simple.geometry.is_valid.all() and not simple.geometry.is_empty.any()
    assert (
        shapely.get_num_coordinates(simple.geometry.values).sum()
        < shapely.get_num_coordinates(plain.geometry.values).sum()
    )
    # No new overlaps between neighbouring polygons.
    union_area = shapely.union_all(simple.geometry.values).area
    assert union_area == pytest.approx(simple.geometry.area.sum(), rel=1e-9)


def test_regularize_only_building_types(semantic_paths: SimpleNamespace) -> None:
    frame = vectorize_changes(semantic_paths, workers=1, regularize="rectangle")
    plain = vectorize_changes(semantic_paths, workers=1)
    road = frame[frame["change_type"] == "cropland → road"].geometry.iloc[0]
    assert road.equals(plain[plain["change_type"] == "cropland → road"].geometry.iloc[0])
    assert frame.geometry.is_valid.all()
