"""Array-level rendering of the realism perturbations (:mod:`geochange.synthetic.realism`).

Each helper is a pure function of absolute pixel coordinates, scene-level objects and hash
channels of the seed (channels 200 and above, so they never collide with the base scene's), so
blocks stay seamless and independent of the block size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from geochange.classes import CROPLAND, OTHERS, TREE
from geochange.synthetic.layout import _ROOF_PALETTE
from geochange.synthetic.noise import _fbm, _uniform, _value_noise

# Hash channels of the perturbations.
_CH_CARS, _CH_SITES, _CH_REROOF, _CH_HAZE, _CH_WARP = 200, 210, 220, 230, 240

_CAR_CELL = 24  # pixels; at most one car per cell, always inside it
_CAR_HALF = (3.5, 1.5)  # half-length, half-width in pixels (about 4.2 x 1.8 m at 0.6 m)
_CAR_COLOURS = np.array(
    [(235, 235, 232, 160), (30, 30, 34, 25), (170, 172, 176, 110), (170, 30, 30, 60),
     (40, 60, 140, 50), (200, 200, 195, 140)],
    np.float32,
)  # fmt: skip
_BROWN_FIELD = np.array([152, 124, 88, 108], np.float32)
_LEAF_OFF = np.array([104, 94, 80, 118], np.float32)
_DRY_LAWN = np.array([150, 140, 98, 118], np.float32)
_PIT = np.float32(0.62)  # excavation darkening
_STACK = np.array([214, 208, 196, 165], np.float32)  # material stacks, sheds
_AIRLIGHT = np.float32(215.0)


def phenology(
    base: NDArray[np.float32], offset0: NDArray[np.float32], weights: NDArray[np.float32],
    tone: NDArray[np.float32], strength: float,
) -> None:  # fmt: skip
    """Post-date seasonal colours in the per-(parcel, class) tables, in place."""
    s = np.float32(strength) * (np.float32(0.75) + np.float32(0.25) * tone)[:, None]
    for cls, target in ((CROPLAND, _BROWN_FIELD), (TREE, _LEAF_OFF), (OTHERS, _DRY_LAWN)):
        base[:, cls] = base[:, cls] * (1 - s) + target * s
    # Leaf-off crowns: less contrast between crowns and the ground between them.
    weights[4, :, TREE] *= np.float32(1 - 0.6 * strength)
    offset0[:, TREE] += np.float32(0.3 * strength)


def crop_rotation(variant: NDArray[np.intp], draw: NDArray[np.float32], share: float) -> Any:
    """Crop variant of the post date: another crop on a ``share`` of the parcels."""
    return np.where(draw < share, (variant + 2) % 4, variant)


def cars(
    layout: Any, y: NDArray[np.float64], x: NDArray[np.float64], road: NDArray[np.bool_],
    date: int, density: float,
) -> tuple[NDArray[np.bool_], NDArray[np.float32]]:  # fmt: skip
    """Car pixels on roads and their colours ``(bands=4, n)`` on a separable grid."""
    k = layout.k
    L = _CAR_CELL
    gy, gx = np.floor(y[:, 0] / L).astype(np.int64), np.floor(x[0] / L).astype(np.int64)
    ci = np.arange(gy.min(), gy.max() + 1)[:, None]
    cj = np.arange(gx.min(), gx.max() + 1)[None, :]
    ch = _CH_CARS + 5 * date
    present = _uniform(k(ch), ci, cj) < density
    margin = _CAR_HALF[0] + 1
    yc = ci * L + margin + (L - 2 * margin) * _uniform(k(ch + 1), ci, cj).astype(np.float64)
    xc = cj * L + margin + (L - 2 * margin) * _uniform(k(ch + 2), ci, cj).astype(np.float64)
    if np.any(present):
        present &= layout.roads(yc, xc)
    along_x = _uniform(k(ch + 3), ci, cj) < 0.5
    hy = np.where(along_x, _CAR_HALF[1], _CAR_HALF[0])
    hx = np.where(along_x, _CAR_HALF[0], _CAR_HALF[1])
    ri, rj = (gy - ci[0, 0])[:, None], (gx - cj[0, 0])[None, :]
    inside = (
        present[ri, rj]
        & (np.abs(y - yc[ri, rj]) < hy[ri, rj])
        & (np.abs(x - xc[ri, rj]) < hx[ri, rj])
        & road
    )
    tone = _uniform(k(ch + 4), ci, cj)
    pick = np.minimum((tone * len(_CAR_COLOURS)).astype(np.intp), len(_CAR_COLOURS) - 1)
    colour = _CAR_COLOURS[pick[ri, rj][inside]].T
    return inside, colour


def construction(
    layout: Any, y: NDArray[np.float64], x: NDArray[np.float64], site: NDArray[np.bool_],
    colour: NDArray[np.float32],
) -> None:  # fmt: skip
    """Construction sites on the ``site`` pixels (pits and material stacks), in place."""
    if not np.any(site):
        return
    k = layout.k
    pit = _fbm(k(_CH_SITES), y, x, 40.0, 2) > 0.58
    L = 14
    gy, gx = np.floor(y / L), np.floor(x / L)
    u = _uniform(k(_CH_SITES + 1), gy, gx)
    cy = gy * L + 4 + (L - 8) * _uniform(k(_CH_SITES + 2), gy, gx)
    cx = gx * L + 4 + (L - 8) * _uniform(k(_CH_SITES + 3), gy, gx)
    stack = (u < 0.35) & (np.abs(y - cy) < 2.5) & (np.abs(x - cx) < 3.5)
    dark = site & pit & ~stack
    colour[:, dark] *= _PIT
    bright = site & stack
    colour[:, bright] = _STACK[: colour.shape[0], None]


def reroof(
    layout: Any, roof: NDArray[np.float32], ids: NDArray[np.int64], existing: NDArray[np.bool_],
    share: float,
) -> NDArray[np.float32]:  # fmt: skip
    """Post-date roof colours: a ``share`` of standing buildings get a clearly different one."""
    k = layout.k
    lo, hi = ids & 0xFFFFFF, ids >> 24
    chosen = existing & (_uniform(k(_CH_REROOF), lo, hi) < share)
    if not np.any(chosen):
        return roof
    # One of the three palette colours farthest from the old roof, so the change is visible.
    distance = np.linalg.norm(roof[chosen, None, :3] - _ROOF_PALETTE[None, :, :3], axis=-1)
    far = np.argsort(-distance, axis=1)[:, :3]
    pick = np.minimum((_uniform(k(_CH_REROOF + 1), lo, hi)[chosen] * 3).astype(np.intp), 2)
    new = _ROOF_PALETTE[far[np.arange(len(far)), pick]]
    out = roof.copy()
    out[chosen] = new * (0.9 + 0.2 * _uniform(k(_CH_REROOF + 2), lo, hi)[chosen])[:, None]
    return out


def warp_field(
    layout: Any, rows: NDArray[np.int64], cols: NDArray[np.int64], warp: float, scale: float
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Smoothly varying extra shift (rows, cols) in ``[-warp, warp]`` pixels at output pixels."""
    k = layout.k
    yy, xx = rows.astype(np.float64) + 0.5, cols.astype(np.float64) + 0.5
    dy = np.float32(warp) * (2 * _value_noise(k(_CH_WARP), yy, xx, scale) - 1)
    dx = np.float32(warp) * (2 * _value_noise(k(_CH_WARP + 1), yy, xx, scale) - 1)
    return dy.astype(np.float32), dx.astype(np.float32)


