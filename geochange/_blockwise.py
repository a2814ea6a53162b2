"""Block-wise machinery of whole-raster jobs: the block grid, edge strips and seam links.

A *block* (docs/glossary.md) is the processing window of a whole-raster job that is not a forward
pass: vectorizing, change-event generation, synthetic-scene rendering, pixel evaluation. Blocks tile
the raster row-major from its top-left corner, ``block_size`` pixels square except along the last
row and column, which keep the remainder. A *seam* is the edge two neighbouring blocks share; the
labels of an object cut by a seam are linked again through the pixel lines on both sides of it
(the blocks' *edge strips*), and connected components over those links give scene-wide ids.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import rasterio.windows
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "Block",
    "BlockGrid",
    "EdgeStrips",
    "components",
    "edge_strips",
    "seam_links",
    "seam_pairs",
]


@dataclass(frozen=True)
class Block:
    """One block of a :class:`BlockGrid`, in pixels of the whole raster.

    Attributes:
        index: row-major position in the grid.
        row: block row (0 = top).
        col: block column (0 = left).
        row_off: first pixel row of the block.
        col_off: first pixel column of the block.
        height: pixel rows (``block_size`` except in the last block row).
        width: pixel columns (``block_size`` except in the last block column).
    """

    index: int
    row: int
    col: int
    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def window(self) -> rasterio.windows.Window:
        """The block as a rasterio window."""
        return rasterio.windows.Window(self.col_off, self.row_off, self.width, self.height)


@dataclass(frozen=True)
class BlockGrid:
    """A ``height`` x ``width`` raster cut into ``block_size`` square blocks, row-major.

    Iterating yields the blocks top to bottom, left to right; the last block row and column
    hold the remainder when the raster size is not a multiple of ``block_size``.
    """

    height: int
    width: int
    block_size: int

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be positive, got {self.block_size}")
        if self.height < 0 or self.width < 0:
            raise ValueError(f"raster size must be non-negative, got {self.height}x{self.width}")

    @property
    def rows(self) -> int:
        """Number of block rows."""
        return math.ceil(self.height / self.block_size)

    @property
    def cols(self) -> int:
        """Number of block columns."""
        return math.ceil(self.width / self.block_size)

    def __len__(self) -> int:
        return self.rows * self.cols

    def block(self, row: int, col: int) -> Block:
        """The block at block row ``row``, block column ``col``."""
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise IndexError(f"block ({row}, {col}) outside a {self.rows}x{self.cols} grid")
        row_off, col_off = row * self.block_size, col * self.block_size
        return Block(
            index=row * self.cols + col,
            row=row,
            col=col,
            row_off=row_off,
            col_off=col_off,
            height=min(self.block_size, self.height - row_off),
            width=min(self.block_size, self.width - col_off),
        )

    def __iter__(self) -> Iterator[Block]:
        for row in range(self.rows):
            for col in range(self.cols):
                yield self.block(row, col)

    def windows(self) -> Iterator[rasterio.windows.Window]:
        """The blocks' windows, row-major."""
        for block in self:
            yield block.window


@dataclass
class EdgeStrips:
    """Labels on the four edges of one block: its first/last pixel row and column.

    Local strips hold a block's own labels (0 = background); :meth:`to_global` turns them into
    0-based scene-wide ids with -1 for background, the form :func:`seam_links` takes.
    """

    top: npt.NDArray[np.integer]
    bottom: npt.NDArray[np.integer]
    left: npt.NDArray[np.integer]
    right: npt.NDArray[np.integer]

    def labels(self) -> npt.NDArray[np.int32]:
        """Sorted distinct local labels (> 0) that touch any edge of the block."""
        found = np.unique(np.concatenate([self.top, self.bottom, self.left, self.right]))
        return found[found > 0].astype(np.int32)

    def to_global(self, base: int) -> EdgeStrips:
        """Local labels ``1..n`` as global ids ``base..base + n - 1`` (int64), background -1."""

        def shift(line: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
            return np.where(line > 0, line.astype(np.int64) - 1 + base, -1)

        return EdgeStrips(
            top=shift(self.top),
            bottom=shift(self.bottom),
            left=shift(self.left),
            right=shift(self.right),
        )


def edge_strips(labels: npt.NDArray[np.integer]) -> EdgeStrips:
    """Copies of the edge rows and columns of a block's label image (so it can be freed)."""
    return EdgeStrips(
        top=labels[0].copy(),
        bottom=labels[-1].copy(),
        left=labels[:, 0].copy(),
        right=labels[:, -1].copy(),
    )


def seam_pairs(
    first: npt.NDArray[np.int64], second: npt.NDArray[np.int64], connectivity: int
) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """Pairs of global ids facing each other across a seam (-1 = background, never paired).

    Args:
        first: ids on the pixel line before the seam (above it, or left of it).
        second: ids on the pixel line after the seam, same length.
        connectivity: 4 pairs pixels straight across; 8 also pairs diagonal neighbours.

    Yields:
        ``(a, b)`` arrays of equal length, one per neighbour offset (straight, then the two
        diagonals under 8-connectivity).
    """
    n = first.size
    for shift in (0, -1, 1) if connectivity == 8 else (0,):
        a = first[max(0, -shift) : n - max(0, shift)]
        b = second[max(0, shift) : n - max(0, -shift)]
        keep = (a >= 0) & (b >= 0)
        yield a[keep], b[keep]


def seam_links(
    strips: Mapping[tuple[int, int], EdgeStrips],
    rows: int,
    cols: int,
    key: npt.NDArray[np.integer],
    connectivity: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Links between global ids that touch across any seam of a block grid and share a key.

    Each horizontal seam is scanned as one full-width pixel line on either side (so pieces
    touching diagonally across a block corner are found too), then each vertical seam as one
    full-height line.

    Args:
        strips: global edge strips (see :meth:`EdgeStrips.to_global`) of block ``(row, col)``.
        rows: block rows of the grid.
        cols: block columns of the grid.
        key: per global id, what must be equal for two touching pieces to be one object (their
            class, their change code).
        connectivity: 4 or 8 pixel connectivity.

    Returns:
        ``(sources, targets)``: linked global ids, int64.
    """
    sources: list[npt.NDArray[np.int64]] = []
    targets: list[npt.NDArray[np.int64]] = []

    def link(first: npt.NDArray[np.int64], second: npt.NDArray[np.int64]) -> None:
        for a, b in seam_pairs(first, second, connectivity):
            same = key[a] == key[b]
            sources.append(a[same])
            targets.append(b[same])

    for i in range(1, rows):  # horizontal seams
        link(
            np.concatenate([strips[i - 1, j].bottom for j in range(cols)]),
            np.concatenate([strips[i, j].top for j in range(cols)]),
        )
    for j in range(1, cols):  # vertical seams
        link(
            np.concatenate([strips[i, j - 1].right for i in range(rows)]),
            np.concatenate([strips[i, j].left for i in range(rows)]),
        )
    empty = np.zeros(0, np.int64)
    return (
        np.concatenate(sources).astype(np.int64, copy=False) if sources else empty,
        np.concatenate(targets).astype(np.int64, copy=False) if targets else empty,
    )


def components(
    n: int, sources: npt.NDArray[np.int64], targets: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Scene-wide id (connected component) of each of ``n`` global ids, given seam links.

    Components are numbered in order of their smallest member, so ids never linked keep
    their relative order.
    """
    if n == 0:
        return np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(sources.size, np.int8), (sources, targets)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    return component.astype(np.int64)
