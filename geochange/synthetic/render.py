"""Rendering of one block of a synthetic scene: the class maps and the images of both dates.

A block is rendered with a halo (:data:`_HALO`) so that the optical blur joins neighbouring
blocks without seams; the post image is rendered on a grid shifted by the scene's
misregistration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio.features
import shapely
from numpy.typing import NDArray
from rasterio.transform import Affine

from geochange.classes import BARE_LAND, BUILDING, CROPLAND, OTHERS, ROAD, TREE, WATER
from geochange.synthetic import effects
from geochange.synthetic.layout import (
    _DEMOLISHED,
    _EXISTING,
    _NEW,
    _NONE,
    CELL,
    _Layout,
    _Parcels,
)
from geochange.synthetic.noise import _fbm, _hash, _mix, _smoothstep, _value_noise
from geochange.synthetic.realism import (
    Realism,
    seeded_lean,
    seeded_radiometry,
    seeded_shift,
)

_HALO = 3  # extra pixels rendered around a block so that the optical blur is seamless

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
    #: Water at the post date when the water level changes (None: as at the pre date).
    water_post: NDArray[np.bool_] | None = None

    def classes(self, date: int) -> NDArray[np.uint8]:
        """LsSCD class of every pixel at ``date`` (0 pre, 1 post)."""
        cls = self.parcels.attrs[f"class{date}"][self.parcels.index]
        if date == 1 and self.water_post is not None:
            cls[self.water & ~self.water_post] = BARE_LAND  # receded water leaves mud
            cls[self.water_post] = WATER
        else:
            cls[self.water] = WATER
        cls[self.road] = ROAD
        state = np.concatenate([[_NONE], self.buildings["state"]])[self.building]
        if date == 0:
            cls[(state == _EXISTING) | (state == _DEMOLISHED)] = BUILDING
        else:
            cls[state == _DEMOLISHED] = BARE_LAND
            cls[(state == _EXISTING) | (state == _NEW)] = BUILDING
        return cls

    def water_changed(self) -> NDArray[np.bool_]:
        """Pixels whose water class differs between the dates (a distractor, not the target)."""
        if self.water_post is None:
            return np.zeros(self.water.shape, bool)
        return self.water != self.water_post


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

    def __init__(self, seed: int, bands: int, realism: Realism | None = None) -> None:
        self.layout = _Layout(seed)
        self.bands = bands
        self.realism = realism = realism or Realism()
        #: Shadow vector per pixel of height, per date (rows, cols).
        self.sun = list(self.layout.sun)
        if realism.sun is not None:
            angle, length = math.radians(realism.sun.rotation), realism.sun.length
            dy, dx = self.sun[1]
            self.sun[1] = (
                (dx * math.sin(angle) + dy * math.cos(angle)) * length,
                (dx * math.cos(angle) - dy * math.sin(angle)) * length,
            )
        m = realism.misregistration
        #: Constant misregistration of the post image in pixels (rows, cols).
        self.shift = self.layout.shift if m is None else seeded_shift(seed, m)
        self.warp = 0.0 if m is None else m.warp
        #: Halo of the post grid: the warp samples up to ``warp`` pixels beyond the block.
        self.post_halo = _HALO + (math.ceil(self.warp) + 1 if self.warp > 0 else 0)
        self.lean = None if realism.lean is None else seeded_lean(seed, realism.lean)
        q = realism.radiometry
        self.radiometry = None if q is None else seeded_radiometry(seed, q, bands)

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
        level = 0.0 if self.realism.distractors is None else self.realism.distractors.water_level
        return _GridLayout(
            y=y,
            x=x,
            parcels=lay.parcels(y, x),
            water=lay.water(y, x, urban),
            road=lay.roads(y, x, urban),
            building=building,
            buildings=buildings | {"polygons": polygons, "transform": np.array(transform)},
            water_post=lay.water(y, x, urban, level=level) if level else None,
        )

    def image(
        self, g: _GridLayout, date: int, halo: int, row0: int, col0: int
    ) -> NDArray[np.uint8]:
        """Render the image of ``date`` on grid ``g``; returns (bands, h, w) without halo.

        ``row0``/``col0`` are the block's first output pixel (sensor noise is hashed from the
        output pixel, not from the possibly shifted scene coordinates).
        """
        cls = g.classes(date)
        fields = self._textures(g, date)
        colour = self._land_cover(g, date, cls, fields)
        distractors = self.realism.distractors
        if distractors is not None and distractors.cars > 0:
            car, car_colour = effects.cars(self.layout, g.y, g.x, g.road, date, distractors.cars)
            for band in range(colour.shape[0]):
                colour[band][car] = car_colour[band]
        self._draw_buildings(g, date, colour, fields[0])
        return self._sensor(g, date, colour, halo, row0, col0)

    def _rotated(self, g: _GridLayout, date: int) -> NDArray[np.bool_] | None:
        """Per parcel: sown with another crop at the post date (None: no crop rotation)."""
        d = self.realism.distractors
        if date == 0 or d is None or d.crop_rotation <= 0:
            return None
        rotated: NDArray[np.bool_] = g.parcels.attrs["rotation"] < d.crop_rotation
        return rotated

    def _textures(self, g: _GridLayout, date: int = 0) -> list[Any]:
        """Texture fields (functions of absolute coordinates), centred on 0, then crop furrows."""
        k = self.layout.k
        y, x = g.y, g.x
        attrs = g.parcels.attrs
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
        rotated = self._rotated(g, date)
        if rotated is not None:
            theta = np.where(rotated, theta + np.float32(math.pi / 2), theta).astype(np.float32)
        freq_x = (np.cos(theta) * (2 * np.pi) / period).astype(np.float32)
        freq_y = (np.sin(theta) * (2 * np.pi) / period).astype(np.float32)
        pidx = g.parcels.index
        fields.append(
            np.sin(freq_x[pidx] * x.astype(np.float32) + freq_y[pidx] * y.astype(np.float32))
        )
        return fields

    def _class_tables(
        self, g: _GridLayout, date: int, n_fields: int
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        """Per (parcel, class) tables: base colour, texture offset and texture field weights."""
        attrs = g.parcels.attrs
        n_parcels = attrs["tone"].size
        base = np.zeros((n_parcels, 8, 4), np.float32)
        offset0 = np.ones((n_parcels, 8), np.float32)
        weights = np.zeros((n_fields, n_parcels, 8), np.float32)
        tone = attrs["tone"]
        variant = np.minimum((attrs["variant"] * 4).astype(np.intp), 3)
        rotated = self._rotated(g, date)
        if rotated is not None:
            variant = np.where(rotated, (variant + 2) % 4, variant)
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
        if date == 1 and self.realism.phenology is not None:
            effects.phenology(base, offset0, weights, tone, self.realism.phenology.strength)
        return base, offset0, weights

    def _land_cover(
        self, g: _GridLayout, date: int, cls: NDArray[np.uint8], fields: list[Any]
    ) -> NDArray[np.float32]:
        """Textured colour of the ground, (base bands, h, w) float32, before buildings."""
        nbase = 4 if self.bands > 3 else 3
        attrs = g.parcels.attrs
        tone = attrs["tone"]
        pidx = g.parcels.index
        base, offset0, weights = self._class_tables(g, date, len(fields))
        key = pidx * 8 + cls
        texture = offset0.ravel()[key]
        for weight, values in zip(weights, fields, strict=True):
            texture += weight.ravel()[key] * values
        colour = np.empty((nbase, *cls.shape), dtype=np.float32)
        flat_base = base.reshape(-1, 4)
        for band in range(nbase):
            np.multiply(flat_base[:, band][key], texture, out=colour[band])
        # Others: lawn mixed with paving.
        others = cls == OTHERS
        if np.any(others):
            mix = _smoothstep(
                0.35, 0.65, (fields[3][others] + np.float32(0.5)) * 0.7 + 0.3 * tone[pidx[others]]
            )
            # Per-parcel lawn colour (seasonal when phenology is on).
            lawn = base[pidx[others], OTHERS]
            for band in range(nbase):
                colour[band][others] += (_PAVING_RGBN[band] - lawn[:, band]) * mix * texture[others]
        d = self.realism.distractors
        if date == 1 and d is not None and d.construction > 0:
            site = (cls == BARE_LAND) & (attrs["site"] < d.construction)[pidx]
            effects.construction(self.layout, g.y, g.x, site, colour)
        return colour

    def _draw_buildings(
        self, g: _GridLayout, date: int, colour: NDArray[np.float32], fine: Any
    ) -> None:
        """Roof colour, gabled roofs lit on one side, shadows cast on the ground (in place).

        With a lean, roofs are drawn displaced from the footprints and the facades between
        footprint and roof are drawn darker; shadows are still cast from the footprints.
        """
        y, x = g.y, g.x
        nbase, shape = colour.shape[0], colour.shape[1:]
        b = g.buildings
        visible = (b["state"] == _EXISTING) | (b["state"] == (_DEMOLISHED if date == 0 else _NEW))
        transform = Affine(*b["transform"].ravel()[:6])
        roof_colour = b["roof"]
        d = self.realism.distractors
        if date == 1 and d is not None and d.reroof > 0:
            roof_colour = effects.reroof(
                self.layout, roof_colour, b["id"], b["state"] == _EXISTING, d.reroof
            )
        offset, idx, wall_idx = self.roofs(g, date)
        wall = (wall_idx > 0) & (idx == 0)
        if np.any(wall):
            for band in range(nbase):
                colour[band][wall] = roof_colour[wall_idx[wall] - 1, band] * np.float32(0.55)
        on_roof = (idx > 0) & np.concatenate([[False], visible])[idx]
        if np.any(on_roof):
            j = idx[on_roof] - 1
            cyx = b["corners"].mean(axis=1) + offset
            yy = np.broadcast_to(y, shape)[on_roof]
            xx = np.broadcast_to(x, shape)[on_roof]
            across = -(xx - cyx[j, 0]) * np.sin(b["angle"][j]) + (yy - cyx[j, 1]) * np.cos(
                b["angle"][j]
            )
            lit = np.where(b["ridge"][j], np.where(across > 0, 1.12, 0.86), 1.0).astype(np.float32)
            roof_noise = 1 + 0.06 * fine[on_roof]
            for band in range(nbase):
                colour[band][on_roof] = roof_colour[j, band] * lit * roof_noise
        if np.any(visible):
            sy, sx = self.sun[date]
            corners = b["corners"][visible]
            h = b["height"][visible][:, None, None]
            cast = corners + h * np.array([sx, sy])
            hulls = shapely.convex_hull(
                shapely.multipoints(np.concatenate([corners, cast], axis=1))
            )
            shadow = _rasterize_ids(hulls, np.ones(len(hulls), np.int32), shape, transform) > 0
            shadow &= ~on_roof & ~wall
            colour[:, shadow] *= np.array([0.42, 0.45, 0.55, 0.5], np.float32)[:nbase, None]

    def roofs(
        self, g: _GridLayout, date: int
    ) -> tuple[NDArray[np.float64], NDArray[np.int32], NDArray[np.int32]]:
        """Roof displacement ``(x, y)`` per building, roof and facade id rasters (id + 1).

        Without a lean the roofs are the footprints and there are no facades.
        """
        b = g.buildings
        n = len(b["state"])
        if self.lean is None:
            return np.zeros((n, 2)), g.building, np.zeros(g.building.shape, np.int32)
        visible = (b["state"] == _EXISTING) | (b["state"] == (_DEMOLISHED if date == 0 else _NEW))
        shape = g.building.shape
        transform = Affine(*b["transform"].ravel()[:6])
        ly, lx = self.lean[date]
        offset = b["height"][:, None].astype(np.float64) * np.array([lx, ly])
        moved = b["corners"] + offset[:, None, :]
        ids = np.arange(1, n + 1)[visible]
        idx = _rasterize_ids(shapely.polygons(moved)[visible], ids, shape, transform)
        facades = shapely.convex_hull(
            shapely.multipoints(np.concatenate([b["corners"], moved], axis=1))
        )
        wall_idx = _rasterize_ids(facades[visible], ids, shape, transform)
        return offset, idx, wall_idx

    def _sensor(
        self,
        g: _GridLayout,
        date: int,
        colour: NDArray[np.float32],
        halo: int,
        row0: int,
        col0: int,
    ) -> NDArray[np.uint8]:
        """Optical blur (seamless thanks to the halo), date-wide radiometry, haze, sensor noise.

        With a misregistration warp the blurred post colour is resampled at the warped
        positions first; with realism radiometry each band then gets its date's gamma, gain,
        offset and haze. Returns the uint8 image of all bands without the halo.
        """
        import scipy.ndimage

        lay, k = self.layout, self.layout.k
        shape = colour.shape[1:]
        scipy.ndimage.gaussian_filter(colour, sigma=(0, 0.6, 0.6), output=colour, truncate=3.0)
        haze = _value_noise(k(64 + date), g.y, g.x, 2500.0)
        gain, offset = lay.gain[date].astype(np.float32), lay.offset[date].astype(np.float32)
        sl = (slice(halo, shape[0] - halo), slice(halo, shape[1] - halo))
        out = np.empty((self.bands, shape[0] - 2 * halo, shape[1] - 2 * halo), np.uint8)
        rows = np.arange(row0, row0 + shape[0] - 2 * halo)[:, None]
        cols = np.arange(col0, col0 + shape[1] - 2 * halo)[None, :]
        inner = colour[:, sl[0], sl[1]]
        m = self.realism.misregistration
        if date == 1 and m is not None and self.warp > 0:
            dy, dx = effects.warp_field(lay, rows, cols, self.warp, m.warp_scale)
            inner = effects.resample(colour, dy, dx, halo)
        if self.radiometry is not None:
            realism_haze = effects.haze_field(lay, g.y[sl[0]], g.x[:, sl[1]], date)
        for band in range(self.bands):
            if band < 4:
                v = inner[band]
            else:
                w = (band - 3) / max(self.bands - 3, 1)
                v = (1 - w) * inner[0] + w * inner[3]
            src = min(band, 3)
            v = v * gain[src] + offset[src] + lay.haze[date] * (haze[sl] - 0.3)
            if self.radiometry is not None:
                v = effects.radiometry(v, self.radiometry, date, band, realism_haze)
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
