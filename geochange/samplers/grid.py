"""Grid window sampler whose windows never leave the region of interest."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import shapely
from torchgeo.samplers import Units

from geochange.errors import ConfigurationError
from geochange.regions import region_boxes
from geochange.samplers._base import SceneSampler, in_crs_units, size_pair


def _starts(low: float, high: float, size: float, stride: float, step: float) -> list[float]:
    """Window starts from ``low`` every ``stride``, the last one flush with ``high``."""
    span = high - low
    if span < size - 1e-9:
        return []
    count = math.floor((span - size) / stride + 1e-9) + 1
    starts = [low + i * stride for i in range(count)]
    last = low + math.floor((span - size) / step + 1e-9) * step
    if last - starts[-1] > 1e-9:
        starts.append(last)
    return starts


class InsideGridGeoSampler(SceneSampler):
    """Windows on a regular grid, all fully inside each index region (clipped to ``roi``).

    An L-shaped or multi-part region (a block split of
    :func:`~geochange.datasets.spatial_split`) is tiled rectangle by rectangle
    (:func:`~geochange.datasets.region_boxes`), so no window leaves it.

    Unlike TorchGeo's grid samplers, the last row/column is placed flush with the region's edge
    instead of extending past it, so windows of a validation split never reach into the
    training split. Windows stay on the dataset's pixel grid when the region does.

    Args:
        dataset: the dataset to sample.
        size: window size (pixels by default), an int or ``(height, width)``.
        stride: distance between windows (default: ``size``).
        roi: region of interest (default: the dataset's extent); a polygon or multipolygon.
        units: ``Units.PIXELS`` or ``Units.CRS``.

    Raises:
        ConfigurationError: a non-positive size or stride.
    """

    def __init__(
        self,
        dataset: Any,
        size: tuple[float, float] | float,
        stride: tuple[float, float] | float | None = None,
        roi: shapely.Polygon | shapely.MultiPolygon | None = None,
        units: Units = Units.PIXELS,
    ) -> None:
        super().__init__(dataset, roi)
        height, width = size_pair(size)
        stride = stride if stride is not None else (height, width)
        s_h, s_w = size_pair(stride)
        if min(height, width, s_h, s_w) <= 0:
            raise ConfigurationError(f"size and stride must be positive, got {size}, {stride}")
        height, width = in_crs_units(height, width, units, self.res)
        s_h, s_w = in_crs_units(s_h, s_w, units, self.res)
        xres, yres = self.res
        self.size = (float(height), float(width))
        self.stride = (float(s_h), float(s_w))
        self.windows: list[tuple[slice, slice, slice]] = []
        for i in range(len(self.index)):
            geom = self.index.geometry.iloc[i]
            if geom is None or geom.is_empty:
                continue
            interval = self.index.index[i]
            for x0, y0, x1, y1 in region_boxes(geom):
                for top in _starts(-y1, -y0, height, s_h, yres):
                    for left in _starts(x0, x1, width, s_w, xres):
                        self.windows.append(
                            (
                                slice(left, left + width),
                                slice(-top - height, -top),
                                slice(interval.left, interval.right),
                            )
                        )

    def __len__(self) -> int:
        """Number of windows."""
        return len(self.windows)

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        """Yield the windows row by row, top to bottom."""
        yield from self.windows
