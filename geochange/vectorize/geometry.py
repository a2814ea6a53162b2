"""Polygon geometry: pixel-to-map transforms and squaring up building outlines."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import shapely
import shapely.affinity
from affine import Affine

from geochange.vectorize.schema import Regularize


def _orthogonalize_ring(coords: npt.NDArray[np.float64]) -> npt.NDArray[np.float64] | None:
    """Snap a ring (already rotated to its dominant axis) to horizontal/vertical edges."""
    pts = coords[:-1]
    if len(pts) < 4:
        return None
    nxt = np.roll(pts, -1, axis=0)
    delta = nxt - pts
    horizontal = np.abs(delta[:, 0]) >= np.abs(delta[:, 1])
    lengths = np.hypot(delta[:, 0], delta[:, 1])
    # Each edge becomes an axis-parallel line at the length-weighted mean offset; runs of
    # edges with the same orientation merge into one line.
    offsets = np.where(horizontal, (pts[:, 1] + nxt[:, 1]) / 2, (pts[:, 0] + nxt[:, 0]) / 2)
    lines: list[list[float]] = []  # [is_horizontal, weighted offset sum, weight]
    for h, off, w in zip(horizontal, offsets, lengths, strict=True):
        if lines and bool(lines[-1][0]) == bool(h):
            lines[-1][1] += off * w
            lines[-1][2] += w
        else:
            lines.append([float(h), off * w, w])
    if len(lines) > 1 and bool(lines[0][0]) == bool(lines[-1][0]):
        lines[0][1] += lines[-1][1]
        lines[0][2] += lines[-1][2]
        lines.pop()
    if len(lines) < 4 or len(lines) % 2:
        return None
    values = [(bool(h), s / max(w, 1e-12)) for h, s, w in lines]
    out = []
    for i, (h, v) in enumerate(values):
        _, v_next = values[(i + 1) % len(values)]
        out.append((v_next, v) if h else (v, v_next))
    out.append(out[0])
    return np.asarray(out, dtype=np.float64)


def regularize_polygon(
    polygon: shapely.Geometry,
    mode: Regularize = "rectangle",
    *,
    pixel_size: float = 1.0,
    fill_ratio: float = 0.85,
) -> shapely.Geometry:
    """Square up a building outline.

    ``"rectangle"`` replaces the outline with its minimum rotated rectangle when the polygon
    fills at least ``fill_ratio`` of it, and orthogonalizes it otherwise; ``"orthogonal"``
    always orthogonalizes: the outline is rotated to the rectangle's axis, its pixel staircase
    is smoothed (tolerance one pixel), every edge is snapped to the nearer of the two axes, and
    the result is rotated back. Multi-part geometries are regularized part by part. When the
    snapped outline is invalid or changes the area by more than half, the original is kept.

    Args:
        polygon: a polygon or multipolygon in map units.
        mode: ``"rectangle"`` or ``"orthogonal"``.
        pixel_size: pixel size in map units (smoothing tolerance).
        fill_ratio: minimum area / rectangle-area ratio for the rectangle replacement.

    Returns:
        The regularized geometry.
    """
    if isinstance(polygon, shapely.MultiPolygon):
        parts = [
            regularize_polygon(p, mode, pixel_size=pixel_size, fill_ratio=fill_ratio)
            for p in polygon.geoms
        ]
        return shapely.make_valid(shapely.MultiPolygon(parts))
    if polygon.is_empty or polygon.area == 0:
        return polygon
    rectangle = shapely.oriented_envelope(polygon)
    if mode == "rectangle" and polygon.area / rectangle.area >= fill_ratio:
        return rectangle
    corners = np.asarray(rectangle.exterior.coords)
    edges = np.diff(corners[:3], axis=0)
    longest = edges[int(np.argmax(np.hypot(edges[:, 0], edges[:, 1])))]
    angle = math.degrees(math.atan2(longest[1], longest[0]))
    centre = polygon.centroid
    rotated = shapely.affinity.rotate(polygon, -angle, origin=centre)
    smooth = rotated.simplify(pixel_size, preserve_topology=True)
    if not isinstance(smooth, shapely.Polygon):
        return polygon
    shell = _orthogonalize_ring(np.asarray(smooth.exterior.coords))
    if shell is None:
        return rectangle if mode == "rectangle" else polygon
    holes = [
        h
        for h in (_orthogonalize_ring(np.asarray(r.coords)) for r in smooth.interiors)
        if h is not None
    ]
    candidate = shapely.affinity.rotate(shapely.Polygon(shell, holes), angle, origin=centre)
    if not candidate.is_valid or not 0.5 <= candidate.area / polygon.area <= 1.5:
        return rectangle if mode == "rectangle" else polygon
    return candidate


def _to_map(geometry: npt.NDArray[np.object_], transform: Affine) -> npt.NDArray[np.object_]:
    """Map integer pixel-corner coordinates to the raster CRS with its affine transform."""
    a, b, c, d, e, f = tuple(transform)[:6]

    def apply(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        col, row = xy[:, 0], xy[:, 1]
        return np.column_stack([c + col * a + row * b, f + col * d + row * e])

    return shapely.transform(geometry, apply)
