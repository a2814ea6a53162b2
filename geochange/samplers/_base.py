"""Shared base of the samplers: TorchGeo 0.10's ``GeoSampler`` with the scene's index, and sizes.

TorchGeo 0.10 deprecated ``torchgeo.samplers.single.GeoSampler`` (and ``tile_to_chips``); the
current base class, ``torchgeo.samplers.GeoSampler``, leaves ``__init__`` to subclasses.
:class:`SceneSampler` keeps what the old one set up (the index clipped to ``roi``, ``res``),
so the geochange samplers draw the same windows as before.
"""

from __future__ import annotations

import math
from typing import Any

import shapely
from torchgeo.samplers import GeoSampler, Units


def size_pair(value: tuple[float, float] | float) -> tuple[float, float]:
    """``(height, width)`` of a size given as one number or a pair."""
    return (value, value) if isinstance(value, int | float) else value


def in_crs_units(
    height: float, width: float, units: Units, res: tuple[float, float]
) -> tuple[float, float]:
    """``(height, width)`` in CRS units; ``units`` says what the input is in."""
    if units == Units.PIXELS:
        xres, yres = res
        return height * yres, width * xres
    return height, width


def windows_in(bounds: tuple[float, float, float, float], size: tuple[float, float]) -> int:
    """Number of ``size`` (height, width) windows that tile ``bounds``, the last ones partial."""
    xmin, ymin, xmax, ymax = bounds
    rows = math.ceil((ymax - ymin - size[0]) / size[0]) + 1
    cols = math.ceil((xmax - xmin - size[1]) / size[1]) + 1
    return rows * cols


class SceneSampler(GeoSampler):
    """TorchGeo's current :class:`~torchgeo.samplers.GeoSampler` over a dataset's index.

    Args:
        dataset: the dataset to sample (a TorchGeo ``GeoDataset``).
        roi: region of interest; the index rows are clipped to it (default: all of them).
    """

    index: Any
    res: tuple[float, float]

    def __init__(
        self, dataset: Any, roi: shapely.Polygon | shapely.MultiPolygon | None = None
    ) -> None:
        self.index = dataset.index.clip(roi) if roi else dataset.index
        self.res = tuple(dataset.res)
        if roi:
            self.roi = roi
        else:
            x, y, _ = dataset.bounds
            self.roi = shapely.box(x.start, y.start, x.stop, y.stop)
