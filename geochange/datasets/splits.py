"""Leak-free spatial splits of a single scene pair into train/val/test regions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import shapely
from torchgeo.datasets import GeoDataset

from geochange.errors import ConfigurationError


def spatial_split(
    region: GeoDataset | shapely.Polygon | Sequence[float],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    *,
    axis: str = "auto",
    gap: float = 0.0,
    min_size: float | None = None,
    pixel_size: float | None = None,
) -> list[shapely.Polygon]:
    """Cut a region into contiguous rectangular stripes, one per split.

    Each stripe is a rectangle, so a sampler given it as ``roi`` only draws windows that lie
    fully inside it (TorchGeo samplers draw inside the bounding box of the clipped index): no
    window can straddle two splits. Stripes run across the longer side of the region, so each
    one sees a full cross-section of the scene.

    Args:
        region: a GeoDataset (its index extent), a shapely geometry, or
            ``(left, bottom, right, top)``.
        fractions: share of the region's length given to each split, in order; must sum to 1.
            Zero fractions yield empty polygons.
        axis: ``"x"`` (stripes side by side), ``"y"`` (stacked) or ``"auto"`` (longer side).
        gap: CRS distance left out between neighbouring stripes (e.g. the receptive field, for
            fully independent validation pixels).
        min_size: smallest allowed stripe width in CRS units (e.g. patch size x resolution);
            a non-empty stripe thinner than that raises.
        pixel_size: stripe edges are snapped to multiples of this distance from the region's
            start, so windows drawn inside stay on the pixel grid (default: the dataset's
            resolution along the split axis when ``region`` is a GeoDataset).

    Returns:
        One polygon per fraction (an empty polygon for a zero fraction).

    Raises:
        ConfigurationError: fractions that are negative or do not sum to 1, or a stripe thinner
            than ``min_size``.
    """
    if any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ConfigurationError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    left, bottom, right, top = _bounds(region)
    if axis == "auto":
        axis = "x" if right - left >= top - bottom else "y"
    if axis not in ("x", "y"):
        raise ConfigurationError(f"axis must be 'x', 'y' or 'auto', got {axis!r}")
    if pixel_size is None and isinstance(region, GeoDataset):
        pixel_size = float(region.res[0] if axis == "x" else region.res[1])
    start, stop = (left, right) if axis == "x" else (bottom, top)
    length = stop - start
    gaps = gap * (sum(1 for f in fractions if f > 0) - 1)
    usable = length - max(gaps, 0.0)
    if usable <= 0:
        raise ConfigurationError(f"gap {gap} leaves nothing of a region {length} long")
    stripes: list[shapely.Polygon] = []
    cursor = start
    last = max(i for i, f in enumerate(fractions) if f > 0)
    for i, fraction in enumerate(fractions):
        if fraction == 0:
            stripes.append(shapely.Polygon())
            continue
        size = usable * fraction
        if min_size is not None and size < min_size:
            raise ConfigurationError(
                f"split fraction {fraction} gives a stripe {size:g} wide, smaller than "
                f"min_size {min_size:g}; use larger fractions or a smaller patch size"
            )
        lo, hi = cursor, min(cursor + size, stop)
        if pixel_size:
            hi = min(start + round((hi - start) / pixel_size) * pixel_size, stop)
        if i == last:
            hi = stop  # the last stripe takes the remainder (rounding never loses pixels)
        if axis == "x":
            stripes.append(shapely.box(lo, bottom, hi, top))
        else:
            stripes.append(shapely.box(left, lo, right, hi))
        cursor = hi + gap
        if pixel_size:
            cursor = start + round((cursor - start) / pixel_size) * pixel_size
    return stripes


def _bounds(region: Any) -> tuple[float, float, float, float]:
    if isinstance(region, GeoDataset):
        x, y, _ = region.bounds
        return float(x.start), float(y.start), float(x.stop), float(y.stop)
    if isinstance(region, shapely.Geometry):
        return tuple(float(v) for v in region.bounds)  # type: ignore[return-value]
    values = tuple(float(v) for v in region)
    if len(values) != 4:
        raise ConfigurationError(f"region must be (left, bottom, right, top), got {region}")
    return values
