"""Tiles of a prediction: their windows, blending weights, batched inference and stripes.

:func:`_compute_tiles` reads the tiles of some tile rows through a DataLoader, runs the model
on them and yields one :class:`_TileResult` per tile in row-major order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from geochange.errors import ConfigurationError, GeochangeError
from geochange.io import worker_init_bound_malloc
from geochange.predict.inference import _Inferencer
from geochange.predict.reader import TileDataset
from geochange.predict.windows import ColumnStripe, TileGrid, column_stripes

# Narrowest stripe, in tiles, whatever band_memory_mb says (at most ~1/6 tiles recomputed).
MIN_STRIPE_TILES = 8
# glibc mmap threshold of the predicting process (reader workers use 128 KiB).
PREDICT_MMAP_THRESHOLD = 8 * 2**20
# Batches in flight in _compute_tiles: 2 = the next one runs while the last is blended
# (1 = one after the other).
PIPELINE_DEPTH = 2


def _tile_windows(
    grid: TileGrid, rows: Sequence[int], cols: Sequence[int], origin: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    row_starts, col_starts = grid.row_starts, grid.col_starts
    return [
        (origin[0] + row_starts[r], origin[1] + col_starts[c], grid.tile_height, grid.tile_width)
        for r in rows
        for c in cols
    ]


@dataclass
class _TileResult:
    """Probabilities ``probs[ch, h, w]`` of one tile (None when the tile is all nodata)."""

    row: int
    col: int
    probs: np.ndarray | None
    valid: np.ndarray
    weighted: bool = False  # probs already multiplied by the blending window


def _tile_weights(grid: TileGrid, row: int, col: int) -> np.ndarray:
    """The (separable) blending window of tile ``(row, col)``, float32 ``[h, w]``."""
    return (grid.row_weights(row)[:, None] * grid.col_weights(col)[None, :]).astype(np.float32)


def _weight_tile(grid: TileGrid, tile: _TileResult, weights: np.ndarray | None = None) -> None:
    """Multiply the tile's probabilities by its blending window, in place."""
    if tile.probs is not None and not tile.weighted:
        tile.probs *= _tile_weights(grid, tile.row, tile.col) if weights is None else weights
    tile.weighted = True


def _compute_tiles(
    inferencer: _Inferencer,
    source: Any,
    grid: TileGrid,
    rows: Sequence[int],
    channels: int,
    *,
    cols: Sequence[int] | None = None,
    origin: tuple[int, int] = (0, 0),
    batch_size: int = 4,
    num_workers: int = 0,
    pin_memory: bool = False,
    progress: Any = None,
) -> Iterator[_TileResult]:
    """Run the model on the tiles of ``rows`` x ``cols``; yield tiles in row-major order.

    ``cols`` defaults to every tile column.
    """
    rows = list(rows)
    cols = list(range(len(grid.col_starts))) if cols is None else list(cols)
    if not rows or not cols:
        return
    dataset = TileDataset(source, _tile_windows(grid, rows, cols, origin))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=_collate,
        worker_init_fn=worker_init_bound_malloc if num_workers > 0 else None,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )
    # Double buffering: batch N runs on the model thread while this thread hands out the
    # tiles of batch N - 1 (blended, decoded, queued for writing by the caller) and reads batch
    # N + 1; the model still sees the same batches in the same order.
    pending: list[tuple[Future[np.ndarray] | None, dict[str, Any], np.ndarray]] = []
    # Engines running several batches at once get them all in flight, plus the one blended.
    depth = max(PIPELINE_DEPTH, inferencer.engine.concurrency + 1)
    batches, error = iter(loader), None
    while error is None:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except GeochangeError as err:  # read inline (no reader worker)
            error = err
            break
        if "error" in batch:
            error = batch["error"]
            break
        valid = batch["valid"].numpy()
        keep = valid.reshape(valid.shape[0], -1).any(axis=1)
        image = batch.pop("image")
        future = inferencer.submit(image[torch.from_numpy(keep)]) if keep.any() else None
        del image  # the model thread holds the kept tiles
        pending.append((future, batch, keep))
        if len(pending) >= depth:
            yield from _batch_tiles(*pending.pop(0), rows, cols, channels, progress)
    # The batches read before a failed read are blended and written first, as without the
    # double buffering: an interrupted run keeps (and resumes from) the same rows.
    while pending:
        yield from _batch_tiles(*pending.pop(0), rows, cols, channels, progress)
    if error is not None:
        raise error


def _batch_tiles(
    future: Future[np.ndarray] | None,
    batch: dict[str, Any],
    keep: np.ndarray,
    rows: list[int],
    cols: list[int],
    channels: int,
    progress: Any,
) -> Iterator[_TileResult]:
    """The tiles of one batch, once its probabilities are ready."""
    probs = future.result() if future is not None else None
    if probs is not None and probs.shape[1] != channels:
        raise ConfigurationError(
            f"the model produced {probs.shape[1]} output channels, expected {channels}"
        )
    valid, ncols, kept = batch["valid"].numpy(), len(cols), 0
    for i, index in enumerate(batch["index"]):
        tile_probs = None
        if keep[i]:
            assert probs is not None
            tile_probs = probs[kept]
            kept += 1
        yield _TileResult(rows[index // ncols], cols[index % ncols], tile_probs, valid[i])
    if progress is not None:
        progress.update(len(batch["index"]))


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    for item in items:
        if "error" in item:  # a reader worker's GeochangeError, raised in the main process
            return {"error": item["error"]}
    return {
        "image": torch.stack([item["image"] for item in items]),
        "valid": torch.stack([item["valid"] for item in items]),
        "index": [int(item["index"]) for item in items],
    }


def _rows_from(grid: TileGrid, skip: int) -> list[int]:
    """The tile rows that contribute to scene rows from ``skip`` down."""
    starts = grid.row_starts
    first = next((r for r, s in enumerate(starts) if s + grid.tile_height > skip), len(starts))
    return list(range(first, len(starts)))


def stripes_for_budget(
    grid: TileGrid, channels: int, classes: int, semantic_blend: str, band_memory_mb: float
) -> list[ColumnStripe]:
    """Column stripes whose blending bands fit ``band_memory_mb``."""
    if classes and semantic_blend == "center":
        per_pixel = 4 + 2 + 4 + 1  # change sum, two class ids, best weight, valid
    else:
        per_pixel = 4 * channels + 1
    max_width = int(band_memory_mb * 2**20) // (grid.tile_height * per_pixel)
    # Stripes narrower than a few tiles would recompute a large share of the tiles.
    max_width = max(max_width, MIN_STRIPE_TILES * grid.tile_width)
    return column_stripes(grid, max_width)


def calibrate_on_scene(
    inferencer: _Inferencer,
    source: Any,
    grid: TileGrid,
    *,
    count: int,
    threshold: float,
    origin: tuple[int, int] = (0, 0),
) -> float | None:
    """With ``precision="int8"``: quantize on ``count`` tiles spread evenly over the scene.

    Returns the held-out agreement with fp32 (None at other precisions).

    Raises:
        QuantizationError: int8 changes too many binary change pixels (see
            :mod:`geochange.predict.engines.quantize`).
    """
    if inferencer.engine.precision != "int8":
        return None
    from geochange.predict.engines.quantize import sample_indices

    rows = range(len(grid.row_starts))
    windows = _tile_windows(grid, rows, range(len(grid.col_starts)), origin)
    picked = [windows[i] for i in sample_indices(count, len(windows))]
    return inferencer.calibrate(source, picked, threshold)
