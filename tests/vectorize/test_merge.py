"""geochange.vectorize.merge: polygons joined across block seams equal whole-raster polygonizing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.features

from geochange.vectorize import (
    vectorize_changes,
)

from .conftest import (
    CRS,
    DATA,
    assert_same_polygons,
    stress_mask,
    whole_raster_polygons,
    write_raster,
)


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("block_size", [8, 16, 13, 4096])
def test_stress_mask_equals_whole_raster(
    stress_path: Path, connectivity: int, block_size: int
) -> None:
    frame = vectorize_changes(
        stress_path, block_size=block_size, connectivity=connectivity, workers=1
    )
    mask = stress_mask()
    reference = whole_raster_polygons((mask == 1).astype(np.uint8), connectivity)
    assert_same_polygons(frame, reference)
    assert str(frame.crs) == CRS
    assert frame["change_id"].tolist() == list(range(1, len(frame) + 1))
    # The ring keeps its hole: its area excludes the 9x9 hole.
    ring = frame[frame["pixel_count"] == 13 * 13 - 9 * 9]
    assert len(ring) == 1 and len(ring.geometry.iloc[0].interiors) == 1


def test_connectivity_changes_object_count(stress_path: Path) -> None:
    four = vectorize_changes(stress_path, block_size=8, connectivity=4, workers=1)
    eight = vectorize_changes(stress_path, block_size=8, connectivity=8, workers=1)
    # The two diagonal pairs are 4 objects under 4-connectivity and 2 under 8.
    assert len(four) - len(eight) == 2
    joined = eight[eight["pixel_count"] == 2]
    assert len(joined) == 2
    assert all(g.geom_type == "MultiPolygon" and g.is_valid for g in joined.geometry)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_random_noise_equals_whole_raster(tmp_path: Path, connectivity: int) -> None:
    # Dense noise: many objects touching seams, holes, diagonal contacts everywhere.
    rng = np.random.default_rng(7)
    mask = (rng.random((90, 77)) < 0.45).astype(np.uint8)
    path = write_raster(tmp_path / "noise.tif", mask)
    reference = whole_raster_polygons(mask, connectivity)
    for block_size in (7, 32):
        frame = vectorize_changes(path, block_size=block_size, connectivity=connectivity, workers=1)
        assert_same_polygons(frame, reference)


def test_real_levircd_labels_equal_whole_raster(tmp_path: Path) -> None:
    labels = sorted((DATA / "levircd-samples" / "label").glob("*.png"))[:4]
    if len(labels) < 4:
        pytest.skip("shared LEVIR-CD samples not available")
    tiles = []
    for path in labels:
        with rasterio.open(path) as ds:
            tiles.append((ds.read(1) > 0).astype(np.uint8))
    mosaic = np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]])
    path = write_raster(tmp_path / "levir.tif", mosaic)
    frame = vectorize_changes(path, block_size=100, workers=1)
    assert len(frame) > 10
    assert_same_polygons(frame, whole_raster_polygons(mosaic, 4))
