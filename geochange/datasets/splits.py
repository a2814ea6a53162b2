"""Leak-free spatial splits of a single scene pair into train/val/test regions."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import shapely
from torchgeo.datasets import GeoDataset

from geochange.errors import ConfigurationError

# region_boxes lives in geochange.regions (band statistics and samplers need it too).
from geochange.regions import Box
from geochange.regions import region_boxes as region_boxes

#: Largest difference between a requested split fraction and the block layout's share before
#: :func:`spatial_split` warns.
SHARE_TOLERANCE = 0.05


def spatial_split(
    region: GeoDataset | shapely.Geometry | Sequence[float],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    *,
    axis: str = "auto",
    gap: float = 0.0,
    min_size: float | None = None,
    pixel_size: float | tuple[float, float] | None = None,
    layout: str = "auto",
) -> list[shapely.Polygon | shapely.MultiPolygon]:
    """Cut a region into non-overlapping train/val/test regions: stripes, or blocks when too thin.

    **Stripes** (the default when they fit): one contiguous rectangle per split, running
    across the longer side of the region so that each one sees a full cross-section of the
    scene; each split gets its fraction of the region's length.

    **Blocks** (``layout="auto"`` falls back to them when a stripe would be thinner than
    ``min_size``, e.g. a 10 % stripe of a scene only 8 windows long): the region is cut into
    the finest grid of cells at least ``min_size`` (plus ``gap``) wide, each split gets the
    number of cells closest to its fraction (at least one cell per non-zero fraction; largest
    remainders), and cells are handed out in order, column after column along the split axis,
    going back and forth across it (a serpentine). So each split is one compact, connected
    region near its stripe's position (train first), made of a few rectangles. A
    ``UserWarning`` says when the grid is too coarse for the shares to come within
    :data:`SHARE_TOLERANCE` of the fractions.

    A split made of blocks can be an L-shaped polygon. The geochange samplers
    (:class:`~geochange.samplers.ChangeBalancedGeoSampler`,
    :class:`~geochange.samplers.InsideGridGeoSampler`) draw windows inside the rectangles of
    :func:`region_boxes`, so no window crosses into another split; TorchGeo's samplers draw
    inside the bounding box of their ``roi``, so give them one ``roi`` per box of
    :func:`region_boxes` instead.

    Args:
        region: a GeoDataset (its index extent), a shapely geometry (its bounds), or
            ``(left, bottom, right, top)``.
        fractions: share of the region given to each split, in order; must sum to 1.
            Zero fractions yield empty polygons.
        axis: ``"x"`` (stripes side by side), ``"y"`` (stacked) or ``"auto"`` (longer side).
        gap: CRS distance left out between regions of different splits (e.g. the receptive
            field, for fully independent validation pixels).
        min_size: smallest allowed stripe width / block side in CRS units (e.g. patch size x
            resolution). Needed for blocks.
        pixel_size: region edges are snapped to multiples of this distance from the region's
            start, so windows drawn inside stay on the pixel grid; one value or ``(x, y)``
            (default: the dataset's resolution when ``region`` is a GeoDataset).
        layout: ``"auto"`` (stripes, blocks when a stripe would be thinner than ``min_size``),
            ``"stripes"`` (raise instead) or ``"blocks"``.

    Returns:
        One geometry per fraction: a rectangle for a stripe, a rectilinear polygon (or a
        multipolygon, when ``gap`` separates its blocks) for blocks, an empty polygon for a zero
        fraction.

    Raises:
        ConfigurationError: fractions that are negative or do not sum to 1, an unknown axis or
            layout, a stripe thinner than ``min_size`` with ``layout="stripes"``, or a region
            too small to hold one block per non-empty split (the message says which
            ``min_size`` would work).
    """
    if any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ConfigurationError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    left, bottom, right, top = _bounds(region)
    if axis == "auto":
        axis = "x" if right - left >= top - bottom else "y"
    if axis not in ("x", "y"):
        raise ConfigurationError(f"axis must be 'x', 'y' or 'auto', got {axis!r}")
    if layout not in ("auto", "stripes", "blocks"):
        raise ConfigurationError(f"layout must be 'auto', 'stripes' or 'blocks', got {layout!r}")
    steps = _steps(region, pixel_size)
    bounds = (left, bottom, right, top)
    if layout != "blocks":
        start, stop = (left, right) if axis == "x" else (bottom, top)
        usable = stop - start - max(gap * (sum(1 for f in fractions if f > 0) - 1), 0.0)
        thin = next(
            (f for f in fractions if f > 0 and min_size is not None and usable * f < min_size),
            None,
        )
        if usable <= 0 and (layout == "stripes" or min_size is None):
            raise ConfigurationError(f"gap {gap} leaves nothing of a region {stop - start} long")
        if thin is not None and layout == "stripes":
            raise ConfigurationError(
                f"split fraction {thin} gives a stripe {usable * thin:g} wide, smaller than "
                f"min_size {min_size:g}; use larger fractions or a smaller patch size"
            )
        if thin is None and usable > 0:
            step = steps[0] if axis == "x" else steps[1]
            return list(_stripes(bounds, fractions, axis, gap, step))
    if min_size is None:
        raise ConfigurationError("layout='blocks' needs min_size (the smallest block side)")
    return _blocks(bounds, fractions, axis, gap, min_size, steps)


# -- stripes ----------------------------------------------------------------------------------


def _stripes(
    bounds: Box, fractions: Sequence[float], axis: str, gap: float, step: float | None
) -> list[shapely.Polygon]:
    left, bottom, right, top = bounds
    start, stop = (left, right) if axis == "x" else (bottom, top)
    usable = stop - start - max(gap * (sum(1 for f in fractions if f > 0) - 1), 0.0)
    stripes: list[shapely.Polygon] = []
    cursor = start
    last = max(i for i, f in enumerate(fractions) if f > 0)
    for i, fraction in enumerate(fractions):
        if fraction == 0:
            stripes.append(shapely.Polygon())
            continue
        lo, hi = cursor, min(cursor + usable * fraction, stop)
        if step:
            hi = min(start + round((hi - start) / step) * step, stop)
        if i == last:
            hi = stop  # the last stripe takes the remainder (rounding never loses pixels)
        if axis == "x":
            stripes.append(shapely.box(lo, bottom, hi, top))
        else:
            stripes.append(shapely.box(left, lo, right, hi))
        cursor = hi + gap
        if step:
            cursor = start + round((cursor - start) / step) * step
    return stripes


# -- blocks -----------------------------------------------------------------------------------


def _blocks(
    bounds: Box,
    fractions: Sequence[float],
    axis: str,
    gap: float,
    min_size: float,
    steps: tuple[float | None, float | None],
) -> list[shapely.Polygon | shapely.MultiPolygon]:
    left, bottom, right, top = bounds
    nx = _cell_count(right - left, min_size + gap, steps[0])
    ny = _cell_count(top - bottom, min_size + gap, steps[1])
    needed = sum(1 for f in fractions if f > 0)
    if nx * ny < needed:
        best = largest_block(bounds, needed, steps) - gap
        hint = f"use min_size <= {best:g}" if best > 0 else "use a smaller gap"
        raise ConfigurationError(
            f"a region of {right - left:g} x {top - bottom:g} holds only {nx} x {ny} blocks of "
            f"min_size {min_size:g}" + (f" plus gap {gap:g}" if gap else "") + f", fewer "
            f"than the {needed} non-empty splits of {tuple(fractions)}: {hint} or fewer "
            "non-zero fractions"
        )
    xs = _edges(left, right, nx, steps[0])
    ys = _edges(bottom, top, ny, steps[1])
    along, across = (nx, ny) if axis == "x" else (ny, nx)
    counts = _cell_counts(fractions, nx * ny)
    shares = [c / (nx * ny) for c in counts]
    if max(abs(s - f) for s, f in zip(shares, fractions, strict=True)) > SHARE_TOLERANCE:
        warnings.warn(
            f"split fractions {tuple(fractions)} become shares "
            f"{tuple(round(s, 3) for s in shares)} on a grid of {nx} x {ny} blocks of at least "
            f"{min_size:g}; a smaller min_size (patch size) gives finer shares",
            UserWarning,
            stacklevel=3,
        )
    # Split of each cell, indexed [column along the axis][row across it], filled serpentine.
    owner = [[0] * across for _ in range(along)]
    labels = iter([i for i, n in enumerate(counts) for _ in range(n)])
    for c in range(along):
        for r in range(across) if c % 2 == 0 else reversed(range(across)):
            owner[c][r] = next(labels)

    def split_of(c: int, r: int) -> int:
        inside = 0 <= c < along and 0 <= r < across
        return owner[c][r] if inside else len(fractions)

    cells: list[list[shapely.Polygon]] = [[] for _ in fractions]
    for c in range(along):
        for r in range(across):
            s = owner[c][r]
            # Lower is "along" [c, c+1] x "across" [r, r+1]; a gap is cut from the sides that
            # face an earlier split (previous column, or previous cell of the serpentine), so
            # every cell loses at most one side per axis and keeps at least min_size.
            lo_a = gap if any(split_of(c - 1, r + d) < s for d in (-1, 0, 1)) else 0.0
            previous = r - 1 if c % 2 == 0 else r + 1
            lo_r = gap if c % 2 == 0 and split_of(c, previous) < s else 0.0
            hi_r = gap if c % 2 == 1 and split_of(c, previous) < s else 0.0
            if axis == "x":
                box = (xs[c] + lo_a, ys[r] + lo_r, xs[c + 1], ys[r + 1] - hi_r)
            else:
                box = (xs[r] + lo_r, ys[c] + lo_a, xs[r + 1] - hi_r, ys[c + 1])
            cells[s].append(shapely.box(*box))
    return [shapely.union_all(c) if c else shapely.Polygon() for c in cells]


def largest_block(
    bounds: Box, count: int, steps: tuple[float | None, float | None] = (None, None)
) -> float:
    """Largest block side (CRS units) for which ``bounds`` holds ``count`` blocks.

    Args:
        bounds: ``(left, bottom, right, top)``.
        count: blocks needed (non-empty splits).
        steps: pixel size along x and y (blocks are whole pixels), or None.

    Returns:
        The side, 0 when not even a pixel-sized grid holds ``count`` blocks.
    """
    left, bottom, right, top = bounds
    best = 0.0
    for cols in range(1, count + 1):
        rows = math.ceil(count / cols)
        side = min(_side(right - left, cols, steps[0]), _side(top - bottom, rows, steps[1]))
        best = max(best, side)
    return best


def _side(length: float, count: int, step: float | None) -> float:
    if step:
        return (math.floor(length / step + 1e-9) // count) * step
    return length / count


def _cell_count(length: float, size: float, step: float | None) -> int:
    """Cells at least ``size`` long that fit in ``length`` (whole pixels with a step)."""
    if size <= 0:
        raise ConfigurationError(f"min_size must be > 0, got {size:g}")
    if step:
        pixels = math.floor(length / step + 1e-9)
        return pixels // max(1, math.ceil(size / step - 1e-9))
    return math.floor(length / size + 1e-9)


def _edges(start: float, stop: float, count: int, step: float | None) -> list[float]:
    """``count + 1`` cell edges, on the pixel grid; ``floor`` keeps every cell >= its minimum."""
    if step:
        pixels = math.floor((stop - start) / step + 1e-9)
        return [start + (i * pixels // count) * step for i in range(count)] + [stop]
    return [start + (stop - start) * i / count for i in range(count)] + [stop]


def _cell_counts(fractions: Sequence[float], total: int) -> list[int]:
    """Cells per split: largest remainders, at least one per non-zero fraction."""
    raw = [f * total for f in fractions]
    counts = [max(1, math.floor(r)) if f > 0 else 0 for r, f in zip(raw, fractions, strict=True)]
    while sum(counts) < total:
        i = max((i for i, f in enumerate(fractions) if f > 0), key=lambda i: raw[i] - counts[i])
        counts[i] += 1
    while sum(counts) > total:
        i = max((i for i, c in enumerate(counts) if c > 1), key=lambda i: counts[i] - raw[i])
        counts[i] -= 1
    return counts


# -- helpers ----------------------------------------------------------------------------------


def _steps(region: Any, pixel_size: Any) -> tuple[float | None, float | None]:
    if pixel_size is None:
        if isinstance(region, GeoDataset):
            return float(region.res[0]), float(region.res[1])
        return None, None
    if isinstance(pixel_size, int | float):
        return float(pixel_size), float(pixel_size)
    x, y = pixel_size
    return float(x), float(y)


def _bounds(region: Any) -> Box:
    if isinstance(region, GeoDataset):
        x, y, _ = region.bounds
        return float(x.start), float(y.start), float(x.stop), float(y.stop)
    if isinstance(region, shapely.Geometry):
        return tuple(float(v) for v in region.bounds)  # type: ignore[return-value]
    values = tuple(float(v) for v in region)
    if len(values) != 4:
        raise ConfigurationError(f"region must be (left, bottom, right, top), got {region}")
    return values
