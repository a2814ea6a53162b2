"""Block-wise vectorization of change rasters into change polygons (GeoPackage, GeoParquet, ...).

A 48000 x 32500 change mask cannot be polygonized in one piece without holding several GB of
labels and geometries, so :func:`vectorize_changes` works block by block:

1. Every block (``block_size`` pixels square) is read on its own, its changed pixels are given a
   *change code* (1 for binary change; with semantic rasters, one code per change type) and
   connected regions of equal code are labelled. GDAL's polygonizer
   (:func:`rasterio.features.shapes`) turns the labels into polygons in integer pixel
   coordinates, and per-label statistics (pixel count, probability sum/max, class histograms)
   are computed with ``numpy.bincount``. Blocks run in a process pool (both cores).
2. Labels on the two sides of every block seam are linked where the pixels are neighbours
   (4- or 8-connectivity) and carry the same code; ``scipy.sparse.csgraph.connected_components``
   groups the pieces of every object that crosses seams.
3. Pieces of the same object are unioned. Because all coordinates are integer pixel corners
   the union is exact, so the result is identical to polygonizing the whole raster at once:
   same polygons, holes and areas (pixel count x pixel area). Objects that touch no seam are
   used as they come out of their block.
4. Geometries are mapped to the raster's CRS with its affine transform, filtered, optionally
   simplified/regularized, given attributes and written atomically with pyogrio (GeoPackage,
   FlatGeobuf, GeoJSON) or GeoParquet.

Memory is bounded by the block size (each worker holds one block) plus the output polygons.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.crs
import rasterio.features
import rasterio.windows
import scipy.ndimage as ndi
import shapely
import shapely.affinity
from affine import Affine

from geochange._blockwise import BlockGrid, EdgeStrips, components, edge_strips, seam_links
from geochange.errors import ConfigurationError, DataError, OutputError
from geochange.io import (
    DEFAULT_GDAL_CACHE_BYTES,
    PROBABILITY_SCALE_TAG,
    VECTOR_OUTPUT_DRIVERS,
    ChangeMask,
    ChangeProducts,
    atomic_output,
    check_change_mask,
    check_writable_dir,
    gdal_cache,
    grid_mismatch,
    list_layers,
    open_raster,
    read_class_names_tag,
    read_errors,
    write_polygon_layer,
)

# Re-exported: the tag name was defined here before geochange.io.products.
from geochange.io.products import CLASS_NAMES_TAG as CLASS_NAMES_TAG
from geochange.parallel import WorkerPool

__all__ = [
    "BUILDING_CLASS",
    "OUTPUT_DRIVERS",
    "change_type_name",
    "check_vector_output",
    "read_class_names",
    "regularize_polygon",
    "vectorize_changes",
    "write_changes",
]

#: Output file extension -> OGR driver (``None``: GeoParquet written through GeoPandas/pyarrow);
#: the one list is :data:`geochange.io.VECTOR_OUTPUT_DRIVERS`.
OUTPUT_DRIVERS: dict[str, str | None] = VECTOR_OUTPUT_DRIVERS
#: Name of the class whose appearance/disappearance gets the "new/demolished building" types.
BUILDING_CLASS = "building"

# Change codes used in the per-pixel code raster (0 = no change).
_CODE_CHANGE = 1  # binary change, or "new building" in change-type mode
_CODE_DEMOLISHED = 2
_FIRST_TRANSITION_CODE = 3

Regularize = Literal["rectangle", "orthogonal"]
GroupBy = Literal["change_type", "change"]
WriteMode = Literal["create", "overwrite", "append"]
Parallel = Literal["processes", "threads"]

#: Columns of the output table, in order, with their pandas dtypes.
SCHEMA: dict[str, str] = {
    "change_id": "int64",
    "area_m2": "float64",
    "perimeter_m": "float64",
    "pixel_count": "int64",
    "mean_prob": "Float64",
    "max_prob": "Float64",
    "from_class": "object",
    "to_class": "object",
    "change_type": "object",
}


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


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
    # Duck typing for geochange.predict.PredictionResult (or anything alike): take the rasters
    # from its attributes unless given explicitly.
    if not isinstance(change, str | os.PathLike) and hasattr(change, "change"):
        result = change
        change = result.change
        probability = (
            probability if probability is not None else getattr(result, "probability", None)
        )
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
        if ref.count != 1:
            raise DataError(
                f"change raster {str(change_path)!r} has {ref.count} bands; expected a single "
                "band of 0 (no change) / 1 (change)"
            )
        if not np.issubdtype(np.dtype(ref.dtypes[0]), np.integer):
            raise DataError(
                f"change raster {str(change_path)!r} has data type {ref.dtypes[0]}; expected an "
                "integer raster (uint8 0/1, nodata 255) — threshold probabilities first"
            )
        # Values are checked now (sampled read) and in every block: 0/255 masks are never
        # silently read as "all nodata" (255) or as change (any non-zero value).
        change_mask = check_change_mask(change_path, mask_values=mask_values, what="change raster")
        probability_scale = 1.0
        probability_nodata = None
        if probability_path is not None:
            with _check_same_grid(probability_path, ref, "probability") as ds:
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
                        f"probability raster {str(probability_path)!r} has data type {dtype}; "
                        "expected uint8 (0..255 scaled) or float (0..1)"
                    )
                probability_nodata = ds.nodata
        for path, what in ((pre_path, "semantic_pre"), (post_path, "semantic_post")):
            if path is not None:
                with _check_same_grid(path, ref, what) as ds:
                    if not np.issubdtype(np.dtype(ds.dtypes[0]), np.integer):
                        raise DataError(
                            f"{what} raster {str(path)!r} has data type {ds.dtypes[0]}; "
                            "expected integer class ids"
                        )
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


# --------------------------------------------------------------------------------------------
# Per-block work (runs in worker processes)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BlockJob:
    """Everything a worker needs to polygonize one block."""

    index: int
    row_off: int
    col_off: int
    height: int
    width: int
    change: str
    change_mask: ChangeMask
    probability: str | None
    probability_scale: float
    probability_nodata: float | None
    semantic_pre: str | None
    semantic_post: str | None
    num_classes: int
    building: int | None
    group_by: str
    connectivity: int
    transform: tuple[float, ...]
    crs_wkt: str | None


@dataclass
class _BlockResult:
    """Polygons and statistics of one block's labels (label ``i`` at index ``i - 1``)."""

    index: int
    # Polygons as WKB (shapely geometries once received): labels touching the block edge stay
    # in integer pixel coordinates for exact merging, the others are already in the CRS.
    wkb: npt.NDArray[np.object_]
    on_edge: npt.NDArray[np.bool_]
    # Bounds and metric measures of the objects in the CRS (NaN for edge pieces).
    bounds: npt.NDArray[np.float64]
    area: npt.NDArray[np.float64]
    perimeter: npt.NDArray[np.float64]
    codes: npt.NDArray[np.int32]
    pixel_count: npt.NDArray[np.int64]
    prob_count: npt.NDArray[np.int64]
    prob_sum: npt.NDArray[np.float64]
    prob_max: npt.NDArray[np.float64]
    pre_major: npt.NDArray[np.int32]
    post_major: npt.NDArray[np.int32]
    # Local labels (0 = background) along the block's four edges, for seam linking.
    edges: EdgeStrips
    # Class histograms of labels touching an edge, so pieces can be summed after merging.
    edge_labels: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    edge_pre_hist: npt.NDArray[np.int64] | None = None
    edge_post_hist: npt.NDArray[np.int64] | None = None

    @property
    def count(self) -> int:
        """Number of labels (objects or object pieces) in the block."""
        return int(self.codes.size)


