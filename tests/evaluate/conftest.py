"""Hand-built change scenes with known object-level outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest
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


@pytest.fixture
def hand_scene(tmp_path: Path) -> HandScene:
    pred, ref = hand_arrays()
    return HandScene(
        pred=write_raster(tmp_path / "change.tif", pred),
        ref=write_raster(tmp_path / "reference.tif", ref),
        pred_array=pred,
        ref_array=ref,
        directory=tmp_path,
    )
