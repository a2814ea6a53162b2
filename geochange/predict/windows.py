"""Tile grids and blending weight windows for seamless sliding-window inference.

The scene is covered by a regular grid of ``tile_size`` tiles advancing by
``stride = tile_size - overlap``; the last tile of each axis is clamped inside the scene (it
overlaps its neighbour more) so no tile ever reads padding. Each tile's prediction is multiplied
by a separable weight window before being summed into the mosaic and divided by the summed
weights. Along a tile edge that lies *inside* the scene the window is exactly zero over
``margin`` pixels and then rises smoothly over the rest of the overlap; along an edge on the
scene border it keeps full weight. Hence every mosaic pixel is a convex combination of tile
predictions computed at least ``margin`` pixels away from any inner tile edge, which for a model
whose receptive-field radius is at most ``margin`` equals whole-image inference exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import erf

from geochange.errors import ConfigurationError

BlendMode = Literal["cosine", "gaussian", "mean", "center"]
BLEND_MODES: tuple[str, ...] = ("cosine", "gaussian", "mean", "center")


def tile_starts(length: int, tile_size: int, stride: int) -> list[int]:
    """Start offsets of the tiles covering ``[0, length)`` along one axis.

    Tiles advance by ``stride``; the last one is clamped so it ends exactly at ``length``. A
    scene shorter than a tile gets a single tile starting at 0 (its size is then ``length``).

    Args:
        length: scene size along the axis, in pixels.
        tile_size: tile size in pixels.
        stride: step between tile starts (``tile_size - overlap``).

    Returns:
        Increasing list of start offsets.
    """
    if length <= tile_size:
        return [0]
    starts = list(range(0, length - tile_size, stride))
    starts.append(length - tile_size)
    return starts


def _ramp(count: int, mode: str) -> np.ndarray:
    """Increasing weights in ``(0, 1]`` over ``count`` pixels (the rising part of an overlap)."""
    if count <= 0:
        return np.zeros(0, dtype=np.float64)
    # Pixel centres mapped into (0, 1).
    t = (np.arange(count, dtype=np.float64) + 0.5) / count
    if mode == "cosine":
        return 0.5 - 0.5 * np.cos(np.pi * t)
    if mode == "gaussian":
        # Gaussian CDF centred on the overlap, rescaled to reach 0 and 1 at its ends.
        sigma = 0.25
        lo, hi = erf(-0.5 / (sigma * np.sqrt(2))), erf(0.5 / (sigma * np.sqrt(2)))
        return np.asarray((erf((t - 0.5) / (sigma * np.sqrt(2))) - lo) / (hi - lo))
    if mode == "mean":
        return np.ones(count, dtype=np.float64)
    if mode == "center":
        return (t >= 0.5).astype(np.float64)
    raise ConfigurationError(f"unknown blend mode {mode!r}; choose one of {BLEND_MODES}")


def axis_weights(
    size: int,
    overlap: int,
    margin: int,
    *,
    inner_start: bool,
    inner_end: bool,
    mode: str = "cosine",
) -> np.ndarray:
    """One-dimensional blending weights of a tile along one axis.

    Args:
        size: tile size along the axis.
        overlap: nominal overlap between neighbouring tiles.
        margin: pixels forced to zero weight along inner edges.
        inner_start: whether the tile's start edge lies inside the scene.
        inner_end: whether the tile's end edge lies inside the scene.
        mode: ``"cosine"``, ``"gaussian"``, ``"mean"`` (flat beyond the margin) or ``"center"``
            (hard cut in the middle of the overlap).

    Returns:
        float64 array of length ``size`` with values in ``[0, 1]``.
    """
    weights = np.ones(size, dtype=np.float64)
    ramp = np.concatenate([np.zeros(margin), _ramp(overlap - 2 * margin, mode)])
    ramp = ramp[:size]
    if inner_start:
        weights[: ramp.size] = np.minimum(weights[: ramp.size], ramp)
    if inner_end:
        weights[size - ramp.size :] = np.minimum(weights[size - ramp.size :], ramp[::-1])
    return weights


@dataclass(frozen=True)
class TileGrid:
    """The tile layout of a scene of ``height x width`` pixels.

    Attributes:
        height: scene height.
        width: scene width.
        tile_size: nominal tile size (tiles are ``min(tile_size, height)`` by
            ``min(tile_size, width)``).
        overlap: nominal overlap between neighbouring tiles.
        margin: zero-weight margin along inner tile edges.
        mode: blend mode.
    """

    height: int
    width: int
    tile_size: int
    overlap: int
    margin: int
    mode: str = "cosine"

    def __post_init__(self) -> None:
        if self.tile_size <= self.overlap:
            raise ConfigurationError(
                f"tile_size ({self.tile_size}) must be larger than overlap ({self.overlap})"
            )
        if self.overlap < 0 or self.margin < 0:
            raise ConfigurationError("overlap and margin must be >= 0")
        if self.overlap > 0 and 2 * self.margin >= self.overlap:
            raise ConfigurationError(
                f"margin ({self.margin}) must be smaller than half the overlap ({self.overlap})"
            )
        if self.mode not in BLEND_MODES:
            raise ConfigurationError(
                f"unknown blend mode {self.mode!r}; choose one of {BLEND_MODES}"
            )

    @property
    def stride(self) -> int:
        """Step between tile starts."""
        return self.tile_size - self.overlap

    @property
    def tile_height(self) -> int:
        """Height of every tile (the scene height when it is smaller than a tile)."""
        return min(self.tile_size, self.height)

    @property
    def tile_width(self) -> int:
        """Width of every tile."""
        return min(self.tile_size, self.width)

    @property
    def row_starts(self) -> list[int]:
        """Top offsets of the tile rows."""
        return tile_starts(self.height, self.tile_size, self.stride)

    @property
    def col_starts(self) -> list[int]:
        """Left offsets of the tile columns."""
        return tile_starts(self.width, self.tile_size, self.stride)

    def __len__(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    def _weights(self, starts: list[int], size: int, length: int, index: int) -> np.ndarray:
        start = starts[index]
        return axis_weights(
            size,
            self.overlap,
            self.margin,
            inner_start=start > 0,
            inner_end=start + size < length,
            mode=self.mode,
        )

    def row_weights(self, row: int) -> np.ndarray:
        """Vertical weights (float32) of the tiles of tile row ``row``."""
        w = self._weights(self.row_starts, self.tile_height, self.height, row)
        return w.astype(np.float32)

    def col_weights(self, col: int) -> np.ndarray:
        """Horizontal weights (float32) of the tiles of tile column ``col``."""
        w = self._weights(self.col_starts, self.tile_width, self.width, col)
        return w.astype(np.float32)

    def _weight_sum(self, starts: list[int], size: int, length: int) -> np.ndarray:
        total = np.zeros(length, dtype=np.float64)
        for index, start in enumerate(starts):
            total[start : start + size] += self._weights(starts, size, length, index)
        if np.any(total <= 0):
            raise ConfigurationError(
                "tile layout leaves pixels without weight; use a larger overlap or smaller margin"
            )
        return total

    def row_weight_sum(self) -> np.ndarray:
        """Sum of the vertical weights of all tile rows, per scene row (float64, > 0)."""
        return self._weight_sum(self.row_starts, self.tile_height, self.height)

    def col_weight_sum(self) -> np.ndarray:
        """Sum of the horizontal weights of all tile columns, per scene column (float64, > 0)."""
        return self._weight_sum(self.col_starts, self.tile_width, self.width)


@dataclass(frozen=True)
class ColumnStripe:
    """A vertical stripe of tile columns, predicted top to bottom with its own blending band.

    Splitting a wide scene into stripes bounds the band's memory by the stripe width instead
    of the scene width. A stripe also computes the ``warmup`` tile columns left of its own
    first column that still reach into its output columns, so every output pixel gets exactly
    the tile contributions (in the same order) it gets without stripes: the mosaic is
    bit-identical, at the cost of ``warmup`` extra tile columns per stripe after the first.

    Attributes:
        cols: tile column indexes computed, warm-up columns first.
        warmup: how many of ``cols`` are warm-up columns (0 for the first stripe).
        band_x0: first scene column covered by the stripe's tiles.
        band_x1: end (exclusive) of the scene columns covered by its tiles.
        out_x0: first scene column the stripe writes.
        out_x1: end (exclusive) of the columns it writes.
    """

    cols: tuple[int, ...]
    warmup: int
    band_x0: int
    band_x1: int
    out_x0: int
    out_x1: int

    @property
    def band_width(self) -> int:
        """Width of the stripe's blending band."""
        return self.band_x1 - self.band_x0