# Open datasets per thread: a GDAL dataset handle must not be used by two threads at once.
_LOCAL = threading.local()
_CLOSE_AT_EXIT = False
_GDAL_CACHE_BYTES = DEFAULT_GDAL_CACHE_BYTES


def _datasets() -> dict[str, rasterio.DatasetReader]:
    cache: dict[str, rasterio.DatasetReader] | None = getattr(_LOCAL, "datasets", None)
    if cache is None:
        cache = _LOCAL.datasets = {}
    return cache


def _close_datasets() -> None:
    datasets = _datasets()
    while datasets:
        datasets.popitem()[1].close()


def _read(path: str, window: rasterio.windows.Window) -> npt.NDArray[Any]:
    # Each worker keeps its datasets open across blocks (opening a COG costs a few ms).
    global _CLOSE_AT_EXIT
    datasets = _datasets()
    ds = datasets.get(path)
    if ds is None:
        if not _CLOSE_AT_EXIT:
            # Close before interpreter teardown: GDAL handles freed during teardown print
            # spurious "Error in sys.excepthook" messages.
            atexit.register(_close_datasets)
            _CLOSE_AT_EXIT = True
        ds = datasets[path] = rasterio.open(path)
    with read_errors(path, window):  # a corrupt block: DataError naming file and window
        return ds.read(1, window=window)


def _structure(connectivity: int) -> npt.NDArray[np.bool_]:
    return ndi.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def _change_codes(
    job: _BlockJob, window: rasterio.windows.Window
) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None, npt.NDArray[Any] | None]:
    """Per-pixel change code (0 = no change) and the block's semantic classes."""
    changed = job.change_mask.is_change(_read(job.change, window))
    pre = post = None
    codes: npt.NDArray[Any] = changed.view(np.uint8)  # binary: no int32 copy
    if job.semantic_pre is not None and job.semantic_post is not None:
        pre = _read(job.semantic_pre, window)
        post = _read(job.semantic_post, window)
        if job.group_by == "change_type":
            k = job.num_classes
            pre_c = np.where((pre >= 0) & (pre < k), pre, k).astype(np.int32)
            post_c = np.where((post >= 0) & (post < k), post, k).astype(np.int32)
            codes = _FIRST_TRANSITION_CODE + pre_c * (k + 1) + post_c
            if job.building is not None:
                b = job.building
                codes[(post_c == b) & (pre_c != b)] = _CODE_CHANGE
                codes[(pre_c == b) & (post_c != b)] = _CODE_DEMOLISHED
            codes[~changed] = 0
    return codes, pre, post


def _label_codes(codes: npt.NDArray[Any], connectivity: int) -> tuple[npt.NDArray[np.int32], int]:
    """Label connected regions of equal non-zero code."""
    structure = _structure(connectivity)
    if codes.dtype == np.uint8:  # binary change: one labelling pass
        labels, count = ndi.label(codes, structure=structure, output=np.int32)
        return labels, int(count)
    present = np.unique(codes[codes != 0]) if codes.any() else np.zeros(0, np.int32)
    if present.size <= 1:
        labels, count = ndi.label(codes != 0, structure=structure, output=np.int32)
        return labels, int(count)
    labels = np.zeros(codes.shape, np.int32)
    total = 0
    # Several codes: label each one inside its own bounding box (codes act as labels for
    # find_objects, so boxes come in one pass).
    boxes = ndi.find_objects(codes)
    for code in present:
        box = boxes[int(code) - 1]
        assert box is not None
        sub, count = ndi.label(codes[box] == code, structure=structure, output=np.int32)
        target = labels[box]
        np.add(target, np.where(sub > 0, sub + total, 0), out=target)
        total += int(count)
    return labels, total


def _majority(hist: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
    """Most frequent class per row of a histogram (-1 where the row is empty)."""
    if hist.shape[1] == 0:
        return np.full(hist.shape[0], -1, np.int32)
    major = hist.argmax(axis=1).astype(np.int32)
    major[hist.sum(axis=1) == 0] = -1
    return major


def _class_hist(
    lab: npt.NDArray[np.int32], classes: npt.NDArray[Any], count: int, k: int
) -> npt.NDArray[np.int64]:
    valid = (classes >= 0) & (classes < k)
    flat = lab[valid].astype(np.int64) * k + classes[valid].astype(np.int64)
    return np.bincount(flat, minlength=(count + 1) * k).reshape(count + 1, k)


def _polygons_from_shapes(
    features: Iterable[tuple[dict[str, Any], float]], count: int
) -> npt.NDArray[np.object_]:
    """Build shapely polygons from GeoJSON-like features in a few vectorized calls.

    Returns an array whose element ``label - 1`` is the polygon of ``label``.
    """
    coords: list[Any] = []
    ring_sizes: list[int] = []
    ring_polygon: list[int] = []
    for geojson, value in features:
        index = int(value) - 1
        for ring in geojson["coordinates"]:
            coords.extend(ring)
            ring_sizes.append(len(ring))
            ring_polygon.append(index)
    rings = shapely.linearrings(
        np.asarray(coords, dtype=np.float64),
        indices=np.repeat(np.arange(len(ring_sizes)), ring_sizes),
    )
    # Shells come first within each feature, so stable-sorting rings by label keeps the
    # shell-then-holes order that polygons(indices=...) expects.
    ring_polygon_array = np.asarray(ring_polygon, dtype=np.intp)
    order = np.argsort(ring_polygon_array, kind="stable")
    return shapely.polygons(rings[order], indices=ring_polygon_array[order], out=None)[:count]


def _polygonize_block(job: _BlockJob) -> _BlockResult:
    """Polygonize one block and compute per-label statistics."""
    # Every block is read once: a small GDAL block cache keeps worker memory bounded
    # (GDAL's default, 5 % of RAM, would fill up with blocks that are never read again).
    with gdal_cache(_GDAL_CACHE_BYTES):
        return _polygonize_block_uncached(job)


def _polygonize_block_in_thread(job: _BlockJob) -> _BlockResult:
    try:
        return _polygonize_block(job)
    finally:
        _close_datasets()  # this thread's handles: pool threads end with the call


def _polygonize_block_uncached(job: _BlockJob) -> _BlockResult:
    window = rasterio.windows.Window(job.col_off, job.row_off, job.width, job.height)
    codes, pre, post = _change_codes(job, window)
    labels, count = _label_codes(codes, job.connectivity)

    edges = edge_strips(labels)
    edge_labels = edges.labels()
    on_edge = np.zeros(count, np.bool_)
    on_edge[edge_labels - 1] = True

    wkb = np.empty(count, dtype=object)
    bounds = np.full((count, 4), np.nan)
    area = np.full(count, np.nan)
    perimeter = np.full(count, np.nan)
    if count:
        # Integer pixel-corner coordinates (global grid): exact unions across seams later.
        offset = Affine.translation(job.col_off, job.row_off)
        geoms = np.empty(count, dtype=object)
        geoms[:] = _polygons_from_shapes(
            rasterio.features.shapes(
                labels, mask=labels > 0, connectivity=job.connectivity, transform=offset
            ),
            count,
        )
        if job.connectivity == 8:
            # GDAL joins diagonal neighbours with a self-touching ring, which is invalid;
            # make_valid turns it into the equivalent valid (multi)polygon.
            invalid = ~shapely.is_valid(geoms)
            if invalid.any():
                geoms[invalid] = shapely.make_valid(geoms[invalid])
        # Objects inside the block are final: map them to the CRS here, in parallel.
        interior = ~on_edge
        geoms[interior] = _to_map(geoms[interior], Affine(*job.transform[:6]))
        bounds[interior] = shapely.bounds(geoms[interior])
        crs = rasterio.crs.CRS.from_wkt(job.crs_wkt) if job.crs_wkt else None
        area[interior], perimeter[interior] = _metric_measures(geoms[interior], crs)
        wkb = shapely.to_wkb(geoms)

    flat_labels = labels.ravel()
    foreground = np.flatnonzero(flat_labels)
    lab = flat_labels[foreground]
    pixel_count = np.bincount(lab, minlength=count + 1)
    label_codes = np.zeros(count + 1, np.int32)
    label_codes[lab] = codes.ravel()[foreground]

    prob_count = np.zeros(count + 1, np.int64)
    prob_sum = np.zeros(count + 1, np.float64)
    prob_max = np.full(count + 1, np.nan, np.float64)
    if job.probability is not None and count:
        prob = _read(job.probability, window).ravel()[foreground]
        valid = np.isfinite(prob)
        if job.probability_nodata is not None:
            valid &= prob != job.probability_nodata
        values = prob[valid].astype(np.float64) * job.probability_scale
        plab = lab[valid]
        prob_count = np.bincount(plab, minlength=count + 1)
        prob_sum = np.bincount(plab, weights=values, minlength=count + 1)
        if plab.size:
            order = np.argsort(plab, kind="stable")
            sorted_labels = plab[order]
            starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
            prob_max[sorted_labels[starts]] = np.maximum.reduceat(values[order], starts)

    k = job.num_classes
    pre_major = np.full(count + 1, -1, np.int32)
    post_major = np.full(count + 1, -1, np.int32)
    edge_pre_hist = edge_post_hist = None
    if pre is not None and post is not None and count:
        pre_hist = _class_hist(lab, pre.ravel()[foreground], count, k)
        post_hist = _class_hist(lab, post.ravel()[foreground], count, k)
        pre_major = _majority(pre_hist)
        post_major = _majority(post_hist)
        edge_pre_hist = pre_hist[edge_labels]
        edge_post_hist = post_hist[edge_labels]

    return _BlockResult(
        index=job.index,
        wkb=wkb,
        on_edge=on_edge,
        bounds=bounds,
        area=area,
        perimeter=perimeter,
        codes=label_codes[1:],
        pixel_count=pixel_count[1:].astype(np.int64),
        prob_count=prob_count[1:].astype(np.int64),
        prob_sum=prob_sum[1:],
        prob_max=prob_max[1:],
        pre_major=pre_major[1:],
        post_major=post_major[1:],
        edges=edges,
        edge_labels=edge_labels,
        edge_pre_hist=edge_pre_hist,
        edge_post_hist=edge_post_hist,
    )


# --------------------------------------------------------------------------------------------
# Merging pieces across block seams
# --------------------------------------------------------------------------------------------


@dataclass
class _Objects:
    """All objects of the raster after merging: WKB geometries in the CRS and attributes."""

    wkb: npt.NDArray[np.object_]
    bounds: npt.NDArray[np.float64]
    area: npt.NDArray[np.float64]
    perimeter: npt.NDArray[np.float64]
    codes: npt.NDArray[np.int32]
    pixel_count: npt.NDArray[np.int64]
    prob_mean: npt.NDArray[np.float64]
    prob_max: npt.NDArray[np.float64]
    pre_major: npt.NDArray[np.int32]
    post_major: npt.NDArray[np.int32]


def _finalize_pieces(
    geometry: npt.NDArray[np.object_], transform: Affine, crs: Any
) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.float64], npt.NDArray[np.float64], Any]:
    """Map pixel-coordinate geometries to the CRS; return WKB, bounds, area, perimeter."""
    mapped = _to_map(geometry, transform)
    area, perimeter = _metric_measures(mapped, crs)
    return shapely.to_wkb(mapped), shapely.bounds(mapped), area, perimeter


