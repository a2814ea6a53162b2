"""Prediction beyond one process and one file: Dask blocks of tile rows, xarray in and out.

With a ``dask.distributed`` client, blocks of tile rows run on the workers (each loads the
model once) and come back, weighted, in order; :func:`xarray_source` and :func:`to_dataset`
are the array ends of :meth:`~geochange.predict.ChangePredictor.predict_xarray`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from geochange.errors import DataError, GeochangeError
from geochange.io import CLASS_NAMES_TAG, bound_malloc_growth, gdal_cache
from geochange.predict.inference import _Inferencer
from geochange.predict.reader import ArrayPair, picklable_error
from geochange.predict.tiles import (
    PREDICT_MMAP_THRESHOLD,
    _compute_tiles,
    _TileResult,
    _weight_tile,
)
from geochange.predict.windows import ColumnStripe, TileGrid

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

MAX_ROWS_PER_BLOCK = 2


def _dask_tiles(
    inferencer: _Inferencer,
    source: Any,
    grid: TileGrid,
    rows: list[int],
    cols: list[int],
    channels: int,
    origin: tuple[int, int],
    batch_size: int,
    gdal_cache_mb: int = 64,
) -> list[_TileResult]:
    """Dask task: the weighted tiles of a block of tile rows x columns (all-nodata dropped).

    Weighting happens here, with the same arithmetic as in a single process, so the client's
    blend is bit-identical to a single-process run.
    """
    bound_malloc_growth(PREDICT_MMAP_THRESHOLD)
    tiles = []
    try:
        with gdal_cache(gdal_cache_mb * 2**20):
            for tile in _compute_tiles(
                inferencer,
                source,
                grid,
                rows,
                channels,
                cols=cols,
                origin=origin,
                batch_size=batch_size,
            ):
                if tile.probs is not None:
                    _weight_tile(grid, tile)
                    tiles.append(tile)
        return tiles
    except GeochangeError as err:
        raise picklable_error(err) from None  # it goes back to the client
    finally:
        if hasattr(source, "close"):
            source.close()


def _dask_results(
    client: Any,
    inferencer: _Inferencer,
    source: Any,
    grid: TileGrid,
    work: list[tuple[int, ColumnStripe, list[int]]],
    channels: int,
    origin: tuple[int, int],
    *,
    batch_size: int,
    gdal_cache_mb: int,
    blocks_per_worker: int,
    bar: Any,
) -> Iterator[tuple[int, list[_TileResult]]]:
    """Run blocks of tile rows on Dask workers; yield ``(stripe, tiles)`` per block.

    Blocks come in order, each once, even when all its tiles were nodata; the tiles are
    already weighted.
    """
    from distributed import as_completed

    workers = max(1, len(client.scheduler_info().get("workers", {})))
    total_rows = sum(len(rows) for _, _, rows in work)
    nblocks = max(1, min(total_rows, workers * blocks_per_worker))
    # At most MAX_ROWS_PER_BLOCK tile rows per block: blocks cost no extra compute (tiles
    # are independent), and small ones keep the client's in-flight results small.
    size = min(math.ceil(total_rows / nblocks), MAX_ROWS_PER_BLOCK)
    blocks = [
        (index, rows[i : i + size], list(stripe.cols))
        for index, stripe, rows in work
        for i in range(0, len(rows), size)
    ]
    # Ship the model once to every worker; tasks reuse the worker's deserialized copy.
    [model_future] = client.scatter([inferencer], broadcast=True, hash=False)
    window = max(1, 2 * workers)  # blocks in flight, to bound client memory
    submitted: dict[Any, int] = {}
    done: dict[int, list[_TileResult]] = {}
    next_block = 0
    queue = as_completed()

    def submit(index: int) -> None:
        _, rows, cols = blocks[index]
        future = client.submit(
            _dask_tiles,
            model_future,
            source,
            grid,
            rows,
            cols,
            channels,
            origin,
            batch_size,
            gdal_cache_mb,
            pure=False,
        )
        submitted[future] = index
        queue.add(future)

    for index in range(min(window, len(blocks))):
        submit(index)
    issued = min(window, len(blocks))
    for future in queue:
        index = submitted.pop(future)
        done[index] = future.result()
        bar.update(len(blocks[index][1]) * len(blocks[index][2]))
        while next_block in done:
            yield blocks[next_block][0], done.pop(next_block)
            next_block += 1
            if issued < len(blocks):
                submit(issued)
                issued += 1


# --- xarray -----------------------------------------------------------------------------------


def xarray_source(
    pre: xr.DataArray, post: xr.DataArray, in_channels: int | None
) -> tuple[ArrayPair, xr.DataArray, Any]:
    """The tile source of two ``(band, y, x)`` arrays, ``pre`` as such, and its CRS (or None).

    The post array is reprojected onto the pre grid with rioxarray when their CRS or
    transform differ.

    Raises:
        DataError: arrays that are not ``(band, y, x)``, differ in shape, or whose band count
            is not ``in_channels``.
    """
    if pre.ndim == 2:
        pre = pre.expand_dims("band")
    if post.ndim == 2:
        post = post.expand_dims("band")
    if pre.ndim != 3 or post.ndim != 3:
        raise DataError("predict_xarray expects (band, y, x) arrays")
    crs = _rio_crs(pre)
    if crs is not None and _rio_crs(post) is not None:
        same = (
            crs == _rio_crs(post)
            and post.shape == pre.shape
            and (pre.rio.transform().almost_equals(post.rio.transform()))
        )
        if not same:
            post = post.rio.reproject_match(pre)
    if pre.shape != post.shape:
        raise DataError(f"pre {pre.shape} and post {post.shape} arrays differ in shape")
    if in_channels is not None and pre.shape[0] != in_channels:
        raise DataError(f"the model expects {in_channels} bands but the arrays have {pre.shape[0]}")
    source = ArrayPair(
        pre.data,
        post.data,
        pre_nodata=_rio_nodata(pre),
        post_nodata=_rio_nodata(post),
    )
    return source, pre, crs


def to_dataset(
    outputs: dict[str, Any], pre: xr.DataArray, names: list[str], crs: Any, classes: int = 0
) -> xr.Dataset:
    """The decoded rasters (numpy or dask) as a CF-described Dataset on the grid of ``pre``.

    Coordinates, CRS and transform are those of ``pre``; each variable gets the CF attributes
    of :func:`geochange.predict.lazy.describe`.
    """
    import xarray as xr

    from geochange.predict.lazy import describe

    coords = {k: pre.coords[k] for k in ("y", "x") if k in pre.coords}
    data_vars = {key: (("y", "x"), values) for key, values in outputs.items()}
    dataset = xr.Dataset(data_vars, coords=coords)
    describe(dataset, classes, names)
    if names:
        dataset.attrs[CLASS_NAMES_TAG] = json.dumps(names)
    if crs is not None:
        dataset = dataset.rio.write_crs(crs)
        dataset = dataset.rio.write_transform(pre.rio.transform())
    return dataset


def _rio_crs(array: Any) -> Any:
    try:
        return array.rio.crs
    except Exception:  # rioxarray not registered or no CRS
        return None


def _rio_nodata(array: Any) -> float | None:
    try:
        value = array.rio.nodata
    except Exception:
        value = None
    return None if value is None else float(value)


def array_writer(
    outputs: dict[str, np.ndarray], height: int, width: int, x0: int
) -> Callable[[int, dict[str, np.ndarray], int], None]:
    """A ``write(top, arrays, col)`` into whole-scene arrays, for a stripe starting at ``x0``."""

    def write(top: int, arrays: dict[str, np.ndarray], col: int) -> None:
        for key, values in arrays.items():
            if key not in outputs:
                outputs[key] = np.empty((height, width), dtype=values.dtype)
            rows, cols = values.shape
            outputs[key][top : top + rows, x0 + col : x0 + col + cols] = values

    return write
