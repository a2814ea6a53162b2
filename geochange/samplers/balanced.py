"""Change-balanced random window sampler for bi-temporal scene datasets."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import shapely
import torch
from torchgeo.samplers import Units

from geochange.errors import ConfigurationError, DataError
from geochange.regions import region_boxes
from geochange.samplers._base import SceneSampler, in_crs_units, size_pair, windows_in


class ChangeBalancedGeoSampler(SceneSampler):
    """Random square windows, a fraction of them drawn around change pixels.

    A coarse change-density index (change-pixel count per cell of half a window) is built once
    from the dataset's change label, block by block in bounded memory, with
    :meth:`BiTemporalRasterDataset.change_density`. Each draw then either (with probability
    ``change_fraction``) picks a cell holding change, uniformly among such cells, and a random
    window covering that cell, or picks a uniformly random window like TorchGeo's
    ``RandomGeoSampler``. No label is read per draw. Since uniform windows can hold change too,
    the share of windows with change is at least ``change_fraction`` (when enough change exists
    inside the region).

    Windows lie on the dataset's pixel grid and fully inside one rectangle of the region of
    interest (:func:`~geochange.datasets.region_boxes`: the ``roi`` itself when it is a
    rectangle, the rectangles making up an L-shaped or multi-part block region of
    :func:`~geochange.datasets.spatial_split`), so no window crosses into another split.

    Args:
        dataset: a :class:`~geochange.datasets.BiTemporalRasterDataset` with a change label (or
            both semantic labels).
        size: window size (pixels by default), an int or ``(height, width)``.
        length: windows per epoch (default: number of non-overlapping windows in the region).
        change_fraction: probability that a draw is centred on change, in ``[0, 1]``.
        roi: region of interest (default: the dataset's extent); a polygon or multipolygon.
        units: ``Units.PIXELS`` or ``Units.CRS`` for ``size``.
        generator: random generator, for reproducible draws.
        min_change_pixels: a cell counts as "change" from this many change pixels.
        cell_size: density cell side in pixels (default: half the window, at least 16).

    Raises:
        ConfigurationError: bad fraction or a region smaller than one window.
        DataError: ``change_fraction > 0`` on a dataset without change labels.
    """

    def __init__(
        self,
        dataset: Any,
        size: tuple[float, float] | float,
        length: int | None = None,
        *,
        change_fraction: float = 0.5,
        roi: shapely.Polygon | shapely.MultiPolygon | None = None,
        units: Units = Units.PIXELS,
        generator: torch.Generator | None = None,
        min_change_pixels: int = 1,
        cell_size: int | None = None,
    ) -> None:
        if not 0.0 <= change_fraction <= 1.0:
            raise ConfigurationError(f"change_fraction must be in [0, 1], got {change_fraction}")
        super().__init__(dataset, roi)
        xres, yres = self.res
        height, width = in_crs_units(*size_pair(size), units, self.res)
        self.size = (float(height), float(width))
        self.generator = generator
        self.change_fraction = change_fraction
        self.origin = dataset.grid.origin if hasattr(dataset, "grid") else (0.0, 0.0)

        # Sampling regions: the index rows (clipped to the roi) that can hold a window.
        self.regions: list[tuple[float, float, float, float]] = []
        self.intervals: list[pd.Interval] = []
        areas, chips = [], 0
        for i in range(len(self.index)):
            geom = self.index.geometry.iloc[i]
            if geom is None or geom.is_empty:
                continue
            # One sampling region per rectangle of the (possibly L-shaped) clipped region.
            for bounds in region_boxes(geom):
                if bounds[2] - bounds[0] < width - 1e-9 or bounds[3] - bounds[1] < height - 1e-9:
                    continue
                self.regions.append(bounds)
                self.intervals.append(self.index.index[i])
                areas.append((bounds[2] - bounds[0]) * (bounds[3] - bounds[1]))
                chips += windows_in(bounds, self.size)
        if not self.regions:
            raise ConfigurationError(
                f"the region of interest is smaller than one {height:g} x {width:g} window"
            )
        self.areas = torch.tensor(areas, dtype=torch.float64)
        self.length = length if length is not None else chips

        self.change_cells = np.empty((0, 4), dtype=np.float64)
        self.cell_region = np.empty(0, dtype=np.int64)
        if change_fraction > 0:
            if not hasattr(dataset, "change_density"):
                raise DataError(
                    f"{type(dataset).__name__} has no change_density(); "
                    "ChangeBalancedGeoSampler needs a BiTemporalRasterDataset"
                )
            if not getattr(dataset, "has_labels", True):
                raise DataError(
                    "change_fraction > 0 needs a change label (or pre and post semantic labels)"
                )
            pixels = cell_size or max(16, int(min(height / yres, width / xres)) // 2)
            counts, transform = dataset.change_density(pixels)
            rows_idx, cols_idx = np.nonzero(counts >= min_change_pixels)
            left = transform.c + cols_idx * transform.a
            top = transform.f + rows_idx * transform.e
            cells = np.stack([left, top + transform.e, left + transform.a, top], axis=1)
            # Keep cells that touch a sampling region; remember which one (first match).
            region_of = np.full(len(cells), -1, dtype=np.int64)
            for r, (x0, y0, x1, y1) in enumerate(self.regions):
                inside = (
                    (cells[:, 0] < x1)
                    & (cells[:, 2] > x0)
                    & (cells[:, 1] < y1)
                    & (cells[:, 3] > y0)
                )
                region_of[(region_of < 0) & inside] = r
            keep = region_of >= 0
            self.change_cells = cells[keep]
            self.cell_region = region_of[keep]

    def __len__(self) -> int:
        """Number of windows per epoch."""
        return self.length

    def _uniform(self, low: float, high: float, step: float, start: float) -> float:
        """Random grid-aligned value in ``[low, high]`` (grid: ``start + k * step``)."""
        k_low = math.ceil((low - start) / step - 1e-9)
        k_high = math.floor((high - start) / step + 1e-9)
        if k_high < k_low:
            # Region narrower than the grid allows: fall back to the closest valid edge.
            return low
        k = k_low + int(torch.randint(k_high - k_low + 1, (1,), generator=self.generator))
        return start + k * step

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        """Yield ``(x, y, t)`` slices of random windows."""
        height, width = self.size
        xres, yres = self.res
        x_origin, y_origin = self.origin
        for _ in range(len(self)):
            balanced = len(self.change_cells) > 0 and (
                float(torch.rand(1, generator=self.generator)) < self.change_fraction
            )
            if balanced:
                c = int(torch.randint(len(self.change_cells), (1,), generator=self.generator))
                region = self.regions[int(self.cell_region[c])]
                interval = self.intervals[int(self.cell_region[c])]
                cx0, cy0, cx1, cy1 = self.change_cells[c]
                # Windows that cover the cell, clamped to the region.
                x_low, x_high = max(region[0], cx1 - width), min(region[2] - width, cx0)
                y_low, y_high = max(region[1], cy1 - height), min(region[3] - height, cy0)
                if x_high < x_low:
                    x_low = x_high = min(max(cx0, region[0]), region[2] - width)
                if y_high < y_low:
                    y_low = y_high = min(max(cy0, region[1]), region[3] - height)
            else:
                r = int(torch.multinomial(self.areas, 1, generator=self.generator))
                region = self.regions[r]
                interval = self.intervals[r]
                x_low, x_high = region[0], region[2] - width
                y_low, y_high = region[1], region[3] - height
            xmin = self._uniform(x_low, x_high, xres, x_origin)
            ytop = self._uniform(y_low + height, y_high + height, yres, y_origin)
            xmin = min(max(xmin, region[0]), region[2] - width)
            ytop = min(max(ytop, region[1] + height), region[3])
            yield (
                slice(xmin, xmin + width),
                slice(ytop - height, ytop),
                slice(interval.left, interval.right),
            )
