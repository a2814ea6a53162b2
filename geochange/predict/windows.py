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
