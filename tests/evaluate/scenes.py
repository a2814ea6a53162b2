"""Builders of the evaluation tests: hand-built change scenes with known object outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine

from tests import builders

LSSCD = ["building", "road", "water", "bare land", "tree", "cropland", "others"]
TRANSFORM = Affine(0.5, 0, 500_000.0, 0, -0.5, 4_600_000.0)
CRS = "EPSG:32631"
SIZE = 64


@dataclass
class HandScene:
    pred: Path
    ref: Path
    pred_array: np.ndarray
    ref_array: np.ndarray
    directory: Path


# uint8 class maps on this directory's grid, nodata 255, tiled in 16 px blocks (several blocks).
write_raster = partial(
    builders.write_raster, crs=CRS, transform=TRANSFORM, nodata=255, dtype="uint8", block=16
)


def hand_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Prediction and reference with one object of every kind (row/col pixel boxes).

    - good match: ref [2:10, 2:10], pred [2:10, 3:10] (IoU 0.875)
    - split: ref [2:12, 20:40] (200 px), pred [2:12, 20:29] + [2:12, 31:40] (IoU 0.45 each)
    - merged: ref [20:28, 2:10] + [20:28, 12:20], pred [20:28, 2:20] (IoU 0.44 each)
    - miss: ref [40:46, 40:46]
    - false alarm: pred [50:56, 2:8]
    - block-edge object: ref and pred [28:36, 40:56] (crosses rows 32 and cols 48 with 16-px blocks)
    - ignored rows: ref 255 on rows 60..63
    """
    ref = np.zeros((SIZE, SIZE), np.uint8)
    pred = np.zeros((SIZE, SIZE), np.uint8)
    ref[2:10, 2:10] = 1
    pred[2:10, 3:10] = 1
    ref[2:12, 20:40] = 1
    pred[2:12, 20:29] = 1
    pred[2:12, 31:40] = 1
    ref[20:28, 2:10] = 1
    ref[20:28, 12:20] = 1
    pred[20:28, 2:20] = 1
    ref[40:46, 40:46] = 1
    pred[50:56, 2:8] = 1
    ref[28:36, 40:56] = 1
    pred[28:36, 40:56] = 1
    ref[60:64, :] = 255
    return pred, ref


DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
FAST = {"block_size": 16, "vectorize_block_size": 16, "workers": 1}


def pixel_box(row0: int, row1: int, col0: int, col1: int) -> shapely.Polygon:
    """Map-coordinate polygon of the pixel rows row0..row1-1, cols col0..col1-1."""
    x0, y0 = TRANSFORM @ (col0, row0)
    x1, y1 = TRANSFORM @ (col1, row1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def status_at(frame: gpd.GeoDataFrame, geometry: shapely.Geometry) -> list[str]:
    hits = frame[frame.geometry.intersects(geometry.centroid)]
    return list(hits["status"])


def levir_pair(tmp_path: Path, name: str, model: str) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    from PIL import Image

    root = DATA / "levircd-samples"
    ref = (np.asarray(Image.open(root / "label" / name)) > 0).astype(np.uint8)
    pred = (np.asarray(Image.open(root / model / name)) > 0).astype(np.uint8)
    return (
        write_raster(tmp_path / f"pred_{name}.tif", pred),
        write_raster(tmp_path / f"ref_{name}.tif", ref),
        pred,
        ref,
    )
