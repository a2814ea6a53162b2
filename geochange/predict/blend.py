"""Blending tiles into seamless rows: :class:`_BandAssembler` and :func:`blend_stripe`.

Tiles are weighted by their window, summed into a band one tile row high, divided by the
weight sum once no further tile reaches a row, decoded and handed to a writer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from geochange.io import trim_heap
from geochange.predict.tiles import _tile_weights, _TileResult, _weight_tile
from geochange.predict.windows import ColumnStripe, TileGrid, column_stripes

# Columns decoded at a time when rows are released (bounds float32 temporaries).
DECODE_CHUNK_WIDTH = 2048
# Tiles between two heap trims (see geochange.io.trim_heap).
TRIM_EVERY_TILES = 64
# Blending windows kept (a grid has a few distinct ones: edges, inner, the clamped last).
WEIGHT_CACHE_SIZE = 16

#: ``decode(probs, valid, labels)`` -> output arrays of some rows.
Decode = Callable[[np.ndarray, np.ndarray, np.ndarray | None], dict[str, np.ndarray]]
#: ``write(top, arrays, col)``: store decoded rows from ``top`` at stripe column ``col``.
Write = Callable[[int, dict[str, np.ndarray], int], None]


class _BandAssembler:
    """Blends tiles into a rolling band of rows and writes finished, decoded rows.

    The band covers the rows of the current tile row and the columns of one
    :class:`ColumnStripe` (the whole width by default). Rows above the start of the next tile
    row receive no further contributions, so they are divided by the (separable) weight sum,
    decoded by ``decode(probs, valid, labels)`` in column chunks (so the float32 temporaries
    stay small for many-class models) and each chunk of the stripe's output columns is handed
    to ``write(top, arrays, col)`` (``col`` counted from the stripe's first output column).
    Only one band of ``channels x tile_height x band_width`` float32 values is held.

    With ``classes`` > 0 and ``semantic_blend="center"`` only the change probability is
    blended; each date's class map takes the arg-max of the tile with the largest window weight
    at each pixel (kept as two uint8 classes and one float32 weight: 6 bytes per pixel instead
    of ``8 K``), and ``labels`` holds the two class maps.
    """

    def __init__(
        self,
        grid: TileGrid,
        channels: int,
        decode: Decode,
        write: Write,
        skip_until: int = 0,
        chunk_width: int | None = None,
        classes: int = 0,
        semantic_blend: str = "probability",
        stripe: ColumnStripe | None = None,
    ) -> None:
        self.grid = grid
        self.decode = decode
        self.write = write
        self.skip_until = skip_until
        self.chunk_width = max(1, int(chunk_width or DECODE_CHUNK_WIDTH))
        self.stripe = stripe or column_stripes(grid, None)[0]
        self.row_starts = grid.row_starts
        self.row_sum = grid.row_weight_sum().astype(np.float32)
        self.col_sum = grid.col_weight_sum().astype(np.float32)
        h, width = grid.tile_height, self.stripe.band_width
        self.classes = classes
        self.center = bool(classes) and semantic_blend == "center"
        self.acc = np.zeros((1 if self.center else channels, h, width), dtype=np.float32)
        self.labels: np.ndarray | None = None
        self.best: np.ndarray | None = None
        if self.center:
            self.labels = np.zeros((2, h, width), dtype=np.uint8)
            self.best = np.zeros((h, width), dtype=np.float32)
        self.valid = np.zeros((h, width), dtype=bool)
        self.top: int | None = None
        self.row: int | None = None
        self.tiles = 0
        self._weights_cache: dict[tuple[bytes, bytes], np.ndarray] = {}

    def _release(self, until: int) -> None:
        assert self.top is not None
        count = until - self.top
        if count <= 0:
            return
        start = self.top
        if until > self.skip_until:
            first = max(0, self.skip_until - start)  # resumed run: rows on disk are dropped
            row_sum = self.row_sum[start + first : until, None]
            x0, out_x0, out_x1 = self.stripe.band_x0, self.stripe.out_x0, self.stripe.out_x1
            for s0 in range(out_x0, out_x1, self.chunk_width):
                s1 = min(out_x1, s0 + self.chunk_width)
                c0, c1 = s0 - x0, s1 - x0  # band columns
                probs = self.acc[:, first:count, c0:c1] / (row_sum * self.col_sum[None, s0:s1])
                labels = None if self.labels is None else self.labels[:, first:count, c0:c1]
                arrays = self.decode(probs, self.valid[first:count, c0:c1], labels)
                self.write(start + first, arrays, s0 - out_x0)
        # Shift the band up, one channel at a time to keep the temporary small.
        planes = list(self.acc)
        if self.labels is not None and self.best is not None:
            planes += [*self.labels, self.best]
        for plane in planes:
            plane[:-count] = plane[count:]
            plane[-count:] = 0
        self.valid[:-count] = self.valid[count:]
        self.valid[-count:] = False
        self.top = until

    def start(self, row: int) -> None:
        """Begin at tile row ``row`` (so rows are written even if no tile arrives)."""
        self._enter_row(row)

    def _enter_row(self, row: int) -> None:
        if row == self.row:
            return
        if self.row is not None and row < self.row:
            raise RuntimeError("tile rows must arrive in increasing order")
        start = self.row_starts[row]
        if self.top is None:
            self.top = start
        self._release(start)
        self.row = row

    def add_tile(self, tile: _TileResult) -> None:
        """Blend one tile of the stripe (tiles must arrive in row-major order)."""
        self._enter_row(tile.row)
        c0 = self.grid.col_starts[tile.col] - self.stripe.band_x0
        cols = slice(c0, c0 + self.grid.tile_width)
        self.valid[:, cols] |= tile.valid
        if tile.probs is None:
            return
        if self.tiles % TRIM_EVERY_TILES == TRIM_EVERY_TILES - 1:
            # Per-tile buffers must not fragment the heap into growth with the scene; trimming
            # rarely keeps the (re-faulted) pages of the model's activations cheap.
            trim_heap()
        weights = self._weights(tile.row, tile.col)
        if self.center:
            self._take_center_labels(tile.probs, weights, cols)
            # Only the change probability is blended.
            change = tile.probs[0] if tile.weighted else tile.probs[0] * weights
            self.acc[0, :, cols] += change
        else:
            _weight_tile(self.grid, tile, weights)
            self.acc[:, :, cols] += tile.probs
        self.tiles += 1

    def _weights(self, row: int, col: int) -> np.ndarray:
        """The tile's blending window (read-only), cached: tiles share a few distinct ones."""
        key = (self.grid.row_weights(row).tobytes(), self.grid.col_weights(col).tobytes())
        weights = self._weights_cache.get(key)
        if weights is None:
            if len(self._weights_cache) >= WEIGHT_CACHE_SIZE:
                self._weights_cache.clear()  # odd grids: stay bounded
            weights = _tile_weights(self.grid, row, col)
            weights.flags.writeable = False
            self._weights_cache[key] = weights
        return weights

    def _take_center_labels(self, probs: np.ndarray, weights: np.ndarray, cols: slice) -> None:
        """Keep each date's tile arg-max where this tile's window weight is the largest so far."""
        assert self.labels is not None and self.best is not None
        better = weights > self.best[:, cols]  # one weight window for both dates
        np.copyto(self.best[:, cols], weights, where=better)
        k = self.classes
        for date in range(2):
            # Arg-max is unchanged by the (positive) window weight, so weighted tiles work too.
            ids = probs[1 + date * k : 1 + (date + 1) * k].argmax(0).astype(np.uint8)
            np.copyto(self.labels[date, :, cols], ids, where=better)

    def finish(self, until: int | None = None) -> None:
        """Write the remaining rows down to the bottom of the scene (or to row ``until``).

        ``until`` ends a run over the tile rows that reach rows above it (a block of a lazy
        prediction): those rows are complete, later ones are not written.
        """
        if self.top is not None:
            self._release(self.grid.height if until is None else until)


def blend_stripe(assembler: _BandAssembler, first_row: int, tiles: Iterable[_TileResult]) -> int:
    """Blend ``tiles`` (row-major, from tile row ``first_row``) and write every row.

    Returns:
        The number of tiles that held data.
    """
    assembler.start(first_row)
    for tile in tiles:
        assembler.add_tile(tile)
    assembler.finish()
    return assembler.tiles
