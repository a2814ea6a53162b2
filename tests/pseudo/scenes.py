"""Class maps for the pseudo-label tests: their grid, hand-built and random maps, raster I/O."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import rasterio
import scipy.ndimage as ndi
from affine import Affine

from tests import builders

CRS = "EPSG:32650"
TRANSFORM = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_000_000.0)
CLASSES = ["building", "road", "water", "bare land", "tree", "cropland", "others"]
BUILDING, ROAD, TREE, OTHERS = 0, 1, 4, 6


# Class maps on this grid, tagged with the LsSCD class names unless told otherwise.
write_raster = partial(builders.write_raster, crs=CRS, transform=TRANSFORM, class_names=CLASSES)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def hand_built_maps() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Hand-built 64 x 96 maps: one appearing, one disappearing, one shifted building."""
    pre = np.full((64, 96), OTHERS, dtype=np.uint8)
    post = pre.copy()
    pre[:, 60:64] = ROAD
    post[:, 60:64] = ROAD
    appearing = np.zeros(pre.shape, bool)
    appearing[5:15, 5:20] = True
    post[appearing] = BUILDING
    disappearing = np.zeros(pre.shape, bool)
    disappearing[30:40, 5:15] = True
    pre[disappearing] = BUILDING
    post[disappearing] = TREE  # demolished, trees planted
    # The same building seen 2 px shifted (registration error / boundary noise): not a change.
    pre[20:30, 30:45] = BUILDING
    post[22:32, 32:47] = BUILDING
    # A road that became cropland is no building change.
    pre[50:60, 70:90] = ROAD
    post[50:60, 70:90] = 5
    return pre, post, {"appearing": appearing, "disappearing": disappearing}


def random_class_map(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Blobby class map (smoothed noise, 4 classes) with a few unknown pixels."""
    noise = ndi.gaussian_filter(rng.normal(size=shape), 2.5)
    classes = np.digitize(noise, np.quantile(noise, [0.35, 0.55, 0.75])).astype(np.uint8)
    classes[rng.random(shape) < 0.005] = 255
    return classes


def building_scene(rng: np.random.Generator, size: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """Land cover with separated rectangular buildings; some demolished, some new."""
    noise = ndi.gaussian_filter(rng.normal(size=(size, size)), 8)
    land = np.array([TREE, 5, 3, OTHERS], dtype=np.uint8)[
        np.digitize(noise, np.quantile(noise, [0.25, 0.5, 0.75]))
    ]
    pre, post = land.copy(), land.copy()
    for r in range(4, size - 24, 24):
        for c in range(4, size - 24, 24):
            h, w = rng.integers(4, 20, 2)
            fate = rng.random()
            if fate < 0.2:
                pre[r : r + h, c : c + w] = BUILDING
                post[r : r + h, c : c + w] = 3  # demolished: bare land
            elif fate < 0.4:
                post[r : r + h, c : c + w] = BUILDING
            else:
                pre[r : r + h, c : c + w] = BUILDING
                post[r : r + h, c : c + w] = BUILDING
    return pre, post
