"""Opening and reading the label layers of a :class:`~geochange.datasets.BiTemporalRasterDataset`.

A label is a change mask (0/1, 255 = unlabeled) or a semantic class map (ids 0..254), given as
rasters or as a vector file. Opening checks it once, before any training: a raster change label
is probed for its value convention (0/1 or 0/255), every label must overlap the images. Reading
returns uint8 windows on the dataset's grid with ``IGNORE_INDEX`` where unlabeled.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rasterio.enums import Resampling
from torchgeo.datasets import RasterDataset

from geochange.classes import IGNORE_INDEX
from geochange.datasets._direct import direct_window, read_into
from geochange.datasets._layers import (
    RASTER_EXTENSIONS,
    RasterLayer,
    TargetGrid,
    VectorLayer,
    expand_paths,
)
from geochange.errors import DataError
from geochange.io import VECTOR_EXTENSIONS, ChangeMask, check_change_mask

Bounds = tuple[float, float, float, float]


def box_bounds(geom: Any) -> Bounds:
    """A shapely geometry's ``(minx, miny, maxx, maxy)`` as plain floats (for messages)."""
    return tuple(float(v) for v in geom.bounds)  # type: ignore[return-value]


def _is_vector(paths: Any) -> bool:
    if isinstance(paths, str | os.PathLike):
        return Path(paths).suffix.lower() in VECTOR_EXTENSIONS
    return False


@dataclass
class LabelOptions:
    """How labels are opened (the dataset's label arguments, shared by every label)."""

    grid: TargetGrid
    overlap: Any  # shapely geometry of the pre/post overlap
    class_names: list[str] | None
    class_attribute: str
    all_touched: bool
    gdal_cache_mb: int
    mask_values: str


def open_label(
    name: str, source: Any, options: LabelOptions
) -> tuple[RasterLayer | VectorLayer | None, ChangeMask | None]:
    """Open one label (``"change"``, ``"semantic_pre"`` or ``"semantic_post"``).

    Returns:
        The layer (None without ``source``) and, for a raster change label, how its values
        decode to 0/1/255.

    Raises:
        DataError: a label that does not overlap the images, or a change raster whose values
            break the convention.
    """
    if source is None:
        return None, None
    if isinstance(source, RasterDataset):
        source = [Path(f) for f in source.index.filepath]
    if _is_vector(source):
        return _open_vector(name, Path(source), options), None
    files = expand_paths(source, RASTER_EXTENSIONS, f"{name} label")
    layer, _ = RasterLayer.open(
        name,
        files,
        grid=options.grid,
        bands=[1],
        resampling=Resampling.nearest,
        gdal_cache_mb=options.gdal_cache_mb,
    )
    change_mask = _check_change_raster(layer, files, options) if name == "change" else None
    union = shapely.union_all(layer.footprints())
    overlap = options.overlap
    if not union.intersects(overlap) or union.intersection(overlap).area <= 0:
        raise DataError(
            f"{name} label {str(files[0])!r} does not overlap the images "
            f"(label bounds {box_bounds(union)}, image overlap {box_bounds(overlap)})"
        )
    return layer, change_mask


def _open_vector(name: str, path: Path, options: LabelOptions) -> VectorLayer:
    layer = VectorLayer.open(
        name,
        path,
        grid=options.grid,
        class_attribute=None if name == "change" else options.class_attribute,
        class_names=options.class_names,
        background=0 if name == "change" else IGNORE_INDEX,
        all_touched=options.all_touched,
    )
    extent = layer.total_bounds()
    if any(math.isnan(v) for v in extent):
        # No features: a valid label saying "nothing of this kind here" (e.g. a scene
        # without change); every pixel gets the background value.
        warnings.warn(
            f"{name} label {str(path)!r} has no features: every pixel is background",
            stacklevel=4,
        )
        return layer
    if not shapely.box(*extent).intersects(options.overlap):
        raise DataError(
            f"{name} label {str(path)!r} does not overlap the images "
            f"(label bounds {extent}, image overlap {box_bounds(options.overlap)})"
        )
    return layer


def _check_change_raster(
    layer: RasterLayer, files: list[Path], options: LabelOptions
) -> ChangeMask:
    """Probe every change raster's values now (a sampled read), not at the first bad batch."""
    masks = [
        check_change_mask(info.path, mask_values=options.mask_values, what="change label")
        for info in layer.files
    ]
    for info, mask in zip(layer.files, masks, strict=True):
        info.nodata = mask.nodata  # None where a 0/255 label's nodata tag is disregarded
    where = str(files[0]) if len(files) == 1 else f"{files[0]} (or {len(files) - 1} more)"
    # Nodata is handled per file by the layer's validity mask; this decodes the values.
    confirmed = all(mask.confirmed for mask in masks)
    return ChangeMask(where, masks[0].values, what="change label", confirmed=confirmed)


def derive_change(sem_pre: np.ndarray, sem_post: np.ndarray) -> np.ndarray:
    """The change mask of two semantic windows: class differs, 255 where either is unlabeled."""
    derived = (sem_pre != sem_post).astype(np.uint8)
    derived[(sem_pre == IGNORE_INDEX) | (sem_post == IGNORE_INDEX)] = IGNORE_INDEX
    return derived


def read_label(
    layer: RasterLayer | VectorLayer | None,
    bounds: Bounds,
    res: tuple[float, float],
    change_mask: ChangeMask | None = None,
) -> np.ndarray | None:
    """One label's window as uint8 ``[h, w]`` (255 = unlabeled); None without a layer.

    Args:
        layer: the label layer.
        bounds: window in the dataset CRS.
        res: output resolution.
        change_mask: decoding of a change raster's values (None for semantic labels).

    Raises:
        DataError: semantic values outside the integers 0..255.
    """
    if layer is None:
        return None
    if isinstance(layer, VectorLayer):
        return np.asarray(layer.read(bounds, res))
    window = direct_window(layer, bounds, res)
    if window is not None and layer.files[0].dtype == "uint8":
        # A uint8 label holds only 0..255: read it as it is, no wider copy to check.
        data = np.empty((1, int(window.height), int(window.width)), np.uint8)
        direct_valid = read_into(layer, window, data)
        if change_mask is not None:
            return change_mask.decode(data[0], direct_valid)
        if direct_valid is not None:
            data[0][~direct_valid] = IGNORE_INDEX
        return data[0]
    # Read in a type that holds every file value (an int16 -1 must not wrap to 255).
    dtype = np.result_type(*(np.dtype(f.dtype) for f in layer.files), np.int16)
    wide, label_valid = layer.read(bounds, res, IGNORE_INDEX, dtype=dtype)
    if change_mask is not None:
        return change_mask.decode(wide[0], label_valid)
    return _checked_classes(layer, wide[0], label_valid)


def _checked_classes(layer: RasterLayer, label: np.ndarray, valid: np.ndarray) -> np.ndarray:
    bad = valid & ((label < 0) | (label > IGNORE_INDEX))
    if label.dtype.kind == "f":
        bad |= valid & (label != np.round(label))
    if bad.any():
        values = np.unique(label[bad])
        shown = ", ".join(f"{v:g}" for v in values[:8].tolist())
        raise DataError(
            f"{layer.name} label {str(layer.files[0].path)!r} holds "
            f"value{'s' if values.size > 1 else ''} {shown}; class ids must be integers "
            f"0..254 ({IGNORE_INDEX} or the nodata value = unlabeled)"
        )
    out = label.astype(np.uint8)
    out[~valid] = IGNORE_INDEX
    return out
