"""The inputs of an evaluation: prediction and reference as rasters or polygons, on one grid.

Change rasters are read block by block as 0/1, polygon layers are rasterized block by block
onto the evaluation grid; polygon files are read, repaired, reprojected and checked to overlap.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.features
import rasterio.transform
import rasterio.windows
import shapely
from affine import Affine
from rasterio.windows import Window

from geochange.errors import ConfigurationError, DataError
from geochange.io import (
    CHANGE_FILE,
    MASK_IGNORE,
    PARQUET_SUFFIXES,
    PROBABILITY_FILE,
    SEMANTIC_POST_FILE,
    SEMANTIC_PRE_FILE,
    check_change_mask,
    grid_mismatch,
    is_vector_path,
    open_raster,
    polygon_layer,
    read_errors,
)

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["PREDICTION_FILES"]

#: File names looked up in a prediction directory (as written by ``geochange predict``).
PREDICTION_FILES: dict[str, str] = {
    "change": CHANGE_FILE,
    "probability": PROBABILITY_FILE,
    "semantic_pre": SEMANTIC_PRE_FILE,
    "semantic_post": SEMANTIC_POST_FILE,
}

_IGNORE = MASK_IGNORE


@dataclass(frozen=True)
class _Grid:
    height: int
    width: int
    transform: Affine
    crs: Any


class _RasterChange:
    """A change raster read block by block as 0/1; ignore / nodata becomes ``nodata_value``.

    Values follow the change-mask convention (:func:`geochange.io.check_change_mask`), checked
    on a sample when opened and in every block.
    """

    def __init__(
        self, path: Path, what: str, nodata_value: int, mask_values: str, option: str
    ) -> None:
        self.path, self.what, self.nodata_value = path, what, nodata_value
        self.dataset = open_raster(path)
        count, dtype = self.dataset.count, self.dataset.dtypes[0]
        if count != 1 or not np.issubdtype(np.dtype(dtype), np.integer):
            self.dataset.close()
            raise DataError(
                f"{what} change raster {str(path)!r} must have one integer band of 0/1 "
                f"(nodata 255); it has {count} band(s) of {dtype}"
            )
        try:
            self.mask = check_change_mask(
                path, mask_values=mask_values, what=f"{what} change raster", option=option
            )
        except BaseException:
            self.dataset.close()
            raise

    def read(self, window: Window) -> npt.NDArray[np.uint8]:
        with read_errors(self.path, window):
            data = self.dataset.read(1, window=window)
        out = self.mask.decode(data)
        if self.nodata_value != _IGNORE:
            out[out == _IGNORE] = self.nodata_value
        return out

    def close(self) -> None:
        self.dataset.close()


class _PolygonChange:
    """Change polygons rasterized onto the evaluation grid block by block (1 inside)."""

    def __init__(self, frame: gpd.GeoDataFrame, grid: _Grid) -> None:
        self.geometry = np.asarray(frame.geometry.values, dtype=object)
        self.tree = shapely.STRtree(self.geometry)
        self.grid = grid

    def read(self, window: Window) -> npt.NDArray[np.uint8]:
        transform = rasterio.windows.transform(window, self.grid.transform)
        shape = (int(window.height), int(window.width))
        box = shapely.box(*rasterio.windows.bounds(window, self.grid.transform))
        hits = self.geometry[self.tree.query(box, predicate="intersects")]
        if hits.size == 0:
            return np.zeros(shape, np.uint8)
        return rasterio.features.rasterize(
            ((g, 1) for g in hits), out_shape=shape, transform=transform, fill=0, dtype="uint8"
        )

    def close(self) -> None:
        """Nothing to release."""


class _ClassRaster:
    """A class-id raster read block by block; nodata and ids >= K become 255."""

    def __init__(self, path: Path, what: str, grid: _Grid, num_classes: int) -> None:
        self.path, self.num_classes = path, num_classes
        self.dataset = open_raster(path)
        _check_grid(self.dataset, grid, f"{what} raster {str(path)!r}")

    def read(self, window: Window) -> npt.NDArray[np.uint8]:
        with read_errors(self.path, window):
            data = self.dataset.read(1, window=window)
        out = np.where(data < self.num_classes, data, _IGNORE).astype(np.uint8)
        if self.dataset.nodata is not None:
            out[data == self.dataset.nodata] = _IGNORE
        return out

    def close(self) -> None:
        self.dataset.close()


def _check_grid(ds: rasterio.DatasetReader, grid: _Grid, what: str) -> None:
    # A raster without a CRS is taken to be on the grid's (hand-made references often lack one).
    mismatch = grid_mismatch(ds, grid, require_crs=False)
    if mismatch == "shape":
        raise DataError(
            f"{what} is not on the evaluation grid: {ds.width}x{ds.height} px with transform "
            f"{tuple(ds.transform)[:6]} vs {grid.width}x{grid.height} px with "
            f"{tuple(grid.transform)[:6]} (reproject it onto the prediction grid first)"
        )
    if ds.count != 1:
        raise DataError(f"{what} has {ds.count} bands; expected one band")
    if mismatch == "crs":
        raise DataError(f"{what} has CRS {ds.crs} but the evaluation grid has {grid.crs}")


def _is_vector(value: Any) -> bool:
    return is_vector_path(value)


def _is_frame(value: Any) -> bool:
    return hasattr(value, "geometry") and hasattr(value, "crs") and hasattr(value, "columns")


def _read_polygons(source: Any, what: str) -> gpd.GeoDataFrame:
    """Read a polygon file (or take a GeoDataFrame), keep areal geometries, repair invalid ones."""
    import geopandas as gpd
    import pyogrio

    if _is_frame(source):
        frame = source.copy()
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"{what} file not found: {str(path)!r}")
        try:
            if path.suffix.lower() in PARQUET_SUFFIXES:
                frame = gpd.read_parquet(path)
            else:
                # A styled GeoPackage also holds `layer_styles`: read its feature layer.
                frame = pyogrio.read_dataframe(path, layer=polygon_layer(path))
        except Exception as err:  # pyogrio/pyarrow raise many types for unreadable files
            raise DataError(f"cannot read {what} file {str(path)!r}: {err}") from err
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    kinds = set(frame.geom_type.unique())
    if not kinds <= {"Polygon", "MultiPolygon"}:
        raise DataError(
            f"{what} must hold polygons; found geometry types {sorted(kinds)}"
            + ("" if _is_frame(source) else f" in {str(source)!r}")
        )
    invalid = ~frame.geometry.is_valid
    if invalid.any():
        # Self-intersections (bow-ties) are common in hand-drawn labels: repair, and say so.
        where = "" if _is_frame(source) else f" in {str(source)!r}"
        warnings.warn(
            f"{int(invalid.sum())} invalid {what} polygon(s){where} repaired with "
            "shapely.make_valid (e.g. self-intersections); check them in a GIS",
            UserWarning,
            stacklevel=3,
        )
        frame.loc[invalid, frame.geometry.name] = shapely.make_valid(
            np.asarray(frame.geometry[invalid].values, dtype=object)
        )
    return frame.reset_index(drop=True)


@dataclass
class _Prediction:
    change: Path | None = None
    # Change probability (mean_prob / max_prob of the predicted polygons).
    probability: Path | None = None
    semantic_pre: Path | None = None
    semantic_post: Path | None = None
    polygons: Any = None
    class_names: list[str] | None = None


def _resolve_prediction(prediction: Any) -> _Prediction:
    if prediction is None:
        raise ConfigurationError("a prediction is required")
    if _is_frame(prediction) or _is_vector(prediction):
        return _Prediction(polygons=prediction)
    if not isinstance(prediction, str | os.PathLike) and hasattr(prediction, "change"):
        names = getattr(prediction, "class_names", None)

        def path_of(name: str) -> Path | None:
            value = getattr(prediction, name, None)
            return Path(value) if value is not None else None

        result = _Prediction(
            change=path_of("change"),
            probability=path_of("probability"),
            semantic_pre=path_of("semantic_pre"),
            semantic_post=path_of("semantic_post"),
            class_names=list(names) if names else None,
        )
        if result.change is None:
            raise DataError("the prediction result has no change raster")
        return result
    if not isinstance(prediction, str | os.PathLike):
        raise ConfigurationError(
            "prediction must be a PredictionResult, a prediction directory, a change raster or "
            f"a polygon file, got {type(prediction).__name__}"
        )
    path = Path(prediction)
    if path.is_dir():
        found = {k: path / name for k, name in PREDICTION_FILES.items() if (path / name).exists()}
        if "change" not in found:
            raise DataError(
                f"prediction directory {str(path)!r} has no {PREDICTION_FILES['change']} "
                "(run `geochange predict` into it, or pass the change raster itself)"
            )
        return _Prediction(
            change=found["change"],
            probability=found.get("probability"),
            semantic_pre=found.get("semantic_pre"),
            semantic_post=found.get("semantic_post"),
        )
    if not path.exists():
        raise DataError(f"prediction not found: {str(path)!r}")
    # A predictor's change.tif: its probability.tif beside it, written by the same run.
    beside = path.with_name(PROBABILITY_FILE)
    probability = beside if path.name == CHANGE_FILE and beside.exists() else None
    return _Prediction(change=path, probability=probability)


def _source_name(source: Any) -> str:
    return "<GeoDataFrame>" if _is_frame(source) else repr(str(source))


def _inside_grid(frame: Any, grid: _Grid, what: str, source: Any) -> Any:
    """Leave out polygons entirely outside the grid (warning); raise if none overlaps it.

    Such polygons cannot be scored: the pixel pass never sees them and the object pass would
    count them as misses (or false alarms). None overlapping means a wrong file or CRS, which
    would otherwise report all-zero scores.
    """
    if len(frame) == 0:
        return frame
    bounds = rasterio.transform.array_bounds(grid.height, grid.width, grid.transform)
    west, south, east, north = bounds[0], bounds[1], bounds[2], bounds[3]
    box = shapely.box(min(west, east), min(south, north), max(west, east), max(south, north))
    hits = shapely.intersects(np.asarray(frame.geometry.values, dtype=object), box)
    if not hits.any():
        extent = tuple(round(float(v), 3) for v in frame.total_bounds)
        raise DataError(
            f"none of the {len(frame)} {what} ({_source_name(source)}) overlaps the evaluation "
            f"grid: polygons span {extent}, the grid {tuple(round(v, 3) for v in box.bounds)} "
            f"in {grid.crs or 'no CRS'} (wrong file, or polygons in another CRS without one "
            "declared?)"
        )
    if not hits.all():
        warnings.warn(
            f"{int((~hits).sum())} of the {len(frame)} {what} ({_source_name(source)}) lie "
            "entirely outside the evaluation grid and are left out",
            UserWarning,
            stacklevel=3,
        )
        frame = frame[hits].reset_index(drop=True)
    return frame


def _check_polygons_overlap(
    pred_frame: Any, ref_frame: Any, pred_source: Any, ref_source: Any
) -> None:
    """Without a raster grid: predicted and reference polygons must share some extent."""
    if len(pred_frame) == 0 or len(ref_frame) == 0:
        return
    pred_box = shapely.box(*pred_frame.total_bounds)
    ref_box = shapely.box(*ref_frame.total_bounds)
    if not pred_box.intersects(ref_box):
        raise DataError(
            f"predicted polygons ({_source_name(pred_source)}, extent "
            f"{tuple(round(float(v), 3) for v in pred_box.bounds)}) and reference polygons "
            f"({_source_name(ref_source)}, extent "
            f"{tuple(round(float(v), 3) for v in ref_box.bounds)}) do not overlap "
            "(wrong file, or polygons in another CRS without one declared?)"
        )


def _filter_types(frame: Any, change_types: Sequence[str]) -> Any:
    """Keep rows whose ``change_type`` is wanted; frames without types are kept whole.

    A binary model's polygons (``change_type`` ``"change"``, classes unknown) are untyped.
    """
    from geochange.evaluate.matching import _typed

    if not any(t is not None for t in _typed(frame)):
        return frame
    return frame[frame["change_type"].isin(list(change_types))].reset_index(drop=True)


def _to_crs(frame: Any, crs: Any, what: str) -> Any:
    """Reproject polygons to ``crs`` when both CRSs are known and differ."""
    if crs is None or frame.crs is None:
        return frame
    try:
        same = frame.crs == crs or frame.crs.equals(crs)
    except Exception:
        same = False
    if same:
        return frame
    try:
        return frame.to_crs(crs)
    except Exception as err:
        raise DataError(f"cannot reproject {what} from {frame.crs} to {crs}: {err}") from err
