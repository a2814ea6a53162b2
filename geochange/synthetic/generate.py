"""Deterministic synthetic georeferenced bi-temporal scenes, generated block by block.

:func:`make_scene` writes a pair of co-registered (up to a deliberate sub-pixel shift) images of
the same place at two dates, the LsSCD land-cover maps of both dates, the binary change raster and
a GeoPackage of the buildings that appeared or disappeared. Any size up to LsSCD scale
(48000 x 32500 pixels per date) is generated in bounded memory.

How it stays exact, seamless and bounded:

* The scene is a *function of absolute pixel coordinates*. Land-cover parcels are the cells of a
  jittered-grid Voronoi diagram, rivers and roads are analytic curves, lakes and textures are
  hash-based value noise, and every random choice is a hash of the seed and of a lattice or cell
  index. Any block can therefore be computed on its own, and blocks join without seams: the
  output does not depend on the block size.
* Buildings are vector objects (rotated rectangles) generated per 256-pixel cell from a per-cell
  hash, inside disjoint slots, so they never overlap. Each block rasterises only the buildings of
  the cells around it (:func:`rasterio.features.rasterize`), and the changed ones are written to
  the GeoPackage as the exact polygons that were rasterised.
* The change raster is computed as ``semantic_pre != semantic_post`` on each block, so it agrees
  with the class rasters by construction.
* Nuisance differences that are not change: seasonal colours (crops ripen or are harvested, trees
  yellow), a different sun azimuth and elevation (shadows), global illumination and haze, sensor
  noise, and a sub-pixel to 1-pixel misregistration of the post image.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import shapely
from numpy.typing import NDArray
from rasterio.transform import Affine
from rasterio.windows import Window

from geochange._blockwise import BlockGrid

# Class names, ids and the palette of the class rasters live in geochange.classes; they are
# re-exported here, where the scenes are drawn in them.
from geochange.classes import (
    BARE_LAND,
    BUILDING,
    CHANGE_CLASS_NAMES,
    CLASS_COLORS,
    CROPLAND,
    IGNORE_INDEX,
    LSSCD_CLASS_NAMES,
    OTHERS,
    ROAD,
    TREE,
    WATER,
)
from geochange.errors import ConfigurationError, DataError
from geochange.io import (
    CHANGE_FILE,
    CLASS_NAMES_TAG,
    SEMANTIC_POST_FILE,
    SEMANTIC_PRE_FILE,
    TILED_GTIFF_OPTIONS,
    atomic_output,
    check_writable_dir,
    finalize_cog,
    gdal_cache,
)

__all__ = [
    "CLASS_COLORS",
    "CLASS_NAMES",
    "Scene",
    "make_scene",
]

#: LsSCD land-cover classes, in class-id order (home: :mod:`geochange.classes`).
CLASS_NAMES: tuple[str, ...] = LSSCD_CLASS_NAMES
#: Nodata value of the label rasters (the generator never writes it; it is declared so that
#: readers treat 255 as "ignore", as everywhere else in geochange).
LABEL_NODATA = IGNORE_INDEX
MANIFEST_NAME = "scene.json"
FORMAT_VERSION = 1

# Geometry of the layout, in pixels. CELL is the building-cell side; blocks must be multiples.
CELL = 256
DEFAULT_BLOCK_SIZE = 1024
_CELL_MARGIN = 6  # keeps buildings off the minor roads that run along every other cell edge
_PARCEL_SPACING = 320.0
_MAJOR_ROAD_SPACING = 1500
_MINOR_ROAD_SPACING = 2 * CELL
_RIVER_SPACING = 9000
_URBAN_SCALE = 2500.0
_HALO = 3  # extra pixels rendered around a block so that the optical blur is seamless

# Building states.
_NONE, _EXISTING, _DEMOLISHED, _NEW = 0, 1, 2, 3


# --------------------------------------------------------------------------------------------
# Hash-based randomness: every random number is a function of (seed, channel, integer coords).
# --------------------------------------------------------------------------------------------
def _mix(h: NDArray[np.uint32]) -> NDArray[np.uint32]:
    """Bijective 32-bit integer finaliser (xorshift-multiply), applied element-wise."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(0x7FEB352D)
        h = h ^ (h >> np.uint32(15))
        h = h * np.uint32(0x846CA68B)
        h = h ^ (h >> np.uint32(16))
    return h


def _hash(key: int, *coords: Any) -> NDArray[np.uint32]:
    """Hash integer coordinates (broadcast together) under ``key`` to uniform 32-bit integers."""
    h: NDArray[np.uint32] = _mix(np.array([key & 0xFFFFFFFF], dtype=np.uint32))[0:1]
    for coord in coords:
        c = np.asarray(coord).astype(np.int64).astype(np.uint32)
        with np.errstate(over="ignore"):
            h = _mix(h ^ (c + np.uint32(0x9E3779B9)))
    return h.reshape(np.broadcast_shapes(*(np.shape(c) for c in coords))) if coords else h


def _uniform(key: int, *coords: Any) -> NDArray[np.float32]:
    """Uniform floats in [0, 1) hashed from integer coordinates."""
    return (_hash(key, *coords) >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24)


class _Keys:
    """Independent hash channels derived from the seed."""

    def __init__(self, seed: int) -> None:
        high = _mix(np.array([(seed >> 32) & 0xFFFFFFFF], np.uint32))
        self._base = int(_mix(np.array([seed & 0xFFFFFFFF], np.uint32) ^ high)[0])

    def __call__(self, channel: int) -> int:
        return int(
            _mix(np.array([(self._base ^ (channel * 0x632BE5AB)) & 0xFFFFFFFF], np.uint32))[0]
        )


def _is_grid(y: NDArray[Any], x: NDArray[Any]) -> bool:
    return y.ndim == 2 and x.ndim == 2 and y.shape[1] == 1 and x.shape[0] == 1


def _value_noise(key: int, y: NDArray[np.float64], x: NDArray[np.float64], scale: float) -> Any:
    """Smooth value noise in [0, 1] at absolute coordinates (broadcast ``y`` and ``x``).

    For a separable grid (``y`` of shape (h, 1), ``x`` of shape (1, w)) the lattice values are
    hashed once on the small lattice covering the grid and interpolated separably, which is what
    makes per-pixel noise cheap; any other shapes hash the four corners directly. Both paths give
    the same value for the same coordinates.
    """
    ys, xs = y / scale, x / scale
    iy, ix = np.floor(ys), np.floor(xs)
    fy, fx = (ys - iy).astype(np.float32), (xs - ix).astype(np.float32)
    fy = fy * fy * (np.float32(3) - np.float32(2) * fy)
    fx = fx * fx * (np.float32(3) - np.float32(2) * fx)
    if _is_grid(y, x):
        y0, x0 = int(iy.min()), int(ix.min())
        lattice = _uniform(
            key,
            np.arange(y0, int(iy.max()) + 2)[:, None],
            np.arange(x0, int(ix.max()) + 2)[None, :],
        )
        ry, rx = (iy[:, 0] - y0).astype(np.intp), (ix[0] - x0).astype(np.intp)
        along_x = lattice[:, rx] * (np.float32(1) - fx) + lattice[:, rx + 1] * fx
        return along_x[ry] * (np.float32(1) - fy) + along_x[ry + 1] * fy
    v00, v01 = _uniform(key, iy, ix), _uniform(key, iy, ix + 1)
    v10, v11 = _uniform(key, iy + 1, ix), _uniform(key, iy + 1, ix + 1)
    top = v00 * (np.float32(1) - fx) + v01 * fx
    bottom = v10 * (np.float32(1) - fx) + v11 * fx
    return top * (np.float32(1) - fy) + bottom * fy