def resample(
    colour: NDArray[np.float32], dy: NDArray[np.float32], dx: NDArray[np.float32], halo: int
) -> NDArray[np.float32]:
    """Bilinear samples of ``colour`` (bands, h + 2 halo, w + 2 halo) at pixel + (dy, dx).

    The integer and fractional parts of the displacement come from ``dy``/``dx`` alone, so
    the weights (and the result) are the same whatever block the pixel is computed in.
    """
    h, w = dy.shape
    iy, ix = np.floor(dy), np.floor(dx)
    fy, fx = dy - iy, dx - ix
    r0 = np.arange(h)[:, None] + halo + iy.astype(np.intp)
    c0 = np.arange(w)[None, :] + halo + ix.astype(np.intp)
    out = np.empty((colour.shape[0], h, w), np.float32)
    one = np.float32(1)
    for band in range(colour.shape[0]):
        c = colour[band]
        top = c[r0, c0] * (one - fx) + c[r0, c0 + 1] * fx
        bottom = c[r0 + 1, c0] * (one - fx) + c[r0 + 1, c0 + 1] * fx
        out[band] = top * (one - fy) + bottom * fy
    return out


def radiometry(
    v: NDArray[np.float32], params: dict[str, NDArray[Any]], date: int, band: int,
    haze: NDArray[np.float32],
) -> NDArray[np.float32]:  # fmt: skip
    """Per-date, per-band gamma, gain and offset, then haze towards the airlight."""
    v = np.clip(v, 0, 255) / np.float32(255)
    v = np.float32(255) * v ** params["gamma"][date, band]
    v = v * params["gain"][date, band] + params["offset"][date, band]
    t = params["haze"][date] * haze
    return (v * (1 - t) + _AIRLIGHT * t).astype(np.float32)


def haze_field(layout: Any, y: Any, x: Any, date: int) -> NDArray[np.float32]:
    """Smooth haze fraction in [0, 1] of a date (multiplied by the date's haze strength)."""
    field = _value_noise(layout.k(_CH_HAZE + date), y, x, 1800.0)
    return np.asarray(field, np.float32)
