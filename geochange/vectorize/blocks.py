"""Per-block polygonizing: the job a worker runs on one block, and running all blocks."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.crs
import rasterio.features
import rasterio.windows
import scipy.ndimage as ndi
import shapely
from affine import Affine

from geochange._blockwise import EdgeStrips, edge_strips
from geochange.io import DEFAULT_GDAL_CACHE_BYTES, ChangeMask, gdal_cache, read_errors
from geochange.parallel import WorkerPool
from geochange.vectorize.geometry import _to_map
from geochange.vectorize.schema import (
    _CODE_CHANGE,
    _CODE_DEMOLISHED,
    _FIRST_TRANSITION_CODE,
    Parallel,
    _metric_measures,
)
from geochange.vectorize.writer import _WkbSpill


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
    """Labels, polygons and per-label statistics of one block (label ``i`` at index ``i - 1``)."""
    window = rasterio.windows.Window(job.col_off, job.row_off, job.width, job.height)
    codes, pre, post = _change_codes(job, window)
    labels, count = _label_codes(codes, job.connectivity)

    edges = edge_strips(labels)
    edge_labels = edges.labels()
    on_edge = np.zeros(count, np.bool_)
    on_edge[edge_labels - 1] = True

    wkb, bounds, area, perimeter = _block_polygons(job, labels, count, on_edge)

    flat_labels = labels.ravel()
    foreground = np.flatnonzero(flat_labels)
    lab = flat_labels[foreground]
    pixel_count = np.bincount(lab, minlength=count + 1)
    label_codes = np.zeros(count + 1, np.int32)
    label_codes[lab] = codes.ravel()[foreground]

    prob_count, prob_sum, prob_max = _probability_stats(job, window, foreground, lab, count)

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


def _block_polygons(
    job: _BlockJob, labels: npt.NDArray[np.int32], count: int, on_edge: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.float64], npt.NDArray[Any], npt.NDArray[Any]]:
    """WKB of every label; bounds, area and perimeter of the interior ones (NaN on the edge)."""
    wkb = np.empty(count, dtype=object)
    bounds = np.full((count, 4), np.nan)
    area = np.full(count, np.nan)
    perimeter = np.full(count, np.nan)
    if not count:
        return wkb, bounds, area, perimeter
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
    return wkb, bounds, area, perimeter


def _probability_stats(
    job: _BlockJob,
    window: rasterio.windows.Window,
    foreground: npt.NDArray[np.intp],
    lab: npt.NDArray[np.int32],
    count: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Valid probability pixels, their sum and their maximum per label (index 0: background)."""
    prob_count = np.zeros(count + 1, np.int64)
    prob_sum = np.zeros(count + 1, np.float64)
    prob_max = np.full(count + 1, np.nan, np.float64)
    if job.probability is None or not count:
        return prob_count, prob_sum, prob_max
    prob = _read(job.probability, window).ravel()[foreground]
    valid = np.isfinite(prob)
    if job.probability_nodata is not None:
        valid &= prob != job.probability_nodata
    values = prob[valid].astype(np.float64) * job.probability_scale
    plab = lab[valid]
    prob_count = np.bincount(plab, minlength=count + 1)
    prob_sum = np.bincount(plab, weights=values, minlength=count + 1).astype(np.float64)
    if plab.size:
        order = np.argsort(plab, kind="stable")
        sorted_labels = plab[order]
        starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
        prob_max[sorted_labels[starts]] = np.maximum.reduceat(values[order], starts)
    return prob_count, prob_sum, prob_max


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