def _fbm(key: int, y: Any, x: Any, scale: float, octaves: int) -> Any:
    """Fractal sum of value-noise octaves, normalised to [0, 1]."""
    total, norm, amplitude = 0.0, 0.0, 1.0
    for octave in range(octaves):
        total = total + amplitude * _value_noise(key + 7919 * octave, y, x, scale / 2**octave)
        norm += amplitude
        amplitude *= 0.5
    return total / np.float32(norm)


def _smoothstep(edge0: float, edge1: float, v: Any) -> Any:
    t = np.clip((v - edge0) / (edge1 - edge0), 0, 1)
    return t * t * (3 - 2 * t)


# --------------------------------------------------------------------------------------------
# Scene layout: parcels, water, roads (functions of absolute pixel coordinates).
# --------------------------------------------------------------------------------------------
@dataclass
class _Parcels:
    """Winning Voronoi site per pixel, as an index into per-parcel attribute arrays."""

    index: NDArray[np.intp]
    attrs: dict[str, NDArray[Any]]


class _Layout:
    """The deterministic scene model for one seed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        k = _Keys(seed)
        self.k = k
        rng = np.random.default_rng([seed, 0x5EED])
        # Per-date global look: date 0 early summer, date 1 late summer / autumn.
        self.gain = (
            np.array([1.0, 1.0, 1.0, 1.0]) * rng.uniform(0.92, 1.02),
            np.array([1.0, 1.0, 1.0, 1.0]) * rng.uniform(1.02, 1.15)
            + rng.uniform(-0.04, 0.04, size=4),
        )
        self.offset = (rng.uniform(-4, 4, size=4), rng.uniform(-2, 10, size=4))
        self.haze = (rng.uniform(4, 10), rng.uniform(8, 20))
        self.sun = []  # per date: shadow vector per pixel of building height
        for azimuth_range, length in (((110, 160), (0.5, 0.8)), ((190, 250), (0.8, 1.3))):
            azimuth = math.radians(rng.uniform(*azimuth_range))
            scale = rng.uniform(*length)
            # Shadows point away from the sun: (dy, dx) in pixel rows/cols.
            self.sun.append((math.cos(azimuth) * scale, -math.sin(azimuth) * scale))
        angle = rng.uniform(0, 2 * math.pi)
        magnitude = rng.uniform(0.35, 1.0)
        #: Misregistration of the post image, in pixels (rows, cols).
        self.shift = (magnitude * math.sin(angle), magnitude * math.cos(angle))

    # ---- parcels -------------------------------------------------------------------------
    def parcels(self, y: NDArray[np.float64], x: NDArray[np.float64]) -> _Parcels:
        """Jittered-grid Voronoi parcels at coordinates ``y``, ``x`` (broadcastable).

        Distances are computed in float32 relative to the corner of each pixel's own lattice
        cell, so a pixel gets the same parcel whatever block it is computed in. On a separable
        grid the work is done per lattice cell, where the nine candidate sites are scalars and
        the squared distance is an outer sum of a row and a column term.
        """
        s = _PARCEL_SPACING
        gy, gx = np.floor(y / s).astype(np.int64), np.floor(x / s).astype(np.int64)
        y0, x0 = int(gy.min()) - 1, int(gx.min()) - 1
        ly = np.arange(y0, int(gy.max()) + 2)[:, None]
        lx = np.arange(x0, int(gx.max()) + 2)[None, :]
        # Site position inside its lattice cell, in pixels (float32, block-independent).
        jit_y = (np.float32(0.1) + np.float32(0.8) * _uniform(self.k(1), ly, lx)) * np.float32(s)
        jit_x = (np.float32(0.1) + np.float32(0.8) * _uniform(self.k(2), ly, lx)) * np.float32(s)
        ncols = jit_y.shape[1]
        rel_y = (y - gy * s).astype(np.float32)
        rel_x = (x - gx * s).astype(np.float32)
        offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        if _is_grid(y, x):
            index = np.empty((y.shape[0], x.shape[1]), dtype=np.intp)
            row_breaks = np.flatnonzero(np.diff(gy[:, 0])) + 1
            col_breaks = np.flatnonzero(np.diff(gx[0])) + 1
            for rows in np.split(np.arange(y.shape[0]), row_breaks):
                cy = int(gy[rows[0], 0]) - y0
                ry = rel_y[rows]
                for cols in np.split(np.arange(x.shape[1]), col_breaks):
                    cx = int(gx[0, cols[0]]) - x0
                    rx = rel_x[:, cols]
                    best = None
                    for dy, dx in offsets:
                        d = (jit_y[cy + dy, cx + dx] + np.float32(dy * s) - ry) ** 2 + (
                            jit_x[cy + dy, cx + dx] + np.float32(dx * s) - rx
                        ) ** 2
                        flat = (cy + dy) * ncols + cx + dx
                        if best is None:
                            best, winner = d, np.full(d.shape, flat, dtype=np.intp)
                        else:
                            closer = d < best
                            np.minimum(best, d, out=best)
                            winner[closer] = flat
                    index[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = winner
        else:
            shape = np.broadcast_shapes(y.shape, x.shape)
            best_d = np.full(shape, np.inf, dtype=np.float32)
            index = np.zeros(shape, dtype=np.intp)
            for dy, dx in offsets:
                flat = (gy - y0 + dy) * ncols + (gx - x0 + dx)
                d = (jit_y.ravel()[flat] + np.float32(dy * s) - rel_y) ** 2 + (
                    jit_x.ravel()[flat] + np.float32(dx * s) - rel_x
                ) ** 2
                closer = d < best_d
                best_d = np.where(closer, d, best_d)
                index = np.where(closer, flat, index)
        site_y = (ly + jit_y.astype(np.float64) / s) * s
        site_x = (lx + jit_x.astype(np.float64) / s) * s
        attrs = self._parcel_attributes(ly, lx, site_y, site_x)
        return _Parcels(index, {name: a.ravel() for name, a in attrs.items()})

    def urban(self, y: Any, x: Any) -> Any:
        """Urbanisation level in [0, 1] (low-frequency noise)."""
        return _fbm(self.k(3), y, x, _URBAN_SCALE, 2)

    def _parcel_attributes(
        self, ly: NDArray[Any], lx: NDArray[Any], site_y: NDArray[Any], site_x: NDArray[Any]
    ) -> dict[str, NDArray[Any]]:
        k = self.k
        u = self.urban(site_y, site_x)
        draw = _uniform(k(4), ly, lx)
        urban, fringe = u > 0.58, (u > 0.5) & (u <= 0.58)
        cls = np.where(
            urban,
            np.select([draw < 0.72, draw < 0.84, draw < 0.95], [OTHERS, BARE_LAND, TREE], CROPLAND),
            np.where(
                fringe,
                np.select(
                    [draw < 0.45, draw < 0.7, draw < 0.85], [CROPLAND, OTHERS, BARE_LAND], TREE
                ),
                np.select(
                    [draw < 0.6, draw < 0.85, draw < 0.93], [CROPLAND, TREE, BARE_LAND], OTHERS
                ),
            ),
        ).astype(np.uint8)
        event = _uniform(k(5), ly, lx)
        post = cls.copy()
        post[(cls == CROPLAND) & (event < 0.035)] = BARE_LAND
        post[(cls == TREE) & (event < 0.035)] = CROPLAND
        development = (cls == BARE_LAND) & (event < np.where(u > 0.45, 0.5, 0.15))
        # Orientation of furrows and of the buildings: mostly along the road grid.
        turn = _uniform(k(6), ly, lx)
        orientation = (np.floor(turn * 4) * (math.pi / 2) + (turn * 4 % 1 - 0.5) * 0.3).astype(
            np.float32
        )
        return {
            "class0": cls,
            "class1": post,
            "development": development,
            "urban": u.astype(np.float32),
            "orientation": orientation,
            "period": (5 + 9 * _uniform(k(7), ly, lx)).astype(np.float32),
            "variant": _uniform(k(8), ly, lx),
            "tone": _uniform(k(9), ly, lx),
        }

    # ---- water ---------------------------------------------------------------------------
    def _rivers(self, y0: float, y1: float) -> Iterator[tuple[int, NDArray[np.float64]]]:
        """Candidate rivers (index k, parameters) whose band may reach rows [y0, y1)."""
        reach = 1400
        for k in range(
            math.floor((y0 - reach) / _RIVER_SPACING), math.floor((y1 + reach) / _RIVER_SPACING) + 1
        ):
            p = _uniform(self.k(20), np.arange(8) + 8 * k).astype(np.float64)
            if p[0] < 0.5:
                continue
            yield k, p

    def water(self, y: Any, x: Any, urban: Any = None) -> Any:
        """Water mask: meandering rivers and lakes (``urban``: precomputed :meth:`urban`)."""
        shape = np.broadcast_shapes(np.shape(y), np.shape(x))
        mask = np.zeros(shape, dtype=bool)
        for k, p in self._rivers(float(np.min(y)), float(np.max(y))):
            centre = (
                k * _RIVER_SPACING
                + (0.2 + 0.6 * p[1]) * _RIVER_SPACING
                + 600 * p[2] * np.sin(2 * np.pi * x / (3000 + 5000 * p[3]) + 6.3 * p[4])
                + 200 * p[5] * np.sin(2 * np.pi * x / (900 + 900 * p[6]) + 6.3 * p[7])
            )
            half = 15 + 30 * p[6] + 8 * (_value_noise(self.k(21) + k, x * 0, x, 400.0) - 0.5)
            mask |= np.abs(y - centre) < half
        urban = self.urban(y, x) if urban is None else urban
        lake = _fbm(self.k(22), y, x, 1100.0, 2) - 0.35 * (urban - 0.5)
        return mask | (lake > 0.76)

    # ---- roads ---------------------------------------------------------------------------
    def _major_roads(
        self, along: Any, across: Any, lo: float, hi: float, family: int
    ) -> NDArray[np.bool_]:
        """Gently curving major roads running along ``along``; ``across`` is the other axis."""
        shape = np.broadcast_shapes(np.shape(along), np.shape(across))
        mask = np.zeros(shape, dtype=bool)
        spacing = _MAJOR_ROAD_SPACING
        for k in range(math.floor((lo - 400) / spacing), math.floor((hi + 400) / spacing) + 1):
            p = _uniform(self.k(30 + family), np.arange(7) + 7 * k).astype(np.float64)
            if p[0] < 0.25:
                continue
            wavelength = 6000 + 9000 * p[3]
            amplitude = 150 * p[2]
            phase = 2 * np.pi * along / wavelength + 6.3 * p[4]
            centre = k * spacing + (0.2 + 0.6 * p[1]) * spacing + amplitude * np.sin(phase)
            slope = amplitude * 2 * np.pi / wavelength * np.cos(phase)
            half = (6 + 5 * p[5]) * np.sqrt(1 + slope * slope)
            mask |= np.abs(across - centre) < half
        return mask

    def roads(self, y: Any, x: Any, urban: Any = None) -> NDArray[np.bool_]:
        """Road mask: major curving roads everywhere, a straight minor grid in urban areas."""
        mask = self._major_roads(x, y, float(np.min(y)), float(np.max(y)), 0)
        mask |= self._major_roads(y, x, float(np.min(x)), float(np.max(x)), 1)
        s = _MINOR_ROAD_SPACING
        # Minor roads lie on the lines row = k*s and col = k*s, 8 px wide, where urban.
        ky, kx = np.round(y / s), np.round(x / s)
        near_h = np.abs(y - ky * s) < 4
        near_v = np.abs(x - kx * s) < 4
        exists_h = _uniform(self.k(33), ky, np.floor(x / s)) < 0.8
        exists_v = _uniform(self.k(34), np.floor(y / s), kx) < 0.8
        minor = (near_h & exists_h) | (near_v & exists_v)
        if np.any(minor):
            mask |= minor & ((self.urban(y, x) if urban is None else urban) > 0.56)
        return mask

    # ---- buildings -----------------------------------------------------------------------
    def buildings(self, ci0: int, ci1: int, cj0: int, cj1: int) -> dict[str, NDArray[Any]]:
        """All buildings of cells rows ``[ci0, ci1)`` x cols ``[cj0, cj1)`` (pixel coordinates).

        Returns arrays: ``corners`` (n, 4, 2) as (x=col, y=row), ``state``, ``roof`` (n, 4)
        colour, ``height`` (shadow length factor), ``ridge`` (bool), ``id``, ``angle``,
        ``cell`` (n, 2).
        """
        k = self.k
        cell_grid = np.meshgrid(np.arange(ci0, ci1), np.arange(cj0, cj1), indexing="ij")
        ci, cj = cell_grid[0].ravel(), cell_grid[1].ravel()
        kind = np.digitize(_uniform(k(40), ci, cj), [0.55, 0.85])  # 0: 4x4, 1: 3x3, 2: 2x2
        parts: list[dict[str, NDArray[Any]]] = []
        for t, m in enumerate((4, 3, 2)):
            sel = kind == t
            if not np.any(sel):
                continue
            a, b = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
            c_i = np.repeat(ci[sel], m * m)
            c_j = np.repeat(cj[sel], m * m)
            sa = np.tile(a.ravel(), int(sel.sum()))
            sb = np.tile(b.ravel(), int(sel.sum()))
            slot_side = (CELL - 2 * _CELL_MARGIN) / m
            parts.append(
                {
                    "ci": c_i,
                    "cj": c_j,
                    "slot_index": sa * m + sb + 16 * t,
                    "size": np.full(c_i.shape, slot_side),
                    "cy": c_i * CELL + _CELL_MARGIN + (sa + 0.5) * slot_side,
                    "cx": c_j * CELL + _CELL_MARGIN + (sb + 0.5) * slot_side,
                }
            )
        if not parts:
            return _empty_buildings()
        s = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        sid = (s["ci"], s["cj"], s["slot_index"])
        parcels = self.parcels(s["cy"].astype(np.float64), s["cx"].astype(np.float64))
        attr = {name: v[parcels.index] for name, v in parcels.attrs.items()}
        cls0, cls1, u = attr["class0"], attr["class1"], attr["urban"]
        occupancy = np.select(
            [cls0 == OTHERS, cls0 == CROPLAND, cls0 == BARE_LAND],
            [np.where(u > 0.58, 0.8, 0.45), np.where(u > 0.5, 0.06, 0.025), 0.04],
            0.0,
        )
        draw = _uniform(k(41), *sid)
        state = np.where(draw < occupancy, _EXISTING, _NONE)
        state = np.where((state == _EXISTING) & (_uniform(k(42), *sid) < 0.07), _DEMOLISHED, state)
        new_p = np.where(
            attr["development"], 0.7, np.where((cls1 == CROPLAND) & (u > 0.5), 0.02, 0)
        )
        state = np.where((state == _NONE) & (_uniform(k(43), *sid) < new_p), _NEW, state)
        keep = state != _NONE
        s = {name: v[keep] for name, v in s.items()}
        state, attr = state[keep], {name: v[keep] for name, v in attr.items()}
        sid = (s["ci"], s["cj"], s["slot_index"])
        n = state.size
        if n == 0:
            return _empty_buildings()
        slot = s["size"]
        length = slot * (0.35 + 0.5 * _uniform(k(44), *sid))
        width = length * (0.45 + 0.45 * _uniform(k(45), *sid))
        angle = attr["orientation"] + (_uniform(k(46), *sid) - 0.5) * 0.12
        cos, sin = np.abs(np.cos(angle)), np.abs(np.sin(angle))
        extent = np.maximum(length * cos + width * sin, length * sin + width * cos)
        fit = np.minimum(1.0, (slot - 4) / extent)
        length, width, extent = length * fit, width * fit, extent * fit
        slack = (slot - 4 - extent) / 2
        cy = s["cy"] + slack * (2 * _uniform(k(47), *sid) - 1)
        cx = s["cx"] + slack * (2 * _uniform(k(48), *sid) - 1)
        ux, uy = np.cos(angle), np.sin(angle)
        hl, hw = length / 2, width / 2
        corners = np.stack(
            [
                np.stack([cx + sx * hl * ux - sy * hw * uy, cy + sx * hl * uy + sy * hw * ux], -1)
                for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
            ],
            axis=1,
        )
        # Reject buildings touching a road or water: test corners, edge midpoints and centre,
        # against roads widened by a margin (corner tests alone could miss a thin road).
        probes = np.concatenate(
            [
                corners,
                (corners + np.roll(corners, -1, axis=1)) / 2,
                np.stack([cx, cy], -1)[:, None],
            ],
            axis=1,
        )
        py, px = probes[..., 1].ravel(), probes[..., 0].ravel()
        blocked = self.water(py, px)
        for oy, ox in ((0, 0), (3, 0), (-3, 0), (0, 3), (0, -3)):
            blocked |= self.roads(py + oy, px + ox)
        ok = ~blocked.reshape(n, -1).any(axis=1)
        tone = _uniform(k(49), *sid)
        palette = np.array(
            [
                (158, 74, 58, 70),  # red-brown tiles
                (176, 174, 168, 120),  # concrete
                (72, 112, 162, 60),  # blue steel
                (214, 214, 208, 150),  # white membrane
                (92, 92, 98, 50),  # dark bitumen
                (120, 140, 118, 80),  # green-grey
            ],
            dtype=np.float32,
        )
        roof = palette[np.floor(tone * len(palette)).astype(np.intp)]
        roof = roof * (0.85 + 0.3 * _uniform(k(50), *sid))[:, None]
        height = 3 + (4 + 10 * _uniform(k(51), *sid)) * (slot / 60.0) ** 0.7
        return {
            "corners": corners[ok],
            "state": state[ok].astype(np.uint8),
            "roof": roof[ok].astype(np.float32),
            "height": height[ok].astype(np.float32),
            "ridge": (_uniform(k(52), *sid) < 0.5)[ok],
            "angle": angle[ok].astype(np.float64),
            "id": ((s["ci"] * 65536 + s["cj"]) * 64 + s["slot_index"])[ok].astype(np.int64),
            "cell": np.stack([s["ci"], s["cj"]], -1)[ok],
            "from_class": np.where(state == _NEW, attr["class0"], BUILDING)[ok].astype(np.uint8),
        }


def _empty_buildings() -> dict[str, NDArray[Any]]:
    return {
        "corners": np.zeros((0, 4, 2)),
        "state": np.zeros(0, np.uint8),
        "roof": np.zeros((0, 4), np.float32),
        "height": np.zeros(0, np.float32),
        "ridge": np.zeros(0, bool),
        "angle": np.zeros(0),
        "id": np.zeros(0, np.int64),
        "cell": np.zeros((0, 2), np.int64),
        "from_class": np.zeros(0, np.uint8),
    }


# --------------------------------------------------------------------------------------------
# Rendering of one block.
# --------------------------------------------------------------------------------------------
# Colours (R, G, B, NIR) per date: date 0 early summer, date 1 late summer (harvest, yellowing).
_CROP_PALETTES = (
    np.array(
        [[62, 110, 45, 205], [82, 128, 55, 215], [100, 138, 68, 195], [150, 125, 95, 115]],
        np.float32,
    ),
    np.array(
        [[190, 170, 100, 140], [150, 120, 80, 100], [90, 130, 60, 190], [170, 150, 90, 120]],
        np.float32,
    ),
)
_TREE_RGBN = (np.array([38, 72, 36, 190], np.float32), np.array([55, 75, 34, 165], np.float32))
_SOIL_RGBN = np.array([165, 140, 110, 120], np.float32)
_SOIL_SPREAD = np.array([35, 25, 15, 20], np.float32)
_LAWN_RGBN = (np.array([90, 120, 70, 170], np.float32), np.array([110, 118, 72, 150], np.float32))
_PAVING_RGBN = np.array([150, 148, 140, 105], np.float32)
_WATER_RGBN = (np.array([30, 60, 70, 18], np.float32), np.array([40, 68, 66, 22], np.float32))
_ROAD_RGBN = np.array([92, 94, 99, 70], np.float32)


@dataclass
class _GridLayout:
    """Everything about the scene on one pixel grid (a block plus halo, possibly shifted)."""

    y: NDArray[np.float64]
    x: NDArray[np.float64]
    parcels: _Parcels
    water: NDArray[np.bool_]
    road: NDArray[np.bool_]
    building: NDArray[np.int32]  # index + 1 into the buildings arrays, 0 where none
    buildings: dict[str, NDArray[Any]] = field(default_factory=dict)

    def classes(self, date: int) -> NDArray[np.uint8]:
        """LsSCD class of every pixel at ``date`` (0 pre, 1 post)."""
        cls = self.parcels.attrs[f"class{date}"][self.parcels.index]
        cls[self.water] = WATER
        cls[self.road] = ROAD
        state = np.concatenate([[_NONE], self.buildings["state"]])[self.building]
        if date == 0:
            cls[(state == _EXISTING) | (state == _DEMOLISHED)] = BUILDING
        else:
            cls[state == _DEMOLISHED] = BARE_LAND
            cls[(state == _EXISTING) | (state == _NEW)] = BUILDING
        return cls


def _rasterize_ids(
    polygons: Any, values: NDArray[Any], shape: tuple[int, int], transform: Affine
) -> Any:
    if len(polygons) == 0:
        return np.zeros(shape, np.int32)
    return rasterio.features.rasterize(
        zip(polygons, values.tolist(), strict=True),
        out_shape=shape,
        transform=transform,
        fill=0,
        dtype="int32",
    )


class _Renderer:
    """Computes labels and images of any block of a scene."""

    def __init__(self, seed: int, bands: int) -> None:
        self.layout = _Layout(seed)
        self.bands = bands

    def grid(
        self, row0: int, col0: int, h: int, w: int, shift: tuple[float, float], halo: int
    ) -> _GridLayout:
        """Scene layout on the pixel centres of rows/cols of a block, shifted by ``shift``."""
        lay = self.layout
        y: NDArray[np.float64] = (
            np.arange(row0 - halo, row0 + h + halo, dtype=np.float64) + (0.5 + shift[0])
        )[:, None]
        x: NDArray[np.float64] = (
            np.arange(col0 - halo, col0 + w + halo, dtype=np.float64) + (0.5 + shift[1])
        )[None, :]
        ci0, cj0 = (row0 - halo) // CELL - 1, (col0 - halo) // CELL - 1
        ci1, cj1 = -(-(row0 + h + halo) // CELL) + 1, -(-(col0 + w + halo) // CELL) + 1
        buildings = lay.buildings(ci0, ci1, cj0, cj1)
        shape = (h + 2 * halo, w + 2 * halo)
        transform = Affine.translation(col0 - halo + shift[1], row0 - halo + shift[0])
        polygons = shapely.polygons(buildings["corners"])
        urban = lay.urban(y, x)
        building = _rasterize_ids(polygons, np.arange(1, len(polygons) + 1), shape, transform)
        return _GridLayout(
            y=y,
            x=x,
            parcels=lay.parcels(y, x),
            water=lay.water(y, x, urban),
            road=lay.roads(y, x, urban),
            building=building,
            buildings=buildings | {"polygons": polygons, "transform": np.array(transform)},
        )

    def image(
        self, g: _GridLayout, date: int, halo: int, row0: int, col0: int
    ) -> NDArray[np.uint8]:
        """Render the image of ``date`` on grid ``g``; returns (bands, h, w) without halo.

        ``row0``/``col0`` are the block's first output pixel (sensor noise is hashed from the
        output pixel, not from the possibly shifted scene coordinates).
        """
        import scipy.ndimage

        lay, k = self.layout, self.layout.k
        y, x = g.y, g.x
        cls = g.classes(date)
        shape = cls.shape
        nbase = 4 if self.bands > 3 else 3
        attrs = g.parcels.attrs
        # Texture fields (functions of absolute coordinates), centred on 0.
        half = np.float32(0.5)
        fine = _value_noise(k(60), y, x, 4.0)
        mid = _value_noise(k(61), y, x, 11.0)
        crowns = _smoothstep(0.25, 0.75, 0.6 * fine + 0.4 * mid)
        fields = [
            fine - half,
            mid - half,
            _value_noise(k(62), y, x, 35.0) - half,
            _fbm(k(63), y, x, 60.0, 2) - half,
            crowns,
        ]
        # Crop furrows: a sinusoid along the parcel's orientation with the parcel's period.
        theta, period = attrs["orientation"], attrs["period"]
        freq_x = (np.cos(theta) * (2 * np.pi) / period).astype(np.float32)
        freq_y = (np.sin(theta) * (2 * np.pi) / period).astype(np.float32)
        pidx = g.parcels.index
        fields.append(
            np.sin(freq_x[pidx] * x.astype(np.float32) + freq_y[pidx] * y.astype(np.float32))
        )
        # Per (parcel, class) tables: base colour, texture offset and texture field weights.
        n_parcels = attrs["tone"].size
        base = np.zeros((n_parcels, 8, 4), np.float32)
        offset0 = np.ones((n_parcels, 8), np.float32)
        weights = np.zeros((len(fields), n_parcels, 8), np.float32)
        tone = attrs["tone"]
        variant = np.minimum((attrs["variant"] * 4).astype(np.intp), 3)
        base[:, CROPLAND] = _CROP_PALETTES[date][variant]
        weights[1, :, CROPLAND], weights[3, :, CROPLAND] = 0.08, 0.1
        weights[5, :, CROPLAND] = 0.04 + 0.1 * tone
        base[:, TREE] = _TREE_RGBN[date]
        offset0[:, TREE] = 0.45
        weights[4, :, TREE] = 1.0
        base[:, BARE_LAND] = _SOIL_RGBN + _SOIL_SPREAD * (tone[:, None] - 0.5)
        weights[0, :, BARE_LAND], weights[2, :, BARE_LAND], weights[3, :, BARE_LAND] = (
            0.1,
            0.14,
            0.08,
        )
        base[:, OTHERS] = _LAWN_RGBN[date]
        weights[1, :, OTHERS] = 0.1
        base[:, WATER] = _WATER_RGBN[date]
        weights[0, :, WATER], weights[2, :, WATER] = 0.04, 0.12
        base[:, ROAD] = _ROAD_RGBN
        weights[0, :, ROAD] = 0.08
        key = pidx * 8 + cls
        texture = offset0.ravel()[key]
        for weight, values in zip(weights, fields, strict=True):
            texture += weight.ravel()[key] * values
        colour = np.empty((nbase, *shape), dtype=np.float32)
        flat_base = base.reshape(-1, 4)
        for band in range(nbase):
            np.multiply(flat_base[:, band][key], texture, out=colour[band])
        # Others: lawn mixed with paving.
        others = cls == OTHERS
        if np.any(others):
            mix = _smoothstep(
                0.35, 0.65, (fields[3][others] + half) * 0.7 + 0.3 * tone[pidx[others]]
            )
            lawn = _LAWN_RGBN[date]
            for band in range(nbase):
                colour[band][others] += (_PAVING_RGBN[band] - lawn[band]) * mix * texture[others]

        # Buildings: roof colour, gabled roofs lit on one side, shadows cast on the ground.
        b = g.buildings
        visible = (b["state"] == _EXISTING) | (b["state"] == (_DEMOLISHED if date == 0 else _NEW))
        idx = g.building
        on_roof = (idx > 0) & np.concatenate([[False], visible])[idx]
        if np.any(on_roof):
            j = idx[on_roof] - 1
            cyx = b["corners"].mean(axis=1)
            yy = np.broadcast_to(y, shape)[on_roof]
            xx = np.broadcast_to(x, shape)[on_roof]
            across = -(xx - cyx[j, 0]) * np.sin(b["angle"][j]) + (yy - cyx[j, 1]) * np.cos(
                b["angle"][j]
            )
            lit = np.where(b["ridge"][j], np.where(across > 0, 1.12, 0.86), 1.0).astype(np.float32)
            roof_noise = 1 + 0.06 * fields[0][on_roof]
            for band in range(nbase):
                colour[band][on_roof] = b["roof"][j, band] * lit * roof_noise
        if np.any(visible):
            sy, sx = lay.sun[date]
            corners = b["corners"][visible]
            h = b["height"][visible][:, None, None]
            cast = corners + h * np.array([sx, sy])
            hulls = shapely.convex_hull(
                shapely.multipoints(np.concatenate([corners, cast], axis=1))
            )
            transform = Affine(*b["transform"].ravel()[:6])
            shadow = _rasterize_ids(hulls, np.ones(len(hulls), np.int32), shape, transform) > 0
            shadow &= ~on_roof
            colour[:, shadow] *= np.array([0.42, 0.45, 0.55, 0.5], np.float32)[:nbase, None]

        # Optical blur (seamless thanks to the halo), then date-wide radiometry and haze.
        scipy.ndimage.gaussian_filter(colour, sigma=(0, 0.6, 0.6), output=colour, truncate=3.0)
        haze = _value_noise(k(64 + date), y, x, 2500.0)
        gain, offset = lay.gain[date].astype(np.float32), lay.offset[date].astype(np.float32)
        sl = (slice(halo, shape[0] - halo), slice(halo, shape[1] - halo))
        out = np.empty((self.bands, shape[0] - 2 * halo, shape[1] - 2 * halo), np.uint8)
        rows = np.arange(row0, row0 + shape[0] - 2 * halo)[:, None]
        cols = np.arange(col0, col0 + shape[1] - 2 * halo)[None, :]
        for band in range(self.bands):
            if band < 4:
                v = colour[band][sl]
            else:
                w = (band - 3) / max(self.bands - 3, 1)
                v = (1 - w) * colour[0][sl] + w * colour[3][sl]
            src = min(band, 3)
            v = v * gain[src] + offset[src] + lay.haze[date] * (haze[sl] - 0.3)
            # Sensor noise: triangular, hashed from the absolute pixel and band (separably:
            # row hash xor column hash, then one mixing round).
            channel = 70 + 16 * date + band
            hsh = _mix(_hash(k(channel), rows) ^ _hash(k(channel + 8), cols))
            noise = (
                (hsh & np.uint32(0xFF)).astype(np.float32)
                + ((hsh >> np.uint32(8)) & np.uint32(0xFF)).astype(np.float32)
                - 255.0
            ) / 255.0
            v = v + 5.0 * noise
            out[band] = np.clip(np.rint(v), 0, 255).astype(np.uint8)
        return out


# --------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scene:
    """A synthetic bi-temporal scene on disk (see :func:`make_scene`).

    Attributes:
        root: directory holding the files.
        height: rows per date.
        width: columns per date.
        crs: coordinate reference system (as given to :func:`make_scene`, e.g. ``"EPSG:32650"``).
        res: pixel size in CRS units.
        transform: affine pixel-to-map transform of every raster.
        bands: image bands (1-3 RGB, 4 NIR-like, further bands mix red and NIR).
        seed: generator seed.
        class_names: LsSCD class names in class-id order.
        shift: misregistration of the post image in pixels (rows, cols).
        stats: summary figures (changed pixels, changed buildings, generation time).
    """

    root: Path
    height: int
    width: int
    crs: str
    res: float
    transform: Affine
    bands: int = 3
    seed: int = 0
    class_names: tuple[str, ...] = CLASS_NAMES
    shift: tuple[float, float] = (0.0, 0.0)
    stats: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def pre(self) -> Path:
        """Image of the first date (uint8 GeoTIFF, ``bands`` bands)."""
        return self.root / "pre.tif"

    @property
    def post(self) -> Path:
        """Image of the second date (uint8 GeoTIFF, ``bands`` bands, slightly misregistered)."""
        return self.root / "post.tif"

    @property
    def change(self) -> Path:
        """Binary change raster (uint8: 0 no change, 1 change, nodata 255)."""
        return self.root / CHANGE_FILE

    @property
    def semantic_pre(self) -> Path:
        """LsSCD class raster of the first date (uint8, nodata 255, colour table)."""
        return self.root / SEMANTIC_PRE_FILE

    @property
    def semantic_post(self) -> Path:
        """LsSCD class raster of the second date (uint8, nodata 255, colour table)."""
        return self.root / SEMANTIC_POST_FILE

    @property
    def changed_buildings(self) -> Path:
        """GeoPackage of new and demolished building footprints (``change_type`` attribute)."""
        return self.root / "changed_buildings.gpkg"

    @property
    def manifest(self) -> Path:
        """JSON description of the scene, read by :meth:`load`."""
        return self.root / MANIFEST_NAME

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Map bounds ``(left, bottom, right, top)`` in CRS units."""
        left, top = self.transform.c, self.transform.f
        right = left + self.width * self.transform.a
        bottom = top + self.height * self.transform.e
        return (left, min(bottom, top), right, max(bottom, top))

    @classmethod
    def load(cls, out_dir: str | os.PathLike[str]) -> Scene:
        """Reopen a scene written by :func:`make_scene`.

        Args:
            out_dir: the directory given to :func:`make_scene`.

        Returns:
            The scene description.

        Raises:
            DataError: if the directory holds no complete scene.
        """
        root = Path(out_dir)
        manifest = root / MANIFEST_NAME
        try:
            meta = json.loads(manifest.read_text())
            scene = cls(
                root=root,
                height=int(meta["height"]),
                width=int(meta["width"]),
                crs=str(meta["crs"]),
                res=float(meta["res"]),
                transform=Affine(*meta["transform"][:6]),
                bands=int(meta["bands"]),
                seed=int(meta["seed"]),
                class_names=tuple(meta["class_names"]),
                shift=(float(meta["shift"][0]), float(meta["shift"][1])),
                stats=dict(meta.get("stats", {})),
            )
        except FileNotFoundError as err:
            raise DataError(
                f"no synthetic scene in {str(root)!r}: {manifest.name} missing"
            ) from err
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise DataError(f"corrupt scene manifest {str(manifest)!r}: {err}") from err
        missing = [
            p.name
            for p in (scene.pre, scene.post, scene.change, scene.semantic_pre, scene.semantic_post)
            if not p.exists()
        ]
        if missing:
            raise DataError(f"incomplete synthetic scene in {str(root)!r}: missing {missing}")
        return scene

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (the content of the manifest)."""
        return {
            "format_version": FORMAT_VERSION,
            "height": self.height,
            "width": self.width,
            "crs": self.crs,
            "res": self.res,
            "transform": list(self.transform)[:6],
            "bounds": list(self.bounds),
            "bands": self.bands,
            "seed": self.seed,
            "class_names": list(self.class_names),
            "shift": list(self.shift),
            "files": {
                name: getattr(self, name).name
                for name in ("pre", "post", "change", "semantic_pre", "semantic_post")
            }
            | {"changed_buildings": self.changed_buildings.name},
            "stats": self.stats,
        }


def _default_origin(
    crs: str, parsed: rasterio.crs.CRS, height: int, width: int, res: float
) -> tuple[float, float]:
    """Upper-left corner centring the scene on the CRS's area of use (snapped to 100 px)."""
    import pyproj

    try:
        pcrs = pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError:
        pcrs = pyproj.CRS.from_user_input(parsed.to_wkt())
    area = pcrs.area_of_use
    if area is None:
        return 0.0, height * res
    lon, lat = (area.west + area.east) / 2, (area.south + area.north) / 2
    if area.west > area.east:  # area crossing the antimeridian
        lon = ((area.west + area.east + 360) / 2 + 180) % 360 - 180
    to_crs = pyproj.Transformer.from_crs("EPSG:4326", pcrs, always_xy=True)
    cx, cy = to_crs.transform(lon, lat)
    if not (math.isfinite(cx) and math.isfinite(cy)):
        return 0.0, height * res
    step = 100 * res
    return (
        math.floor((cx - width * res / 2) / step) * step,
        math.floor((cy + height * res / 2) / step) * step,
    )