def _empty_pieces() -> dict[str, npt.NDArray[Any]]:
    """Per-piece arrays of a raster without pieces (the dtypes of :class:`_BlockResult`)."""
    return {
        "wkb": np.empty(0, object),
        "on_edge": np.zeros(0, np.bool_),
        "bounds": np.zeros((0, 4)),
        "area": np.zeros(0),
        "perimeter": np.zeros(0),
        "codes": np.zeros(0, np.int32),
        "pixel_count": np.zeros(0, np.int64),
        "prob_count": np.zeros(0, np.int64),
        "prob_sum": np.zeros(0),
        "prob_max": np.zeros(0),
        "pre_major": np.zeros(0, np.int32),
        "post_major": np.zeros(0, np.int32),
    }


def _gather_pieces(results: list[_BlockResult]) -> dict[str, npt.NDArray[Any]]:
    """Per-piece arrays of all blocks, in global id order (block by block, then local label)."""
    pieces = {
        name: np.concatenate([getattr(r, name) for r in results]) if results else empty
        for name, empty in _empty_pieces().items()
    }
    # Mixed wkb: WKB for interior objects, pixel-coordinate geometries for edge pieces.
    for res in results:  # drop references: the concatenated arrays now own the data
        res.wkb = np.empty(0, object)
    return pieces


