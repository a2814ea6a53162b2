"""Resolving and checking the input rasters of a vectorization (one grid), and their class names."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.crs
import rasterio.features
import rasterio.windows
from affine import Affine

from geochange.errors import ConfigurationError, DataError
from geochange.io import (
    PROBABILITY_SCALE_TAG,
    ChangeMask,
    check_change_mask,
    grid_mismatch,
    open_raster,
    read_class_names_tag,
)


@dataclass(frozen=True)
class _Inputs:
    """Validated input rasters and the grid they share."""

    change: Path
    probability: Path | None
    semantic_pre: Path | None
    semantic_post: Path | None
    height: int
    width: int
    transform: Affine
    crs: Any
    change_mask: ChangeMask
    probability_scale: float
    probability_nodata: float | None
    class_names: list[str] | None


def read_class_names(path: str | os.PathLike[str]) -> list[str] | None:
    """Read the ``GEOCHANGE_CLASS_NAMES`` tag (JSON list of names) of a class raster.

    Args:
        path: a class raster written by geochange (or any raster carrying the tag on the
            dataset or on its first band).

    Returns:
        The class names in class-id order, or ``None`` when the raster has no such tag.

    Raises:
        DataError: if the tag is present but is not a JSON list of strings.
    """
    with open_raster(path) as ds:
        return read_class_names_tag(ds, str(path))


def _as_path(value: Any, what: str) -> Path | None:
    if value is None:
        return None
    if isinstance(value, str | os.PathLike):
        return Path(value)
    raise ConfigurationError(f"{what} must be a raster path, got {type(value).__name__}")


def _check_same_grid(path: Path, ref: rasterio.DatasetReader, what: str) -> rasterio.DatasetReader:
    ds = open_raster(path)
    if ds.count != 1:
        ds.close()
        raise DataError(f"{what} raster {str(path)!r} has {ds.count} bands; expected one band")
    mismatch = grid_mismatch(ds, ref)
    if mismatch == "shape":
        ds.close()
        raise DataError(
            f"{what} raster {str(path)!r} is not on the change raster's grid: "
            f"{ds.width}x{ds.height} px with transform {tuple(ds.transform)[:6]} vs "
            f"{ref.width}x{ref.height} px with {tuple(ref.transform)[:6]} "
            "(reproject it onto the change raster's grid first, e.g. with rasterio.warp)"
        )
    if mismatch == "crs":
        ds.close()
        raise DataError(
            f"{what} raster {str(path)!r} has CRS {ds.crs} but the change raster has {ref.crs}"
        )
    return ds


def _resolve_inputs(
    change: Any,
    probability: Any,
    semantic_pre: Any,
    semantic_post: Any,
    class_names: Sequence[str] | None,
    mask_values: str = "auto",
) -> _Inputs:
    """Check the input rasters (bands, data types, one grid) and read their class names."""
    change, probability, semantic_pre, semantic_post, class_names = _unpack_products(
        change, probability, semantic_pre, semantic_post, class_names
    )
    change_path = _as_path(change, "change")
    assert change_path is not None
    probability_path = _as_path(probability, "probability")
    pre_path = _as_path(semantic_pre, "semantic_pre")
    post_path = _as_path(semantic_post, "semantic_post")
    if (pre_path is None) != (post_path is None):
        raise ConfigurationError(
            "semantic_pre and semantic_post must be given together (from/to classes need both)"
        )

    with open_raster(change_path) as ref:
        change_mask = _check_change_raster(change_path, ref, mask_values)
        probability_scale = 1.0
        probability_nodata = None
        if probability_path is not None:
            probability_scale, probability_nodata = _probability_encoding(probability_path, ref)
        for path, what in ((pre_path, "semantic_pre"), (post_path, "semantic_post")):
            if path is not None:
                _check_class_raster(path, ref, what)
        names: list[str] | None = list(class_names) if class_names is not None else None
        if names is None and pre_path is not None and post_path is not None:
            names = read_class_names(pre_path) or read_class_names(post_path)
        return _Inputs(
            change=change_path,
            probability=probability_path,
            semantic_pre=pre_path,
            semantic_post=post_path,
            height=ref.height,
            width=ref.width,
            transform=ref.transform,
            crs=ref.crs,
            change_mask=change_mask,
            probability_scale=probability_scale,
            probability_nodata=probability_nodata,
            class_names=names,
        )


def _unpack_products(
    change: Any,
    probability: Any,
    semantic_pre: Any,
    semantic_post: Any,
    class_names: Sequence[str] | None,
) -> tuple[Any, Any, Any, Any, Sequence[str] | None]:
    """Take the rasters of a :class:`~geochange.io.ChangeProducts` unless given explicitly."""
    # Duck typing for geochange.predict.PredictionResult (or anything alike).
    if isinstance(change, str | os.PathLike) or not hasattr(change, "change"):
        return change, probability, semantic_pre, semantic_post, class_names
    result = change
    change = result.change
    probability = probability if probability is not None else getattr(result, "probability", None)
    semantic_pre = (
        semantic_pre if semantic_pre is not None else getattr(result, "semantic_pre", None)
    )
    semantic_post = (
        semantic_post if semantic_post is not None else getattr(result, "semantic_post", None)
    )
    if class_names is None and getattr(result, "class_names", None):
        class_names = list(result.class_names)
    if change is None:
        raise DataError("the prediction result has no change raster to vectorize")
    return change, probability, semantic_pre, semantic_post, class_names


def _check_change_raster(path: Path, ref: rasterio.DatasetReader, mask_values: str) -> ChangeMask:
    """One integer band of change values; returns how the values encode change."""
    if ref.count != 1:
        raise DataError(
            f"change raster {str(path)!r} has {ref.count} bands; expected a single "
            "band of 0 (no change) / 1 (change)"
        )
    if not np.issubdtype(np.dtype(ref.dtypes[0]), np.integer):
        raise DataError(
            f"change raster {str(path)!r} has data type {ref.dtypes[0]}; expected an "
            "integer raster (uint8 0/1, nodata 255) — threshold probabilities first"
        )
    # Values are checked now (sampled read) and in every block: 0/255 masks are never
    # silently read as "all nodata" (255) or as change (any non-zero value).
    return check_change_mask(path, mask_values=mask_values, what="change raster")


def _probability_encoding(path: Path, ref: rasterio.DatasetReader) -> tuple[float, float | None]:
    """Scale from stored values to probabilities, and the nodata value, of a probability raster."""
    probability_scale = 1.0
    with _check_same_grid(path, ref, "probability") as ds:
        dtype = np.dtype(ds.dtypes[0])
        if dtype == np.uint8:
            # geochange's predictor writes round(p * 254) (255 = nodata) and says so in
            # a tag; other uint8 probability rasters are taken as 0..255 scaled.
            tag = ds.tags().get(PROBABILITY_SCALE_TAG)
            try:
                probability_scale = 1.0 / float(tag) if tag else 1.0 / 255.0
            except ValueError:
                probability_scale = 1.0 / 255.0
        elif not np.issubdtype(dtype, np.floating):
            raise DataError(
                f"probability raster {str(path)!r} has data type {dtype}; "
                "expected uint8 (0..255 scaled) or float (0..1)"
            )
        return probability_scale, ds.nodata


def _check_class_raster(path: Path, ref: rasterio.DatasetReader, what: str) -> None:
    """A class raster: one integer band on the change raster's grid."""
    with _check_same_grid(path, ref, what) as ds:
        if not np.issubdtype(np.dtype(ds.dtypes[0]), np.integer):
            raise DataError(
                f"{what} raster {str(path)!r} has data type {ds.dtypes[0]}; "
                "expected integer class ids"
            )


def _class_id(value: str | int, names: list[str] | None) -> int:
    if isinstance(value, int | np.integer):
        return int(value)
    if names is not None and value in names:
        return names.index(value)
    raise ConfigurationError(f"unknown class {value!r} in change_classes; classes are {names}")