def _validate(
    height: int, width: int, crs: str, res: float, bands: int, block_size: int
) -> rasterio.crs.CRS:
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise ConfigurationError(f"scene {name} must be a positive integer, got {value!r}")
    if not (isinstance(res, int | float) and math.isfinite(res) and res > 0):
        raise ConfigurationError(f"res (pixel size in CRS units) must be > 0, got {res!r}")
    if not isinstance(bands, int | np.integer) or not 3 <= bands <= 32:
        raise ConfigurationError(f"bands must be an integer between 3 and 32, got {bands!r}")
    if block_size < CELL or block_size % CELL:
        raise ConfigurationError(
            f"block_size must be a positive multiple of {CELL}, got {block_size}"
        )
    try:
        parsed = rasterio.crs.CRS.from_user_input(crs)
    except (rasterio.errors.CRSError, ValueError, TypeError) as err:
        raise ConfigurationError(f"unknown or invalid CRS {crs!r}: {err}") from err
    if parsed.is_geographic and (height * res > 180 or width * res > 360):
        raise ConfigurationError(
            f"res={res} is in degrees for the geographic CRS {crs!r}: a {height}x{width} scene "
            "would not fit on the globe; use a projected CRS or a smaller res"
        )
    return parsed


def _label_profile(common: dict[str, Any]) -> dict[str, Any]:
    return dict(common, count=1, dtype="uint8", nodata=LABEL_NODATA)


