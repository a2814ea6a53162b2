"""The direct read of a training window, and the GDAL block cache a scene's readers get.

The common case of a training sample is one window fully inside one file that lies on the
target grid (no warp, no resampling, no mosaic). Then the window is read with one
``DatasetReader.read`` and converted straight into the sample's own float32 buffer (both dates
in one ``[2, C, h, w]`` array): no fill, no paste, no validity mask where the file cannot hold
nodata, and no ``np.stack`` of the two dates. The values are exactly
those of the general path (:meth:`RasterLayer.read`): the direct read is only taken for file
types that float32 holds exactly, and validity is derived the same way.

The GDAL block cache decides most of the speed of random windows: a 256-pixel window touches up
to four 512-pixel ZSTD tiles per date, and decoding them costs several times more than copying
them out of the cache. :func:`scene_cache_mb` sizes the cache so that a scene whose decoded
pixels fit within GDAL's own default budget is decoded once per process, and keeps the bounded
256 MB otherwise (random windows over a scene many times the cache hit it too rarely to pay for
more memory).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
from rasterio.windows import Window

from geochange.datasets._layers import RasterLayer
from geochange.io import nonfinite_pixels

#: File types whose every value float32 represents exactly (GDAL's conversion then equals
#: numpy's ``astype``, and nodata comparisons give the same answer in either type).
EXACT_IN_FLOAT32 = frozenset({"uint8", "int8", "uint16", "int16", "float32"})

#: The block cache of a scene that does not fit the budget (and the floor), in MiB.
BOUNDED_CACHE_MB = 256

#: Share of the RAM GDAL's block cache takes by default (``GDAL_CACHEMAX`` unset).
GDAL_DEFAULT_CACHE_SHARE = 0.05


def direct_window(
    layer: RasterLayer, bounds: tuple[float, float, float, float], res: tuple[float, float]
) -> Window | None:
    """The file window of ``bounds`` when it can be read directly, else None.

    Direct means: the layer is one file on the target grid, ``res`` is the grid's, and the
    window lies fully inside the file on whole pixels.

    Args:
        layer: the raster layer.
        bounds: ``(left, bottom, right, top)`` in the target CRS.
        res: output pixel size ``(xres, yres)``.

    Returns:
        The pixel window in the file, or None where the general path must read it.
    """
    if len(layer.files) != 1:
        return None
    info = layer.files[0]
    xres, yres = layer.grid.res
    if info.warp or not (math.isclose(res[0], xres) and math.isclose(res[1], yres)):
        return None
    left, bottom, right, top = bounds
    f_left, f_bottom, f_right, f_top = info.bounds
    col, row = (left - f_left) / xres, (f_top - top) / yres
    width, height = round((right - left) / xres), round((top - bottom) / yres)
    c, r = round(col), round(row)
    if abs(col - c) > 1e-6 or abs(row - r) > 1e-6 or c < 0 or r < 0 or width < 1 or height < 1:
        return None
    if f_left + (c + width) * xres > f_right + 1e-6 * xres:
        return None
    if f_top - (r + height) * yres < f_bottom - 1e-6 * yres:
        return None
    return Window(c, r, width, height)


def read_into(layer: RasterLayer, window: Window, out: np.ndarray) -> np.ndarray | None:
    """Read ``window`` of a layer's single file into ``out`` (``[C, h, w]``, any numeric type).

    Args:
        layer: a layer for which :func:`direct_window` gave ``window``.
        window: the file window.
        out: the destination; its type is the output type.

    Returns:
        The bool ``[h, w]`` validity (False where every band holds the file's nodata value or
        any band is NaN / +-inf, as :meth:`RasterLayer.read` decides), or None when the file
        can hold no invalid pixel (an integer file without nodata).
    """
    info = layer.files[0]
    data = out
    if out.dtype != np.dtype(info.dtype):
        # Read in the file's type and convert in numpy: measured ~20 % faster than GDAL's
        # conversion inside RasterIO for uint8 -> float32 windows from the block cache.
        data = np.empty(out.shape, dtype=info.dtype)
    layer._handle(0).read(info.indexes, window=window, out=data)
    if data is not out:
        out[...] = data
    valid: np.ndarray | None = None
    if info.nodata is not None:
        if isinstance(info.nodata, float) and math.isnan(info.nodata):
            valid = ~np.isnan(data).all(axis=0)
        else:
            valid = (data != info.nodata).any(axis=0)
    if np.dtype(info.dtype).kind in "fc":
        nonfinite = nonfinite_pixels(data)
        if nonfinite.any():
            valid = ~nonfinite if valid is None else valid & ~nonfinite
    return valid


def can_read_as_float32(layer: RasterLayer) -> bool:
    """Whether a layer's (single) file converts to float32 exactly."""
    return len(layer.files) == 1 and layer.files[0].dtype in EXACT_IN_FLOAT32


def both_valid(first: np.ndarray | None, second: np.ndarray | None) -> np.ndarray | None:
    """The pixels valid in both masks (None = all valid)."""
    if first is None:
        return second
    if second is None:
        return first
    return first & second


def gdal_default_cache_mb() -> int:
    """GDAL's default block cache, 5 % of the physical memory, in MiB (256 if unknown)."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return BOUNDED_CACHE_MB
    return int(ram * GDAL_DEFAULT_CACHE_SHARE / 2**20)


def scene_cache_mb(layers: Iterable[Any]) -> int:
    """The GDAL block cache for the raster layers of a scene, in MiB.

    The decoded size of every file (plus 10 % and 16 MiB for GDAL's bookkeeping) when that fits
    within GDAL's default budget (5 % of the RAM), so each block is decoded once per process;
    :data:`BOUNDED_CACHE_MB` otherwise, and at least that.

    Args:
        layers: the scene's layers (vector layers and None are skipped).

    Returns:
        The cache size in MiB.
    """
    decoded = sum(
        info.nbytes for layer in layers if isinstance(layer, RasterLayer) for info in layer.files
    )
    needed = math.ceil(decoded * 1.1 / 2**20) + 16
    if needed > max(BOUNDED_CACHE_MB, gdal_default_cache_mb()):
        return BOUNDED_CACHE_MB
    return max(BOUNDED_CACHE_MB, needed)