def _seam_components(
    results: list[_BlockResult],
    grid: BlockGrid,
    offsets: npt.NDArray[np.int64],
    codes: npt.NDArray[np.int32],
    connectivity: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Object of every piece (pieces with one change code touching across a seam are one).

    Returns:
        The component of every global piece id, and whether the piece belongs to an object
        made of several pieces.
    """
    total = int(offsets[-1])
    strips = {(b.row, b.col): results[b.index].edges.to_global(int(offsets[b.index])) for b in grid}
    sources, targets = seam_links(strips, grid.rows, grid.cols, codes, connectivity)
    merged = np.zeros(total, np.bool_)
    component = np.zeros(total, np.int64)
    if sources.size:
        component = components(total, sources, targets)
        merged = np.bincount(component)[component] > 1
    return component, merged


def _edge_hists(
    results: list[_BlockResult], offsets: npt.NDArray[np.int64], merged: npt.NDArray[np.bool_]
) -> tuple[dict[int, npt.NDArray[np.int64]], dict[int, npt.NDArray[np.int64]]]:
    """Class histograms of merged pieces (pieces of merged objects always touch an edge)."""
    hist_pre: dict[int, npt.NDArray[np.int64]] = {}
    hist_post: dict[int, npt.NDArray[np.int64]] = {}
    for i, res in enumerate(results):
        if res.edge_pre_hist is None or res.edge_post_hist is None:
            continue
        for j, local in enumerate(res.edge_labels):
            gid = int(offsets[i]) + int(local) - 1
            if merged[gid]:
                hist_pre[gid] = res.edge_pre_hist[j]
                hist_post[gid] = res.edge_post_hist[j]
    return hist_pre, hist_post


def _union_groups(
    pieces: dict[str, npt.NDArray[Any]],
    component: npt.NDArray[np.int64],
    merged: npt.NDArray[np.bool_],
    hists: tuple[dict[int, npt.NDArray[np.int64]], dict[int, npt.NDArray[np.int64]]],
    transform: Affine,
    crs: Any,
) -> dict[str, npt.NDArray[Any]]:
    """One object per component of merged pieces, in component order, with summed statistics."""
    member_ids = np.flatnonzero(merged)
    order = member_ids[np.argsort(component[member_ids], kind="stable")]
    group_of = component[order]
    starts = np.flatnonzero(np.r_[True, group_of[1:] != group_of[:-1]])
    ends = np.r_[starts[1:], order.size]
    hist_pre, hist_post = hists
    geometry, codes = pieces["wkb"], pieces["codes"]
    pixel_count, prob_count = pieces["pixel_count"], pieces["prob_count"]
    prob_sum, prob_max = pieces["prob_sum"], pieces["prob_max"]

    n_groups = starts.size
    new_geometry = np.empty(n_groups, object)
    new: dict[str, npt.NDArray[Any]] = {
        "codes": np.empty(n_groups, np.int32),
        "pixel_count": np.empty(n_groups, np.int64),
        "prob_count": np.empty(n_groups, np.int64),
        "prob_sum": np.empty(n_groups, np.float64),
        "prob_max": np.empty(n_groups, np.float64),
        "pre_major": np.full(n_groups, -1, np.int32),
        "post_major": np.full(n_groups, -1, np.int32),
    }
    for g, (s, e) in enumerate(zip(starts, ends, strict=True)):
        members = order[s:e]
        # Exact: every vertex is an integer pixel corner, the grid_size=1 overlay keeps
        # them exactly; simplify(0) drops the collinear vertices left on the seams.
        union = shapely.union_all(geometry[members], grid_size=1.0)
        new_geometry[g] = shapely.simplify(union, 0.0)
        new["codes"][g] = codes[members[0]]
        new["pixel_count"][g] = pixel_count[members].sum()
        new["prob_count"][g] = prob_count[members].sum()
        new["prob_sum"][g] = prob_sum[members].sum()
        new["prob_max"][g] = np.nanmax(prob_max[members]) if new["prob_count"][g] else np.nan
        if hist_pre:
            pre_h = np.sum([hist_pre[int(m)] for m in members], axis=0)
            post_h = np.sum([hist_post[int(m)] for m in members], axis=0)
            new["pre_major"][g] = _majority(pre_h[None, :])[0]
            new["post_major"][g] = _majority(post_h[None, :])[0]
    new["wkb"], new["bounds"], new["area"], new["perimeter"] = _finalize_pieces(
        new_geometry, transform, crs
    )
    return new


def _merge_blocks(
    results: list[_BlockResult],
    grid: BlockGrid,
    connectivity: int,
    transform: Affine,
    crs: Any,
) -> _Objects:
    """Link labels across seams and union the pieces of objects spanning several blocks.

    Objects are ordered as their pieces' global ids (block by block, then local label), with
    the objects of several pieces last, in order of their first piece.
    """
    counts = np.array([r.count for r in results], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])  # global id = offset + local label - 1
    pieces = _gather_pieces(results)
    component, merged = _seam_components(results, grid, offsets, pieces["codes"], connectivity)

    # Edge pieces without a partner across any seam are complete objects: map them now.
    lonely = np.flatnonzero(pieces["on_edge"] & ~merged)
    if lonely.size:
        wkb, pieces["bounds"][lonely], pieces["area"][lonely], pieces["perimeter"][lonely] = (
            _finalize_pieces(pieces["wkb"][lonely], transform, crs)
        )
        pieces["wkb"][lonely] = wkb

    if merged.any():
        keep = ~merged
        hists = _edge_hists(results, offsets, merged)
        new = _union_groups(pieces, component, merged, hists, transform, crs)
        for name, values in new.items():
            pieces[name] = np.concatenate([pieces[name][keep], values])

    prob_count, prob_sum = pieces["prob_count"], pieces["prob_sum"]
    with np.errstate(invalid="ignore", divide="ignore"):
        prob_mean = np.where(prob_count > 0, prob_sum / np.maximum(prob_count, 1), np.nan)
    prob_max = np.where(prob_count > 0, pieces["prob_max"], np.nan)
    return _Objects(
        wkb=pieces["wkb"],
        bounds=pieces["bounds"],
        area=pieces["area"],
        perimeter=pieces["perimeter"],
        codes=pieces["codes"].astype(np.int32),
        pixel_count=pieces["pixel_count"].astype(np.int64),
        prob_mean=prob_mean.astype(np.float64),
        prob_max=prob_max.astype(np.float64),
        pre_major=pieces["pre_major"].astype(np.int32),
        post_major=pieces["post_major"].astype(np.int32),
    )


# --------------------------------------------------------------------------------------------
# Geometry post-processing
# --------------------------------------------------------------------------------------------


def _orthogonalize_ring(coords: npt.NDArray[np.float64]) -> npt.NDArray[np.float64] | None:
    """Snap a ring (already rotated to its dominant axis) to horizontal/vertical edges."""
    pts = coords[:-1]
    if len(pts) < 4:
        return None
    nxt = np.roll(pts, -1, axis=0)
    delta = nxt - pts
    horizontal = np.abs(delta[:, 0]) >= np.abs(delta[:, 1])
    lengths = np.hypot(delta[:, 0], delta[:, 1])
    # Each edge becomes an axis-parallel line at the length-weighted mean offset; runs of
    # edges with the same orientation merge into one line.
    offsets = np.where(horizontal, (pts[:, 1] + nxt[:, 1]) / 2, (pts[:, 0] + nxt[:, 0]) / 2)
    lines: list[list[float]] = []  # [is_horizontal, weighted offset sum, weight]
    for h, off, w in zip(horizontal, offsets, lengths, strict=True):
        if lines and bool(lines[-1][0]) == bool(h):
            lines[-1][1] += off * w
            lines[-1][2] += w
        else:
            lines.append([float(h), off * w, w])
    if len(lines) > 1 and bool(lines[0][0]) == bool(lines[-1][0]):
        lines[0][1] += lines[-1][1]
        lines[0][2] += lines[-1][2]
        lines.pop()
    if len(lines) < 4 or len(lines) % 2:
        return None
    values = [(bool(h), s / max(w, 1e-12)) for h, s, w in lines]
    out = []
    for i, (h, v) in enumerate(values):
        _, v_next = values[(i + 1) % len(values)]
        out.append((v_next, v) if h else (v, v_next))
    out.append(out[0])
    return np.asarray(out, dtype=np.float64)


def regularize_polygon(
    polygon: shapely.Geometry,
    mode: Regularize = "rectangle",
    *,
    pixel_size: float = 1.0,
    fill_ratio: float = 0.85,
) -> shapely.Geometry:
    """Square up a building outline.

    ``"rectangle"`` replaces the outline with its minimum rotated rectangle when the polygon
    fills at least ``fill_ratio`` of it, and orthogonalizes it otherwise; ``"orthogonal"``
    always orthogonalizes: the outline is rotated to the rectangle's axis, its pixel staircase
    is smoothed (tolerance one pixel), every edge is snapped to the nearer of the two axes, and
    the result is rotated back. Multi-part geometries are regularized part by part. When the
    snapped outline is invalid or changes the area by more than half, the original is kept.

    Args:
        polygon: a polygon or multipolygon in map units.
        mode: ``"rectangle"`` or ``"orthogonal"``.
        pixel_size: pixel size in map units (smoothing tolerance).
        fill_ratio: minimum area / rectangle-area ratio for the rectangle replacement.

    Returns:
        The regularized geometry.
    """
    if isinstance(polygon, shapely.MultiPolygon):
        parts = [
            regularize_polygon(p, mode, pixel_size=pixel_size, fill_ratio=fill_ratio)
            for p in polygon.geoms
        ]
        return shapely.make_valid(shapely.MultiPolygon(parts))
    if polygon.is_empty or polygon.area == 0:
        return polygon
    rectangle = shapely.oriented_envelope(polygon)
    if mode == "rectangle" and polygon.area / rectangle.area >= fill_ratio:
        return rectangle
    corners = np.asarray(rectangle.exterior.coords)
    edges = np.diff(corners[:3], axis=0)
    longest = edges[int(np.argmax(np.hypot(edges[:, 0], edges[:, 1])))]
    angle = math.degrees(math.atan2(longest[1], longest[0]))
    centre = polygon.centroid
    rotated = shapely.affinity.rotate(polygon, -angle, origin=centre)
    smooth = rotated.simplify(pixel_size, preserve_topology=True)
    if not isinstance(smooth, shapely.Polygon):
        return polygon
    shell = _orthogonalize_ring(np.asarray(smooth.exterior.coords))
    if shell is None:
        return rectangle if mode == "rectangle" else polygon
    holes = [
        h
        for h in (_orthogonalize_ring(np.asarray(r.coords)) for r in smooth.interiors)
        if h is not None
    ]
    candidate = shapely.affinity.rotate(shapely.Polygon(shell, holes), angle, origin=centre)
    if not candidate.is_valid or not 0.5 <= candidate.area / polygon.area <= 1.5:
        return rectangle if mode == "rectangle" else polygon
    return candidate


def _to_map(geometry: npt.NDArray[np.object_], transform: Affine) -> npt.NDArray[np.object_]:
    """Map integer pixel-corner coordinates to the raster CRS with its affine transform."""
    a, b, c, d, e, f = tuple(transform)[:6]

    def apply(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        col, row = xy[:, 0], xy[:, 1]
        return np.column_stack([c + col * a + row * b, f + col * d + row * e])

    return shapely.transform(geometry, apply)


def change_type_name(
    from_class: str | None, to_class: str | None, building: str = BUILDING_CLASS
) -> str | None:
    """Name a change: "new building", "demolished building", otherwise "from → to".

    Args:
        from_class: class before (``None`` when unknown).
        to_class: class after (``None`` when unknown).
        building: name of the building class.

    Returns:
        The change type, or ``None`` when both classes are unknown.
    """
    if from_class is None and to_class is None:
        return None
    if to_class == building and from_class != building:
        return f"new {building}"
    if from_class == building and to_class != building:
        return f"demolished {building}"
    return f"{from_class or 'unknown'} → {to_class or 'unknown'}"


def _metric_measures(
    geometry: npt.NDArray[np.object_], crs: Any
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Area (m²) and perimeter (m): geodesic for geographic CRSs, scaled planar otherwise."""
    if crs is not None and crs.is_geographic:
        import pyproj

        geod = pyproj.CRS.from_user_input(crs.to_wkt()).get_geod()
        assert geod is not None
        measures = [geod.geometry_area_perimeter(g) for g in geometry]
        area = np.array([abs(m[0]) for m in measures], np.float64)
        perimeter = np.array([m[1] for m in measures], np.float64)
        return area, perimeter
    factor = 1.0
    if crs is not None:
        try:
            factor = float(crs.linear_units_factor[1])
        except Exception:  # CRS without linear units: keep map units
            factor = 1.0
    area = shapely.area(geometry) * factor * factor
    perimeter = shapely.length(geometry) * factor
    return np.asarray(area, np.float64), np.asarray(perimeter, np.float64)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _output_driver(out: Path) -> str | None:
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_DRIVERS:
        raise OutputError(
            f"unknown output format {suffix or '(no extension)'!r} for {str(out)!r}; use one of "
            + ", ".join(sorted(OUTPUT_DRIVERS))
        )
    return OUTPUT_DRIVERS[suffix]


def _layer_slug(name: str) -> str:
    text = name.replace("→", " to ").lower()
    return re.sub(r"[^0-9a-z]+", "_", text).strip("_") or "unknown"


def check_vector_output(
    out: str | os.PathLike[str], *, mode: WriteMode = "create", layer_per_type: bool = False
) -> None:
    """Check, before any work, that change polygons can be written to ``out``.

    Args:
        out: output path; the format comes from the extension (``.gpkg``, ``.parquet``,
            ``.geojson``, ``.fgb``).
        mode: ``"create"``, ``"overwrite"`` or ``"append"`` (see :func:`vectorize_changes`).
        layer_per_type: one layer per change type (GeoPackage only).

    Raises:
        ConfigurationError: options the format cannot hold.
        OutputError: unknown format, or the folder is not writable.
    """
    _check_write_options(Path(out), mode, layer_per_type)


def _check_write_options(out: Path, mode: WriteMode, layer_per_type: bool) -> str | None:
    driver = _output_driver(out)
    if mode not in ("create", "overwrite", "append"):
        raise ConfigurationError(f"mode must be 'create', 'overwrite' or 'append', got {mode!r}")
    if driver != "GPKG" and (layer_per_type or mode != "create"):
        raise ConfigurationError(
            f"{out.suffix} files hold a single layer: layer_per_type and mode={mode!r} need a "
            ".gpkg output"
        )
    check_writable_dir(out.parent if str(out.parent) else ".")
    return driver


#: Features per pyogrio call when writing GeoPackages (bounds the memory of the WKB buffers).
_WRITE_CHUNK = 65_536


class _WkbSpill:
    """Append-only temporary file of WKB blobs, so polygons do not pile up in memory.

    Interior polygons (most of them) are final as soon as their block is done: their WKB goes
    to disk and the object arrays keep a Python ``int`` handle instead. Building-like outlines
    polygonized at pixel level carry ~100 vertices (~2 KB of WKB), so on a 500k-object scene
    this is the difference between ~1 GB and a few tens of MB held by the main process.
    """

    def __init__(self) -> None:
        import tempfile

        self._file = tempfile.TemporaryFile(prefix="geochange-wkb-")
        self._lengths: list[npt.NDArray[np.int64]] = []
        self._count = 0
        self._offsets: npt.NDArray[np.int64] | None = None
        self._view: Any = None

    def add(self, blobs: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
        """Store WKB blobs; return an object array of their integer handles."""
        self._release_view()
        self._file.seek(0, os.SEEK_END)
        self._file.write(b"".join(blobs))
        self._lengths.append(np.fromiter((len(b) for b in blobs), np.int64, count=blobs.size))
        self._offsets = None
        handles = np.empty(blobs.size, dtype=object)
        handles[:] = range(self._count, self._count + blobs.size)
        self._count += blobs.size
        return handles

    def resolve(self, geometry: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
        """Copy of ``geometry`` with every handle replaced by its WKB bytes."""
        import mmap

        if self._offsets is None:
            lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
            self._offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if self._view is None and self._offsets[-1] > 0:
            self._file.flush()
            self._view = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        offsets, view = self._offsets, self._view
        out = np.empty(geometry.size, dtype=object)
        out[:] = [view[offsets[v] : offsets[v + 1]] if isinstance(v, int) else v for v in geometry]
        return out

    def _release_view(self) -> None:
        if self._view is not None:
            self._view.close()
            self._view = None

    def close(self) -> None:
        """Delete the temporary file."""
        self._release_view()
        self._file.close()


def _as_wkb(geometry: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """WKB bytes for every element of an array holding WKB and/or shapely geometries."""
    parsed = np.fromiter(
        (isinstance(g, shapely.Geometry) for g in geometry), np.bool_, count=geometry.size
    )
    if not parsed.any():
        return geometry
    out = geometry.copy()  # may be a view of the table's own array
    out[parsed] = shapely.to_wkb(geometry[parsed])
    return out


@dataclass
class _Table:
    """Change polygons to write: a GeoDataFrame, or attribute columns plus geometries.

    The column form lets :func:`vectorize_changes` write hundreds of thousands of polygons chunk
    by chunk without ever holding all of them as shapely objects. Its ``geometry`` may mix spill
    handles, WKB and shapely geometries (simplified/regularized outlines);
    :meth:`wkb` is the one place where they are normalised for the writers.
    """

    crs: Any
    frame: Any = None
    columns: dict[str, Any] | None = None
    geometry: npt.NDArray[np.object_] | None = None
    # Where WKB handles (ints) in ``geometry`` are stored, if any.
    spill: _WkbSpill | None = None

    def wkb(self, index: npt.NDArray[np.intp] | slice) -> npt.NDArray[np.object_]:
        """WKB bytes of rows ``index``, whatever form the geometries are held in."""
        assert self.geometry is not None
        geoms = self.geometry[index]
        if self.spill is not None:
            geoms = self.spill.resolve(geoms)
        return _as_wkb(geoms)

    def __len__(self) -> int:
        if self.frame is not None:
            return len(self.frame)
        assert self.geometry is not None
        return int(self.geometry.size)

    def change_types(self) -> npt.NDArray[np.object_]:
        values = self.frame["change_type"] if self.frame is not None else None
        if values is None:
            assert self.columns is not None
            values = self.columns["change_type"]
        return np.asarray(values, dtype=object)

    def is_multi(self, index: npt.NDArray[np.intp]) -> bool:
        if self.frame is not None:
            geoms = np.asarray(self.frame.geometry.values, dtype=object)[index]
            return bool(np.any(shapely.get_type_id(geoms) == 6))
        for first in range(0, index.size, _WRITE_CHUNK):  # chunks: bounded memory
            for w in self.wkb(index[first : first + _WRITE_CHUNK]):
                # WKB type code after the byte-order byte: 6 = MultiPolygon.
                order: Literal["little", "big"] = "little" if w[0] == 1 else "big"
                if int.from_bytes(w[1:5], order) == 6:
                    return True
        return False

    def to_frame(self, index: npt.NDArray[np.intp] | None = None) -> Any:
        if self.frame is not None:
            return self.frame if index is None else self.frame.iloc[index]
        assert self.columns is not None and self.geometry is not None
        select = slice(None) if index is None else index
        return _build_frame(
            {name: np.asarray(values)[select] for name, values in self.columns.items()},
            self.wkb(select),
            self.crs,
        )


def _build_frame(columns: dict[str, Any], geometry: npt.NDArray[np.object_], crs: Any) -> Any:
    """GeoDataFrame with the output schema (nullable floats/strings) from arrays."""
    import geopandas as gpd
    import pandas as pd

    if geometry.size and not isinstance(geometry[0], shapely.Geometry):
        geometry = shapely.from_wkb(geometry)
    data = {}
    for name, dtype in SCHEMA.items():
        values = columns[name]
        if dtype == "Float64":
            # NaN (no probability raster) becomes a null, written as NULL, not NaN.
            array = np.asarray(values, dtype=np.float64)
            data[name] = pd.array(np.where(np.isnan(array), 0.0, array), dtype="Float64").copy()
            data[name][np.isnan(array)] = pd.NA
        elif dtype == "object":
            data[name] = pd.Series(np.asarray(values, dtype=object), dtype="object")
        else:
            data[name] = pd.array(np.asarray(values), dtype=dtype)
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geometry, crs=crs), crs=crs)


def write_changes(
    frame: Any,
    out: str | os.PathLike[str],
    *,
    layer: str = "changes",
    mode: WriteMode = "create",
    layer_per_type: bool = False,
) -> Path:
    """Write change polygons atomically, with CRS, field types and a spatial index.

    Formats by extension: ``.gpkg`` (GeoPackage, R-tree index), ``.parquet`` (GeoParquet with a
    bbox covering column), ``.geojson`` and ``.fgb`` (FlatGeobuf, packed R-tree). The file is
    written under a temporary name and renamed when complete; with ``mode="overwrite"`` or
    ``"append"`` the existing GeoPackage is copied first, so a failure leaves it untouched.

    Args:
        frame: a GeoDataFrame as returned by :func:`vectorize_changes` (may be empty).
        out: output path.
        layer: layer name (prefix of the per-type layer names with ``layer_per_type``).
        mode: ``"create"`` replaces the file; ``"overwrite"`` replaces only the written layers
            of an existing GeoPackage and keeps its other layers; ``"append"`` adds features
            to existing layers (creating them if needed).
        layer_per_type: one layer per ``change_type`` (``"<layer>_new_building"``, ...);
            polygons without a change type go to ``layer``.

    Returns:
        The output path.

    Raises:
        OutputError: unknown extension or unwritable location.
        ConfigurationError: layer options a single-layer format cannot honour.
    """
    return _write_table(
        _Table(crs=frame.crs, frame=frame),
        out,
        layer=layer,
        mode=mode,
        layer_per_type=layer_per_type,
    )


def _write_table(
    table: _Table, out: str | os.PathLike[str], *, layer: str, mode: WriteMode, layer_per_type: bool
) -> Path:
    out = Path(out)
    driver = _check_write_options(out, mode, layer_per_type)
    everything = np.arange(len(table))
    parts: list[tuple[str, npt.NDArray[np.intp]]] = []
    types = table.change_types() if len(table) else np.zeros(0, object)
    if layer_per_type and any(t is not None for t in types):
        keys = np.array(["" if t is None else str(t) for t in types], dtype=object)
        for name in sorted(set(keys)):
            parts.append(
                (f"{layer}_{_layer_slug(name)}" if name else layer, np.flatnonzero(keys == name))
            )
    else:
        parts.append((layer, everything))

    with atomic_output(out) as tmp:
        # GDAL picks behaviour from the extension, so work on a file that keeps it and move it
        # onto atomic_output's temporary name once complete. It lives in a hidden directory
        # unique to this run: with a fixed name, the next run after a kill would reuse the
        # killed run's file and GDAL would add layers to it instead of starting a new one.
        scratch = Path(tempfile.mkdtemp(dir=tmp.parent, prefix=f".{out.name}."))
        work = scratch / f"partial{out.suffix}"
        try:
            if driver is None:
                table.to_frame().to_parquet(work, index=False, write_covering_bbox=True)
            else:
                if mode != "create" and out.exists():
                    shutil.copy2(out, work)
                for name, index in parts:
                    multi = table.is_multi(index)
                    if table.frame is not None:
                        append = mode == "append"
                        _write_layer(table.to_frame(index), work, name, driver, append, multi)
                        continue
                    # WKB tables: GeoPackage layers are written in chunks appended one after
                    # the other (bounded memory); single-layer formats in one call.
                    step = _WRITE_CHUNK if driver == "GPKG" else max(index.size, 1)
                    for first in range(0, max(index.size, 1), step):
                        rows = index[first : first + step]
                        append = mode == "append" if first == 0 else True
                        _write_wkb_layer(table, rows, work, name, driver, append, multi)
            os.replace(work, tmp)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return out


def _write_wkb_layer(
    table: _Table,
    rows: npt.NDArray[np.intp],
    path: Path,
    name: str,
    driver: str,
    append: bool,
    multi: bool,
) -> None:
    """Write rows of a WKB table with pyogrio's raw writer (no shapely round trip)."""
    import pyogrio.raw
    import pyproj

    assert table.columns is not None and table.geometry is not None
    fields: list[str] = []
    data: list[Any] = []
    masks: list[Any] = []
    for column, dtype in SCHEMA.items():
        values = table.columns[column]
        if dtype == "object":
            array = np.empty(rows.size, dtype=object)
            array[:] = [values[i] for i in rows]
            masks.append(np.fromiter((v is None for v in array), dtype=np.bool_, count=rows.size))
        else:
            array = np.asarray(values)[rows]
            masks.append(np.isnan(array) if dtype == "Float64" else None)
            if dtype == "Float64":
                array = np.where(np.isnan(array), 0.0, array)
        fields.append(column)
        data.append(array)
    options = {"SPATIAL_INDEX": "YES"} if driver in ("GPKG", "FlatGeobuf") else {}
    geometry = table.wkb(rows)
    pyogrio.raw.write(
        path,
        geometry,
        data,
        fields,
        field_mask=masks,
        layer=name,
        driver=driver,
        geometry_type="MultiPolygon" if multi else "Polygon",
        crs=pyproj.CRS.from_user_input(table.crs).to_wkt() if table.crs else None,
        promote_to_multi=multi,
        append=append and path.exists() and name in list_layers(path),
        **options,
    )


def _write_layer(frame: Any, path: Path, name: str, driver: str, append: bool, multi: bool) -> None:
    # Plain polygons stay polygons; any multipolygon (8-connectivity) promotes the layer.
    append = append and path.exists() and name in list_layers(path)
    write_polygon_layer(frame, path, name, driver, multi=multi, append=append)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def _run_blocks(
    jobs: list[_BlockJob], workers: int, progress: bool, spill: _WkbSpill, parallel: Parallel
) -> list[_BlockResult]:
    results: list[_BlockResult | None] = [None] * len(jobs)
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="vectorize", unit="block")

    def done(result: _BlockResult) -> None:
        # Interior objects stay WKB (half the memory of shapely geometries) until needed;
        # edge pieces are parsed for merging.
        if result.on_edge.any():
            result.wkb[result.on_edge] = shapely.from_wkb(result.wkb[result.on_edge])
        interior = ~result.on_edge
        if interior.any():
            result.wkb[interior] = spill.add(result.wkb[interior])
        results[result.index] = result
        if bar is not None:
            bar.update(1)

    if workers <= 1 or len(jobs) <= 1:
        try:
            for job in jobs:
                done(_polygonize_block(job))
        finally:
            _close_datasets()
    elif parallel == "threads":
        with ThreadPoolExecutor(workers, thread_name_prefix="geochange-vectorize") as threads:
            for result in threads.map(_polygonize_block_in_thread, jobs):
                done(result)
    else:
        # Fresh interpreters: they inherit neither the caller's memory (a training process
        # may hold GBs) nor its threads (forking with GDAL/torch threads can deadlock), never
        # re-run the caller's script (as spawn would), and die with this process.
        with WorkerPool(workers) as pool:
            for result in pool.map(_polygonize_block, jobs):
                done(result)
    if bar is not None:
        bar.close()
    return [r for r in results if r is not None]


def _class_id(value: str | int, names: list[str] | None) -> int:
    if isinstance(value, int | np.integer):
        return int(value)
    if names is not None and value in names:
        return names.index(value)
    raise ConfigurationError(f"unknown class {value!r} in change_classes; classes are {names}")


def vectorize_changes(
    change: ChangeProducts | str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    probability: str | os.PathLike[str] | None = None,
    semantic_pre: str | os.PathLike[str] | None = None,
    semantic_post: str | os.PathLike[str] | None = None,
    class_names: Sequence[str] | None = None,
    change_classes: Iterable[str | int] | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    regularize: Regularize | None = None,
    block_size: int = 4096,
    layer: str = "changes",
    connectivity: Literal[4, 8] = 4,
    group_by: GroupBy = "change_type",
    layer_per_type: bool = False,
    mode: WriteMode = "create",
    workers: int | None = None,
    progress: bool = False,
    return_frame: bool = True,
    parallel: Parallel = "processes",
    mask_values: str = "auto",
) -> Any:
    """Vectorize a change raster into change polygons, block by block, at any raster size.

    The polygons are identical to polygonizing the whole raster at once with
    :func:`rasterio.features.shapes` (same objects, vertices, holes; area = pixel count x pixel
    area), in the raster's CRS, while memory stays bounded by ``block_size``. Under
    8-connectivity, pixels joined only through a corner are returned as a valid
    (multi)polygon instead of GDAL's invalid self-touching ring.

    Args:
        change: change raster path (0 no change, 1 change, 255 or nodata = no data, no
            polygon; other values raise, see ``mask_values``), or
            a ``geochange.predict.PredictionResult`` (any object with ``change``,
            ``probability``, ``semantic_pre``, ``semantic_post`` and ``class_names``
            attributes).
        out: optional output path; format from the extension (``.gpkg``, ``.parquet``,
            ``.geojson``, ``.fgb``).
        probability: change probability raster (uint8 0..255 scaled, or float 0..1) for
            ``mean_prob`` / ``max_prob``.
        semantic_pre: class raster before (uint8 class ids, nodata 255).
        semantic_post: class raster after.
        class_names: class names in id order; default from the semantic rasters'
            ``GEOCHANGE_CLASS_NAMES`` tag.
        change_classes: keep only changes whose from- or to-class is one of these (names or
            ids), e.g. ``["building"]``.
        min_area: drop polygons smaller than this (square map units, counted in pixels before
            simplification).
        simplify: simplification tolerance in map units (0: none); topology is preserved:
            no self-intersections, no new overlaps, shared edges stay shared.
        regularize: ``"rectangle"`` or ``"orthogonal"`` squares up building outlines (see
            :func:`regularize_polygon`); applied to building change types only, or to every
            polygon of a binary change raster (binary building-change models).
        block_size: block side in pixels (memory per worker grows with its square).
        layer: output layer name.
        connectivity: 4 (edge neighbours) or 8 (also corner neighbours) pixel connectivity.
        group_by: with semantic rasters, ``"change_type"`` (default) makes one polygon per
            connected region of one change type, so a new building next to a new road stays a
            separate polygon; ``"change"`` makes one polygon per connected changed region, with
            majority from/to classes.
        layer_per_type: write one layer per change type (GeoPackage only).
        mode: ``"create"``, ``"overwrite"`` (replace these layers, keep others) or
            ``"append"``; see :func:`write_changes`.
        workers: processes polygonizing blocks (default: all cores; 1: in this process).
        progress: show a progress bar.
        return_frame: build and return the GeoDataFrame. With ``False`` (used by the command
            line) the polygons go from the workers' WKB straight to ``out`` in chunks and
            ``None`` is returned, which keeps memory far lower for very large outputs.
        parallel: how ``workers > 1`` run: ``"processes"`` (default; fresh worker
            interpreters that never re-run the calling script, so no ``__main__`` guard is
            needed, and that exit when the caller dies) or ``"threads"`` (threads of this
            process: no worker start-up or per-worker memory, for interpreters that cannot
            start subprocesses; the polygonization holds the GIL most of the time, so they
            run at about the speed of ``workers=1``).
        mask_values: how the change raster stores change (see
            :func:`geochange.io.check_change_mask`): ``"auto"`` (0/1 with 255 = no data; a
            0/255 mask is refused with a message naming this option, unless it is a
            geochange ``change.tif``), ``"0,1"`` or ``"0,255"`` (255 = change).

    Returns:
        A ``geopandas.GeoDataFrame`` with columns ``change_id``, ``area_m2``, ``perimeter_m``,
        ``pixel_count``, ``mean_prob``, ``max_prob``, ``from_class``, ``to_class``,
        ``change_type`` and the geometry, in the raster's CRS, ordered top to bottom, left to
        right. Class fields are null for binary inputs, probability fields without a
        probability raster. ``None`` when ``return_frame=False``.

    Raises:
        DataError: bad input rasters (multi-band or float change raster, grid mismatch, change
            values outside the change-mask convention or a 0/255 mask under ``"auto"``).
        ConfigurationError: inconsistent arguments.
        OutputError: unknown output extension or unwritable output.
    """
    # ---- validate everything before any long work
    if connectivity not in (4, 8):
        raise ConfigurationError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if regularize not in (None, "rectangle", "orthogonal"):
        raise ConfigurationError(
            f"regularize must be None, 'rectangle' or 'orthogonal', got {regularize!r}"
        )
    if group_by not in ("change_type", "change"):
        raise ConfigurationError(f"group_by must be 'change_type' or 'change', got {group_by!r}")
    if block_size < 2:
        raise ConfigurationError(f"block_size must be at least 2 pixels, got {block_size}")
    if parallel not in ("processes", "threads"):
        raise ConfigurationError(f"parallel must be 'processes' or 'threads', got {parallel!r}")
    if min_area < 0 or simplify < 0:
        raise ConfigurationError("min_area and simplify must be non-negative")
    out_path = Path(out) if out is not None else None
    if out_path is None and not return_frame:
        raise ConfigurationError("return_frame=False needs an output path: nothing to return")
    if out_path is not None:
        _check_write_options(out_path, mode, layer_per_type)
    inputs = _resolve_inputs(
        change, probability, semantic_pre, semantic_post, class_names, mask_values
    )
    semantic = inputs.semantic_pre is not None
    names = inputs.class_names
    num_classes = len(names) if names is not None else 255
    building = names.index(BUILDING_CLASS) if names and BUILDING_CLASS in names else None
    wanted = {_class_id(c, names) for c in change_classes} if change_classes is not None else None
    if wanted is not None and not semantic:
        raise ConfigurationError("change_classes needs semantic_pre and semantic_post rasters")

    # ---- block plan and per-block polygonization
    grid = BlockGrid(inputs.height, inputs.width, block_size)
    jobs = [
        _BlockJob(
            index=block.index,
            row_off=block.row_off,
            col_off=block.col_off,
            height=block.height,
            width=block.width,
            change=str(inputs.change),
            change_mask=inputs.change_mask,
            probability=str(inputs.probability) if inputs.probability else None,
            probability_scale=inputs.probability_scale,
            probability_nodata=inputs.probability_nodata,
            semantic_pre=str(inputs.semantic_pre) if semantic else None,
            semantic_post=str(inputs.semantic_post) if semantic else None,
            num_classes=num_classes,
            building=building,
            group_by=group_by,
            connectivity=connectivity,
            transform=tuple(inputs.transform)[:6],
            crs_wkt=inputs.crs.to_wkt() if inputs.crs is not None else None,
        )
        for block in grid
    ]
    n_workers = min(workers or os.cpu_count() or 1, len(jobs))
    spill = _WkbSpill()
    try:
        results = _run_blocks(jobs, n_workers, progress, spill, parallel)
        objects = _merge_blocks(results, grid, connectivity, inputs.transform, inputs.crs)
        del results
        return _finish(
            objects,
            spill,
            inputs,
            out_path,
            names=names,
            building=building,
            wanted=wanted,
            semantic=semantic,
            min_area=min_area,
            simplify=simplify,
            regularize=regularize,
            layer=layer,
            group_by=group_by,
            layer_per_type=layer_per_type,
            mode=mode,
            return_frame=return_frame,
        )
    finally:
        spill.close()


def _finish(
    objects: _Objects,
    spill: _WkbSpill,
    inputs: _Inputs,
    out_path: Path | None,
    *,
    names: list[str] | None,
    building: int | None,
    wanted: set[int] | None,
    semantic: bool,
    min_area: float,
    simplify: float,
    regularize: Regularize | None,
    layer: str,
    group_by: GroupBy,
    layer_per_type: bool,
    mode: WriteMode,
    return_frame: bool,
) -> Any:
    """Filter, name, post-process and write the merged objects (see vectorize_changes)."""
    # ---- filters
    pixel_area = abs(inputs.transform.determinant)
    keep = objects.pixel_count * pixel_area >= min_area
    if wanted is not None:
        keep &= np.isin(objects.pre_major, list(wanted)) | np.isin(objects.post_major, list(wanted))
    # Deterministic order, independent of the block size: north to south, then west to east.
    bounds = objects.bounds
    order = np.lexsort((objects.codes, bounds[:, 2], -bounds[:, 1], bounds[:, 0], -bounds[:, 3]))
    order = order[keep[order]]
    geometry = objects.wkb[order]
    del objects.wkb
    codes = objects.codes[order]
    pre_major = objects.pre_major[order]
    post_major = objects.post_major[order]
    area, perimeter = objects.area[order], objects.perimeter[order]

    # ---- classes and change types
    def class_name(index: int) -> str | None:
        if index < 0:
            return None
        return names[index] if names is not None and index < len(names) else str(index)

    from_class: list[str | None]
    to_class: list[str | None]
    change_type: list[str | None]
    if semantic:
        from_class = [class_name(int(i)) for i in pre_major]
        to_class = [class_name(int(i)) for i in post_major]
        if group_by == "change_type" and building is not None:
            # The region's code fixes its type (from/to majority could disagree at edges).
            bname = BUILDING_CLASS
            change_type = [
                f"new {bname}"
                if code == _CODE_CHANGE
                else f"demolished {bname}"
                if code == _CODE_DEMOLISHED
                else change_type_name(f, t)
                for code, f, t in zip(codes, from_class, to_class, strict=True)
            ]
        else:
            change_type = [
                change_type_name(f, t) for f, t in zip(from_class, to_class, strict=True)
            ]
    else:
        from_class = to_class = change_type = [None] * geometry.size

    # ---- geometry: simplification, regularization (need shapely geometries)
    if (simplify > 0 or regularize is not None) and geometry.size:
        geometry = shapely.from_wkb(spill.resolve(geometry))
        if simplify > 0:
            simplified = shapely.coverage_simplify(geometry, simplify)
            bad = ~shapely.is_valid(simplified) | shapely.is_empty(simplified)
            simplified[bad] = shapely.simplify(geometry[bad], simplify, preserve_topology=True)
            geometry = simplified
        if regularize is not None:
            pixel_size = math.sqrt(pixel_area)
            for i, ctype in enumerate(change_type):
                if not semantic or (ctype is not None and BUILDING_CLASS in ctype):
                    geometry[i] = regularize_polygon(geometry[i], regularize, pixel_size=pixel_size)
        area, perimeter = _metric_measures(geometry, inputs.crs)

    columns = {
        "change_id": np.arange(1, geometry.size + 1, dtype=np.int64),
        "area_m2": area,
        "perimeter_m": perimeter,
        "pixel_count": objects.pixel_count[order],
        "mean_prob": objects.prob_mean[order],
        "max_prob": objects.prob_max[order],
        "from_class": from_class,
        "to_class": to_class,
        "change_type": change_type,
    }
    # "EPSG:xxxx" when the raster's CRS has an authority code, its WKT otherwise.
    crs = inputs.crs.to_string() if inputs.crs is not None else None
    if not return_frame:
        if out_path is not None:
            table = _Table(crs=crs, columns=columns, geometry=geometry, spill=spill)
            _write_table(table, out_path, layer=layer, mode=mode, layer_per_type=layer_per_type)
        return None
    if geometry.size and not isinstance(geometry[0], shapely.Geometry):
        # Parse chunk by chunk, freeing the WKB as we go, so both never coexist in full.
        parsed = np.empty(geometry.size, dtype=object)
        for first in range(0, geometry.size, _WRITE_CHUNK):
            chunk = slice(first, first + _WRITE_CHUNK)
            parsed[chunk] = shapely.from_wkb(spill.resolve(geometry[chunk]))
            geometry[chunk] = None
        geometry = parsed
    frame = _build_frame(columns, geometry, crs)
    if out_path is not None:
        write_changes(frame, out_path, layer=layer, mode=mode, layer_per_type=layer_per_type)
    return frame
