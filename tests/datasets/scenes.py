"""Tiny GeoTIFF / vector scene builders shared by the dataset, sampler and datamodule tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.transform import from_origin

CRS = "EPSG:32631"
ORIGIN = (500000.0, 4000000.0)


def write_tif(
    path: Path,
    array: np.ndarray,
    *,
    transform: Affine | None = None,
    crs: str | None = CRS,
    nodata: float | None = None,
) -> Path:
    """Write ``array`` (``[C, H, W]`` or ``[H, W]``) as a tiled GeoTIFF."""
    if array.ndim == 2:
        array = array[None]
    transform = transform or from_origin(*ORIGIN, 1.0, 1.0)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=array.shape[1],
        width=array.shape[2],
        count=array.shape[0],
        dtype=array.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        tiled=True,
        blockxsize=64,
        blockysize=64,
    ) as dst:
        dst.write(array)
    return path


@dataclass
class Pair:
    """Paths and in-memory arrays of a generated scene pair."""

    root: Path
    pre: Path
    post: Path
    change: Path
    semantic_pre: Path
    semantic_post: Path
    change_vector: Path
    semantic_vector: Path
    pre_array: np.ndarray
    post_array: np.ndarray
    change_array: np.ndarray
    sem_pre_array: np.ndarray
    sem_post_array: np.ndarray


def make_pair(root: Path, size: int = 256, bands: int = 3, seed: int = 0) -> Pair:
    """A ``size`` x ``size`` pair at 1 m with two changed rectangles (raster and vector labels).

    Changed pixels: rows 40-79 x cols 100-159 (class 4 -> 0) and rows 200-219 x cols 20-49
    (class 5 -> 2). Pixel values differ between dates only there (plus 3 per band elsewhere).
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pre = rng.integers(20, 200, (bands, size, size), dtype=np.uint8)
    post = (pre + 3).astype(np.uint8)
    sem_pre = np.full((size, size), 5, dtype=np.uint8)
    sem_pre[: size // 2] = 4
    sem_post = sem_pre.copy()
    boxes = [((40, 80, 100, 160), 0), ((200, 220, 20, 50), 2)]
    for (r0, r1, c0, c1), new_class in boxes:
        sem_post[r0:r1, c0:c1] = new_class
        post[:, r0:r1, c0:c1] = 250
    change = (sem_pre != sem_post).astype(np.uint8)
    paths = {
        "pre": write_tif(root / "pre.tif", pre),
        "post": write_tif(root / "post.tif", post),
        "change": write_tif(root / "change.tif", change, nodata=255),
        "semantic_pre": write_tif(root / "semantic_pre.tif", sem_pre, nodata=255),
        "semantic_post": write_tif(root / "semantic_post.tif", sem_post, nodata=255),
    }
    x0, y0 = ORIGIN
    polygons = [shapely.box(x0 + c0, y0 - r1, x0 + c1, y0 - r0) for (r0, r1, c0, c1), _ in boxes]
    change_vector = root / "change.gpkg"
    gpd.GeoDataFrame({"id": [1, 2]}, geometry=polygons, crs=CRS).to_file(change_vector)
    # Per-date footprints of the post date with a class attribute (names).
    top = shapely.box(x0, y0 - size / 2, x0 + size, y0)
    bottom = shapely.box(x0, y0 - size, x0 + size, y0 - size / 2)
    semantic_vector = root / "semantic_post.gpkg"
    gpd.GeoDataFrame(
        {"class": ["tree", "cropland", "building", "water"]},
        geometry=[top.difference(polygons[0]), bottom.difference(polygons[1]), *polygons],
        crs=CRS,
    ).to_file(semantic_vector)
    return Pair(
        root=root,
        change_vector=change_vector,
        semantic_vector=semantic_vector,
        pre_array=pre,
        post_array=post,
        change_array=change,
        sem_pre_array=sem_pre,
        sem_post_array=sem_post,
        **paths,
    )
