"""Shared scenes of the vectorize tests: seam-crossing stress mask, semantic pair, references."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from shapely.geometry import shape

from tests import builders

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
CRS = "EPSG:32650"
RES = 0.6
TRANSFORM = Affine(RES, 0.0, 500_000.0, 0.0, -RES, 4_000_000.0)
CLASSES = ["building", "road", "water", "bare land", "tree", "cropland", "others"]

# Rasters on this module's 0.6 m grid with nodata 255.
write_raster = partial(builders.write_raster, crs=CRS, transform=TRANSFORM, nodata=255)


def whole_raster_polygons(
    values: np.ndarray, connectivity: int, transform: Affine = TRANSFORM
) -> list[shapely.Geometry]:
    """The reference: polygonize the whole array at once (GDAL), valid geometries."""
    geoms = [
        shape(geojson)
        for geojson, _ in rasterio.features.shapes(
            values.astype(np.int32),
            mask=values > 0,
            connectivity=connectivity,
            transform=transform,
        )
    ]
    return [g if g.is_valid else shapely.make_valid(g) for g in geoms]


def sort_key(geom: shapely.Geometry) -> tuple[float, ...]:
    minx, miny, maxx, maxy = geom.bounds
    return (-maxy, minx, -miny, maxx, geom.area)


def assert_same_polygons(frame, reference: list[shapely.Geometry]) -> None:
    ours = sorted(frame.geometry, key=sort_key)
    ref = sorted(reference, key=sort_key)
    assert len(ours) == len(ref)
    assert shapely.is_valid(np.array(ours, dtype=object)).all()
    for mine, theirs in zip(ours, ref, strict=True):
        assert mine.equals(theirs), (mine.wkt, theirs.wkt)
        # Same vertices (up to ring start/orientation), not just the same point set.
        assert shapely.equals_exact(
            shapely.normalize(mine), shapely.normalize(theirs), tolerance=1e-6
        ), (mine.wkt, theirs.wkt)
    pixel_area = RES * RES
    np.testing.assert_allclose(frame.geometry.area, frame["pixel_count"] * pixel_area, rtol=1e-9)
    np.testing.assert_allclose(frame["area_m2"], frame["pixel_count"] * pixel_area, rtol=1e-9)


def stress_mask() -> np.ndarray:
    """A 53 x 61 mask (block size 8 does not divide it) with seam-crossing shapes."""
    m = np.zeros((53, 61), np.uint8)
    m[2:6, 5:12] = 1  # spans the vertical seam at x=8 (2 blocks)
    m[6:11, 14:19] = 1  # spans the corner (8, 16): 4 blocks
    m[18:31, 18:31] = 1  # ring with a hole crossing seams at 24
    m[20:29, 20:29] = 0
    m[23:26, 23:26] = 1  # island inside the hole (separate polygon)
    m[7, 31] = 1  # diagonal pair across the corner (8, 32)
    m[8, 32] = 1
    m[15, 39] = 1  # diagonal across a horizontal seam (y=16)
    m[16, 40] = 1
    m[0, 0:3] = 1  # raster border, top-left
    m[50:53, 58:61] = 1  # bottom-right corner (partial block)
    m[35:52, 2:4] = 1  # U shape: arms join below, through several blocks
    m[35:52, 12:14] = 1
    m[50:52, 2:14] = 1
    m[40:47, 44:56] = 1  # shape whose hole reaches the seam at x=48 with a 1-px gap
    m[42:45, 46:54] = 0
    m[43, 50] = 255  # nodata counts as no change
    return m


@pytest.fixture(scope="module")
def stress_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_raster(tmp_path_factory.mktemp("stress") / "change.tif", stress_mask())


def semantic_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """pre/post classes, change and probability with known building changes across seams."""
    pre = np.full((40, 40), 5, np.uint8)  # cropland
    post = pre.copy()
    pre[20:40, 30:40] = 3  # bare land in the south-east
    post[20:40, 30:40] = 3
    post[5:14, 5:14] = 0  # new building over a seam corner (block 8)
    post[30:36, 26:35] = 0  # new building over cropland and bare land
    pre[22:28, 2:12] = 0  # demolished building, becomes bare land
    post[22:28, 2:12] = 3
    post[5:14, 14:18] = 1  # new road touching the new building (stays a separate polygon)
    pre[0, 39] = 255  # nodata classes
    change = (pre != post).astype(np.uint8)
    prob = np.zeros((40, 40), np.uint8)
    prob[change == 1] = 200
    prob[6, 6] = 255
    return pre, post, change, prob


@pytest.fixture
def semantic_paths(tmp_path: Path) -> SimpleNamespace:
    pre, post, change, prob = semantic_scene()
    return SimpleNamespace(
        change=write_raster(tmp_path / "change.tif", change),
        probability=write_raster(tmp_path / "prob.tif", prob, nodata=None),
        semantic_pre=write_raster(tmp_path / "pre.tif", pre, class_names=CLASSES),
        semantic_post=write_raster(tmp_path / "post.tif", post, class_names=CLASSES),
        transition=None,
        class_names=None,
    )
