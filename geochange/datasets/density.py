"""Change-pixel density of a bi-temporal dataset on a coarse cell grid, in bounded memory.

The :class:`~geochange.samplers.ChangeBalancedGeoSampler` draws windows by it; the label is read
block by block so the whole scene never has to fit in memory.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from affine import Affine

if TYPE_CHECKING:
    from geochange.datasets.geo import BiTemporalRasterDataset


def change_density(
    dataset: BiTemporalRasterDataset, cell_size: int, *, block_cells: int = 16
) -> tuple[np.ndarray, Affine]:
    """Change pixels per ``cell_size`` cell: see :meth:`BiTemporalRasterDataset.change_density`."""
    cache = dataset.__dict__.setdefault("_density_cache", {})
    if cell_size in cache:
        return cache[cell_size]
    xres, yres = dataset._res
    left, bottom, right, top = dataset.grid.snap(tuple(dataset.overlap.bounds))
    width = round((right - left) / xres)
    height = round((top - bottom) / yres)
    rows, cols = math.ceil(height / cell_size), math.ceil(width / cell_size)
    counts = np.zeros((rows, cols), dtype=np.int64)
    block = cell_size * block_cells
    for r0 in range(0, rows, block_cells):
        for c0 in range(0, cols, block_cells):
            b_left = left + c0 * cell_size * xres
            b_top = top - r0 * cell_size * yres
            label = dataset.read_change(
                (b_left, b_top - block * yres, b_left + block * xres, b_top), dataset._res
            )
            hits = (label == 1).reshape(block_cells, cell_size, block_cells, cell_size)
            part = hits.sum(axis=(1, 3))
            r1, c1 = min(r0 + block_cells, rows), min(c0 + block_cells, cols)
            counts[r0:r1, c0:c1] = part[: r1 - r0, : c1 - c0]
    transform = Affine(cell_size * xres, 0, left, 0, -cell_size * yres, top)
    cache[cell_size] = (counts, transform)
    return counts, transform
