"""The scene model of one seed: parcels, water, roads and buildings.

Everything is a function of absolute pixel coordinates (:mod:`geochange.synthetic.noise`), so a
block's layout does not depend on the block it is computed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from geochange.classes import BARE_LAND, BUILDING, CROPLAND, OTHERS, TREE
from geochange.synthetic.noise import _fbm, _is_grid, _Keys, _uniform, _value_noise

# Geometry of the layout, in pixels. CELL is the building-cell side; blocks must be multiples.
CELL = 256
_CELL_MARGIN = 6  # keeps buildings off the minor roads that run along every other cell edge
_PARCEL_SPACING = 320.0
_MAJOR_ROAD_SPACING = 1500
_MINOR_ROAD_SPACING = 2 * CELL
_RIVER_SPACING = 9000
_URBAN_SCALE = 2500.0

# Building states.
_NONE, _EXISTING, _DEMOLISHED, _NEW = 0, 1, 2, 3

# Roof colours (R, G, B, NIR).
_ROOF_PALETTE = np.array(
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
            # Draws of the realism distractors (crop rotation, construction sites).
            "rotation": _uniform(k(10), ly, lx),
            "site": _uniform(k(11), ly, lx),
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

    def water(self, y: Any, x: Any, urban: Any = None, level: float = 0.0) -> Any:
        """Water mask: meandering rivers and lakes (``urban``: precomputed :meth:`urban`).

        ``level`` raises the water: river banks move out by that many pixels and the lake
        threshold drops by ``0.0015 * level`` (0: the scene's water).
        """
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
            if level:
                half = half + level
            mask |= np.abs(y - centre) < half
        urban = self.urban(y, x) if urban is None else urban
        lake = _fbm(self.k(22), y, x, 1100.0, 2) - 0.35 * (urban - 0.5)
        return mask | (lake > (0.76 - 0.0015 * level if level else 0.76))

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
        s = self._slots(ci0, ci1, cj0, cj1)
        if s is None:
            return _empty_buildings()
        state, attr = self._states(s)
        keep = state != _NONE
        s = {name: v[keep] for name, v in s.items()}
        state, attr = state[keep], {name: v[keep] for name, v in attr.items()}
        if state.size == 0:
            return _empty_buildings()
        sid = (s["ci"], s["cj"], s["slot_index"])
        corners, angle, centre = self._footprints(s, attr, sid)
        ok = self._clear_of_roads_and_water(corners, centre)
        roof, height = self._roofs(s["size"], sid)
        return {
            "corners": corners[ok],
            "state": state[ok].astype(np.uint8),
            "roof": roof[ok].astype(np.float32),
            "height": height[ok].astype(np.float32),
            "ridge": (_uniform(self.k(52), *sid) < 0.5)[ok],
            "angle": angle[ok].astype(np.float64),
            "id": ((s["ci"] * 65536 + s["cj"]) * 64 + s["slot_index"])[ok].astype(np.int64),
            "cell": np.stack([s["ci"], s["cj"]], -1)[ok],
            "from_class": np.where(state == _NEW, attr["class0"], BUILDING)[ok].astype(np.uint8),
        }

    def _slots(self, ci0: int, ci1: int, cj0: int, cj1: int) -> dict[str, NDArray[Any]] | None:
        """Candidate building slots of the cells: a 4x4, 3x3 or 2x2 grid per cell (or None)."""
        cell_grid = np.meshgrid(np.arange(ci0, ci1), np.arange(cj0, cj1), indexing="ij")
        ci, cj = cell_grid[0].ravel(), cell_grid[1].ravel()
        kind = np.digitize(_uniform(self.k(40), ci, cj), [0.55, 0.85])  # 0: 4x4, 1: 3x3, 2: 2x2
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
            return None
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _states(self, s: dict[str, NDArray[Any]]) -> tuple[NDArray[Any], dict[str, NDArray[Any]]]:
        """State of every slot (none, existing, demolished, new) and its parcel's attributes."""
        k = self.k
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
        return state, attr

    def _footprints(
        self, s: dict[str, NDArray[Any]], attr: dict[str, NDArray[Any]], sid: tuple[Any, ...]
    ) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
        """Rotated-rectangle footprints fitted in their slots: corners, angle and centre (x, y)."""
        k = self.k
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
        return corners, angle, np.stack([cx, cy], -1)

    def _clear_of_roads_and_water(
        self, corners: NDArray[Any], centre: NDArray[Any]
    ) -> NDArray[np.bool_]:
        """Buildings touching no road and no water.

        Tests corners, edge midpoints and centre against roads widened by a margin (corner tests
        alone could miss a thin road).
        """
        probes = np.concatenate(
            [corners, (corners + np.roll(corners, -1, axis=1)) / 2, centre[:, None]], axis=1
        )
        py, px = probes[..., 1].ravel(), probes[..., 0].ravel()
        blocked = self.water(py, px)
        for oy, ox in ((0, 0), (3, 0), (-3, 0), (0, 3), (0, -3)):
            blocked |= self.roads(py + oy, px + ox)
        ok: NDArray[np.bool_] = ~blocked.reshape(len(corners), -1).any(axis=1)
        return ok

    def _roofs(self, slot: NDArray[Any], sid: tuple[Any, ...]) -> tuple[NDArray[Any], NDArray[Any]]:
        """Roof colour (n, 4) and shadow height factor of every building."""
        k = self.k
        tone = _uniform(k(49), *sid)
        roof = _ROOF_PALETTE[np.floor(tone * len(_ROOF_PALETTE)).astype(np.intp)]
        roof = roof * (0.85 + 0.3 * _uniform(k(50), *sid))[:, None]
        height = 3 + (4 + 10 * _uniform(k(51), *sid)) * (slot / 60.0) ** 0.7
        return roof, height


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
