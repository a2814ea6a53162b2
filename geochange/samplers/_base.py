"""Shared base of the samplers: TorchGeo's sampler with typed attributes, and window sizes."""

from __future__ import annotations

from typing import Any

from torchgeo.samplers import Units
from torchgeo.samplers.single import GeoSampler


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


class SceneSampler(GeoSampler):
    """TorchGeo's :class:`GeoSampler` with the attributes its ``__init__`` sets, typed."""

    index: Any
    res: tuple[float, float]