def make_scene(
    out_dir: str | os.PathLike[str],
    height: int,
    width: int,
    *,
    seed: int = 0,
    crs: str = "EPSG:32650",
    res: float = 0.6,
    bands: int = 3,
    progress: bool = False,
    origin: tuple[float, float] | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    workers: int = 1,
) -> Scene:
    """Generate a synthetic bi-temporal scene of ``height`` x ``width`` pixels per date.

    Files written in ``out_dir`` (Cloud-Optimized GeoTIFFs: 512-pixel tiles, ZSTD with
    predictor 2, BigTIFF when needed, overviews; every file written atomically):

    * ``pre.tif``, ``post.tif``: uint8 images with ``bands`` bands (RGB, then a NIR-like band,
      then bands mixing red and NIR). The post image differs by season, sun, haze, noise and a
      sub-pixel to 1-pixel misregistration (:attr:`Scene.shift`), none of which is change.
    * ``semantic_pre.tif``, ``semantic_post.tif``: uint8 LsSCD classes (0 building, 1 road,
      2 water, 3 bare land, 4 tree, 5 cropland, 6 others), nodata 255, colour table and the
      ``GEOCHANGE_CLASS_NAMES`` tag (JSON list of class names).
    * ``change.tif``: uint8, exactly ``semantic_pre != semantic_post`` (nodata 255).
    * ``changed_buildings.gpkg``: layer ``changed_buildings``, one polygon per new or demolished
      building with ``change_type`` ("new building" / "demolished building"), ``building_id``,
      ``from_class``, ``to_class`` and ``area`` (CRS units²).
    * ``scene.json``: the manifest read by :meth:`Scene.load`.

    The content depends only on ``seed`` (and on the pixel position), not on ``block_size``;
    memory stays bounded (well under 1 GB) whatever the size.

    Args:
        out_dir: output directory (created if needed).
        height: rows per date.
        width: columns per date.
        seed: random seed; the same seed gives identical files.
        crs: CRS of the outputs (anything rasterio understands).
        res: pixel size in CRS units.
        bands: number of image bands (>= 3).
        progress: show a tqdm progress bar.
        origin: map coordinates ``(left, top)`` of the upper-left corner; default centres the
            scene on the CRS's area of use.
        block_size: side of the blocks generated at once (a multiple of 256).
        workers: processes computing blocks in parallel (1: in this process). Each worker
            holds one or two blocks (about 250 MiB RSS); the files are identical for any value.

    Returns:
        The :class:`Scene` describing the files.

    Raises:
        ConfigurationError: on invalid size, CRS, resolution or band count.
        OutputError: if ``out_dir`` is not writable.
    """
    import time

    import geopandas as gpd
    from tqdm.auto import tqdm

    start = time.perf_counter()
    parsed_crs = _validate(height, width, crs, res, bands, block_size)
    if not isinstance(workers, int | np.integer) or workers < 1:
        raise ConfigurationError(f"workers must be a positive integer, got {workers!r}")
    height, width, bands, seed = int(height), int(width), int(bands), int(seed)
    root = check_writable_dir(out_dir)
    left, top = (
        origin if origin is not None else _default_origin(crs, parsed_crs, height, width, res)
    )
    transform = Affine(res, 0.0, left, 0.0, -res, top)
    renderer = _Renderer(seed, bands)
    shift = renderer.layout.shift
    scene = Scene(
        root=root,
        height=height,
        width=width,
        crs=str(crs),
        res=float(res),
        transform=transform,
        bands=bands,
        seed=seed,
        shift=(float(shift[0]), float(shift[1])),
    )
    # The intermediate tiled files are rewritten by the COG conversion: compress them fast.
    common = dict(
        TILED_GTIFF_OPTIONS,
        zstd_level=1,
        height=height,
        width=width,
        crs=parsed_crs,
        transform=transform,
    )
    image_profile = dict(
        common, count=bands, dtype="uint8", photometric="RGB" if bands == 3 else None
    )
    image_profile = {k: v for k, v in image_profile.items() if v is not None}
    outputs = {
        "pre": (scene.pre, image_profile),
        "post": (scene.post, image_profile),
        "semantic_pre": (scene.semantic_pre, _label_profile(common)),
        "semantic_post": (scene.semantic_post, _label_profile(common)),
        "change": (scene.change, _label_profile(common)),
    }
    tiled = {name: root / f".{path.name}.tiled.tif" for name, (path, _) in outputs.items()}
    colormap = {i: (*rgb, 255) for i, rgb in CLASS_COLORS.items()}
    class_tag = json.dumps(list(CLASS_NAMES))
    records: list[dict[str, Any]] = []
    changed_pixels = 0
    blocks = [
        (b.row_off, b.col_off, b.height, b.width) for b in BlockGrid(height, width, block_size)
    ]
    # A small GDAL cache: blocks are written once, so caching more only grows the RSS.
    with gdal_cache():
        datasets = {
            name: rasterio.open(tiled[name], "w", **prof) for name, (_, prof) in outputs.items()
        }
        try:
            for name in ("semantic_pre", "semantic_post"):
                datasets[name].write_colormap(1, colormap)
                datasets[name].update_tags(**{CLASS_NAMES_TAG: class_tag})
            datasets["change"].update_tags(
                **{CLASS_NAMES_TAG: json.dumps(list(CHANGE_CLASS_NAMES))}
            )
            for name in ("pre", "post"):
                datasets[name].update_tags(
                    GEOCHANGE_SYNTHETIC_SEED=str(seed),
                    GEOCHANGE_DATE="pre" if name == "pre" else "post",
                )
            for row0, col0, block in tqdm(
                _blocks_in_order(renderer, scene, blocks, workers),
                total=len(blocks),
                desc="synth",
                unit="block",
                disable=not progress,
                dynamic_ncols=True,
            ):
                h, w = block["change"].shape
                window = Window(col0, row0, w, h)
                changed_pixels += int(block["change"].sum())
                for name in ("semantic_pre", "semantic_post", "change"):
                    datasets[name].write(block[name], 1, window=window)
                for name in ("pre", "post"):
                    datasets[name].write(block[name], window=window)
                records.extend(block["records"])
        except BaseException:
            for ds in datasets.values():
                ds.close()
            for path in tiled.values():
                path.unlink(missing_ok=True)
            raise
        for ds in datasets.values():
            ds.close()
        # Overviews + COG conversion: a noticeable share of the time at large sizes.
        for name, (path, _) in tqdm(
            outputs.items(), desc="overviews+COG", unit="file", disable=not progress
        ):
            finalize_cog(
                tiled[name], path, resampling="average" if name in ("pre", "post") else "nearest"
            )

    frame = gpd.GeoDataFrame(
        {
            "change_type": [r["change_type"] for r in records],
            "building_id": np.array([r["building_id"] for r in records], dtype=np.int64),
            "from_class": [r["from_class"] for r in records],
            "to_class": [r["to_class"] for r in records],
            "area": np.array([r["geometry"].area for r in records], dtype=np.float64),
        },
        geometry=[r["geometry"] for r in records],
        crs=parsed_crs.to_wkt(),
    )
    with atomic_output(scene.changed_buildings) as tmp:
        with warnings.catch_warnings():
            # The temporary name ends in ".partial"; the final name is a proper ".gpkg".
            warnings.filterwarnings("ignore", message=".*extension should be.*")
            frame.to_file(
                tmp,
                driver="GPKG",
                layer="changed_buildings",
                engine="pyogrio",
                geometry_type="Polygon",  # declared even when the layer is empty
            )
    stats = {
        "changed_pixels": changed_pixels,
        "changed_fraction": changed_pixels / (height * width),
        "new_buildings": int(sum(r["change_type"] == "new building" for r in records)),
        "demolished_buildings": int(
            sum(r["change_type"] == "demolished building" for r in records)
        ),
        "seconds": round(time.perf_counter() - start, 3),
    }
    scene = Scene(**{**scene.__dict__, "stats": stats})
    with atomic_output(scene.manifest) as tmp:
        tmp.write_text(json.dumps(scene.to_dict(), indent=2))
    return scene


