"""Hash-based randomness and noise fields of the synthetic scenes.

Every random number is a function of (seed, channel, integer coordinates), so any block of a
scene can be computed on its own and joins its neighbours without seams.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


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