def column_stripes(grid: TileGrid, max_width: int | None) -> list[ColumnStripe]:
    """Split ``grid``'s tile columns into stripes whose bands are at most ``max_width`` wide.

    Output columns are handed over at the left edge of a stripe's first own tile: left of it
    the previous stripe has all contributions, right of it the warm-up columns supply the ones
    the stripe would otherwise miss. A stripe always owns at least one tile column, so a
    ``max_width`` below two tiles is exceeded rather than refused.

    Args:
        grid: the scene's tile grid.
        max_width: largest band width in pixels; None (or a scene at most that wide) gives
            one stripe over the whole width.

    Returns:
        The stripes, left to right; their output ranges partition ``[0, grid.width)``.
    """
    starts = grid.col_starts
    tile_w = grid.tile_width
    ncols = len(starts)
    if max_width is None or grid.width <= max_width or ncols == 1:
        return [ColumnStripe(tuple(range(ncols)), 0, 0, grid.width, 0, grid.width)]
    stripes: list[ColumnStripe] = []
    first = 0
    while first < ncols:
        # Tiles ending at or before this stripe's first output column cannot reach it.
        warm_from = sum(1 for s in starts[:first] if s + tile_w <= starts[first])
        last = first
        while last + 1 < ncols and starts[last + 1] + tile_w - starts[warm_from] <= max_width:
            last += 1
        out_x0 = 0 if first == 0 else starts[first]
        out_x1 = grid.width if last + 1 == ncols else starts[last + 1]
        stripes.append(
            ColumnStripe(
                cols=tuple(range(warm_from, last + 1)),
                warmup=first - warm_from,
                band_x0=starts[warm_from],
                band_x1=starts[last] + tile_w,
                out_x0=out_x0,
                out_x1=out_x1,
            )
        )
        first = last + 1
    return stripes