_WORKER_RENDERER: _Renderer | None = None


def _init_worker(seed: int, bands: int) -> None:
    global _WORKER_RENDERER
    _WORKER_RENDERER = _Renderer(seed, bands)


def _compute_block(
    renderer: _Renderer, scene: Scene, row0: int, col0: int, h: int, w: int
) -> dict[str, Any]:
    """Labels, images and changed-building records of one block."""
    grid0 = renderer.grid(row0, col0, h, w, (0.0, 0.0), _HALO)
    inner = (slice(_HALO, _HALO + h), slice(_HALO, _HALO + w))
    sem_pre = grid0.classes(0)[inner]
    sem_post = grid0.classes(1)[inner]
    block: dict[str, Any] = {
        "semantic_pre": sem_pre,
        "semantic_post": sem_post,
        "change": (sem_pre != sem_post).astype(np.uint8),
        "pre": renderer.image(grid0, 0, _HALO, row0, col0),
        "records": _changed_building_records(grid0.buildings, row0, col0, h, w, scene),
    }
    del grid0
    grid1 = renderer.grid(row0, col0, h, w, renderer.layout.shift, _HALO)
    block["post"] = renderer.image(grid1, 1, _HALO, row0, col0)
    return block


def _worker_block(task: tuple[Scene, int, int, int, int]) -> tuple[int, int, dict[str, Any]]:
    scene, row0, col0, h, w = task
    assert _WORKER_RENDERER is not None
    return row0, col0, _compute_block(_WORKER_RENDERER, scene, row0, col0, h, w)


