"""Inputs of the whole-scene tools: change-class names, grid-checked class and probability rasters.

Shared by :mod:`geochange.pseudo.scene` (generation) and :mod:`geochange.pseudo.scoring`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.windows

from geochange.errors import ConfigurationError, DataError
from geochange.io import grid_mismatch, open_raster, read_class_names_tag
from geochange.pseudo.ceg import IntArray

__all__ = ["resolve_change_classes"]


def resolve_change_classes(
    change_classes: Iterable[str | int] | str | int, class_names: Sequence[str] | None
) -> tuple[int, ...]:
    """Turn class names or ids (``"building"``, ``0``, ``"0"``) into sorted class ids.

    Args:
        change_classes: names or ids; a single value or a comma-separated string is accepted.
        class_names: class names in class-id order (e.g. the ``GEOCHANGE_CLASS_NAMES`` tag).

    Returns:
        The class ids, sorted and without duplicates.

    Raises:
        ConfigurationError: if a name is unknown or nothing is given.
    """
    if isinstance(change_classes, str):
        items: list[str | int] = [v.strip() for v in change_classes.split(",") if v.strip()]
    elif isinstance(change_classes, int | np.integer):
        items = [int(change_classes)]
    else:
        items = list(change_classes)
    ids: set[int] = set()
    lowered = [name.lower() for name in class_names] if class_names is not None else None
    for item in items:
        if isinstance(item, int | np.integer) or str(item).strip().isdigit():
            ids.add(int(item))
        elif lowered is not None and str(item).strip().lower() in lowered:
            ids.add(lowered.index(str(item).strip().lower()))
        else:
            known = ", ".join(class_names) if class_names is not None else "none"
            raise ConfigurationError(
                f"unknown change class {item!r}; known class names: {known} (or give class ids)"
            )
    if not ids:
        raise ConfigurationError("no change class given: name at least one class of interest")
    return tuple(sorted(ids))


def _read_class_names(ds: rasterio.DatasetReader) -> list[str] | None:
    return read_class_names_tag(ds)


@dataclass(frozen=True)
class _SceneInputs:
    """Validated input rasters sharing one grid."""

    semantic_pre: Path
    semantic_post: Path
    prob_pre: Path | None
    prob_post: Path | None
    height: int
    width: int
    transform: Any
    crs: Any
    class_names: list[str] | None


def _check_grid(ds: rasterio.DatasetReader, ref: rasterio.DatasetReader, what: str) -> None:
    mismatch = grid_mismatch(ds, ref)
    if mismatch == "shape":
        raise DataError(
            f"{what} raster {ds.name!r} is not on the grid of {ref.name!r}: "
            f"{ds.width}x{ds.height} px, transform {tuple(ds.transform)[:6]} vs "
            f"{ref.width}x{ref.height} px, {tuple(ref.transform)[:6]} "
            "(reproject it onto the same grid first, e.g. with rasterio.warp)"
        )
    if mismatch == "crs":
        raise DataError(
            f"{what} raster {ds.name!r} has CRS {ds.crs} but {ref.name!r} has {ref.crs}"
        )


def _scene_inputs(
    semantic_pre: str | os.PathLike[str],
    semantic_post: str | os.PathLike[str],
    prob_pre: str | os.PathLike[str] | None,
    prob_post: str | os.PathLike[str] | None,
) -> _SceneInputs:
    with open_raster(semantic_pre) as ref, open_raster(semantic_post) as post:
        names: list[list[str] | None] = []
        for ds, what in ((ref, "semantic_pre"), (post, "semantic_post")):
            if ds.count != 1 or not np.issubdtype(np.dtype(ds.dtypes[0]), np.integer):
                raise DataError(
                    f"{what} raster {ds.name!r} has {ds.count} band(s) of {ds.dtypes[0]}; "
                    "expected one band of integer class ids"
                )
            names.append(_read_class_names(ds))
        _check_grid(post, ref, "semantic_post")
        if names[0] is not None and names[1] is not None and names[0] != names[1]:
            raise DataError(
                f"the class rasters name their classes differently: {names[0]} in {ref.name!r} "
                f"vs {names[1]} in {post.name!r}"
            )
        for path, what in ((prob_pre, "prob_pre"), (prob_post, "prob_post")):
            if path is None:
                continue
            with open_raster(path) as ds:
                _check_grid(ds, ref, what)
                dtype = np.dtype(ds.dtypes[0])
                if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
                    raise DataError(
                        f"{what} raster {ds.name!r} has data type {dtype}; expected class "
                        "probabilities as float (0..1) or uint8 (0..255) bands"
                    )
        return _SceneInputs(
            semantic_pre=Path(semantic_pre),
            semantic_post=Path(semantic_post),
            prob_pre=None if prob_pre is None else Path(prob_pre),
            prob_post=None if prob_post is None else Path(prob_post),
            height=ref.height,
            width=ref.width,
            transform=ref.transform,
            crs=ref.crs,
            class_names=names[0] if names[0] is not None else names[1],
        )


def _read_classes(
    ds: rasterio.DatasetReader, window: rasterio.windows.Window, ignore_index: int
) -> IntArray:
    sem = ds.read(1, window=window)
    info = np.iinfo(sem.dtype)
    if not info.min <= ignore_index <= info.max:  # keep small dtypes when they hold the value
        sem = sem.astype(np.int32)
    if ds.nodata is not None and ds.nodata != ignore_index:
        sem[sem == int(ds.nodata)] = ignore_index
    return sem


def _read_confidence(
    ds: rasterio.DatasetReader | None, window: rasterio.windows.Window
) -> npt.NDArray[np.float32] | None:
    """Highest class probability per pixel (NaN where nodata, hence uncertain)."""
    if ds is None:
        return None
    bands = ds.read(window=window)
    invalid = np.zeros(bands.shape[1:], dtype=bool)
    if ds.nodata is not None:  # a probability may well equal nodata (0); all bands may not
        invalid = (bands == ds.nodata).all(axis=0)
    conf = bands.max(axis=0).astype(np.float32)
    if bands.dtype == np.uint8:
        conf /= 255.0
    conf[invalid] = np.nan
    return conf