def _blocks_in_order(
    renderer: _Renderer, scene: Scene, blocks: list[tuple[int, int, int, int]], workers: int
) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """Yield computed blocks in order, in this process or in ``workers`` worker processes.

    With workers, at most ``2 * workers`` blocks are in flight, so memory stays bounded. The
    workers are fresh interpreters that never re-run the caller's script and exit when this
    process dies (see :mod:`geochange.parallel`).
    """
    if workers <= 1:
        for row0, col0, h, w in blocks:
            yield row0, col0, _compute_block(renderer, scene, row0, col0, h, w)
        return
    import collections
    from concurrent.futures import Future

    from geochange.parallel import WorkerPool

    with WorkerPool(workers, initializer=_init_worker, initargs=(scene.seed, scene.bands)) as pool:
        pending: collections.deque[Future[tuple[int, int, dict[str, Any]]]] = collections.deque()
        tasks = iter(blocks)

        def submit_next() -> None:
            task = next(tasks, None)
            if task is not None:
                pending.append(pool.submit(_worker_block, (scene, *task)))

        for _ in range(2 * workers):
            submit_next()
        while pending:
            result = pending.popleft().result()
            submit_next()
            yield result


def _changed_building_records(
    buildings: dict[str, NDArray[Any]], row0: int, col0: int, h: int, w: int, scene: Scene
) -> list[dict[str, Any]]:
    """Map polygons of the new/demolished buildings whose cell lies in this block."""
    cell = buildings["cell"]
    changed = (buildings["state"] == _NEW) | (buildings["state"] == _DEMOLISHED)
    # Blocks are aligned on cells, so each cell (and its buildings) belongs to exactly one block.
    own = (
        changed
        & (cell[:, 0] * CELL >= row0)
        & (cell[:, 0] * CELL < row0 + h)
        & (cell[:, 1] * CELL >= col0)
        & (cell[:, 1] * CELL < col0 + w)
    )
    if not np.any(own):
        return []
    extent = shapely.box(0, 0, scene.width, scene.height)
    pixel_polygons = shapely.intersection(buildings["polygons"][own], extent)
    t = scene.transform
    records = []
    for polygon, state, building_id, from_class in zip(
        pixel_polygons,
        buildings["state"][own],
        buildings["id"][own],
        buildings["from_class"][own],
        strict=True,
    ):
        if polygon.is_empty or polygon.area <= 0:
            continue
        geometry = shapely.transform(
            polygon, lambda xy: np.column_stack([t.a * xy[:, 0] + t.c, t.e * xy[:, 1] + t.f])
        )
        new = state == _NEW
        records.append(
            {
                "change_type": "new building" if new else "demolished building",
                "building_id": int(building_id),
                "from_class": CLASS_NAMES[int(from_class)] if new else "building",
                "to_class": "building" if new else CLASS_NAMES[BARE_LAND],
                "geometry": geometry,
            }
        )
    return records
