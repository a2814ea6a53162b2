"""Axis-aligned rectangles inside a region: where samplers and band statistics draw windows.

Pure geometry (shapely only), so the datasets, the samplers and the transforms can all use it.
"""

from __future__ import annotations

import itertools
from typing import Any

import shapely

__all__ = ["Box", "region_boxes"]

#: ``(left, bottom, right, top)`` in CRS units.
Box = tuple[float, float, float, float]


def region_boxes(geometry: shapely.Geometry) -> list[Box]:
    """Axis-aligned rectangles to draw windows in, all inside ``geometry``.

    A rectilinear geometry (every edge horizontal or vertical, such as the block regions of
    :func:`spatial_split`) is cut into vertical strips at its vertices' x coordinates; each
    piece of a strip is a rectangle lying inside the geometry, and side-by-side pieces of
    equal height are merged back. Any other polygon yields its bounding box (a window drawn
    there can stick out of the polygon, as with TorchGeo's samplers).

    Args:
        geometry: a polygon, multipolygon or collection (empty geometries give no box).

    Returns:
        ``(left, bottom, right, top)`` boxes, ordered bottom to top, then left to right.
    """
    boxes: list[Box] = []
    for part in shapely.get_parts(geometry):
        if part.is_empty or part.area <= 0:
            continue
        if not isinstance(part, shapely.Polygon):
            boxes.extend(region_boxes(part))
            continue
        if not _rectilinear(part):
            boxes.append(tuple(float(v) for v in part.bounds))  # type: ignore[arg-type]
            continue
        x0, y0, x1, y1 = part.bounds
        tol = 1e-9 * max(x1 - x0, y1 - y0, 1.0)
        xs = sorted({float(x) for ring in _rings(part) for x, _ in ring.coords})
        for a, b in itertools.pairwise(xs):
            if b - a <= tol:
                continue
            piece = part.intersection(shapely.box(a, y0, b, y1))
            for rect in shapely.get_parts(piece):
                if isinstance(rect, shapely.Polygon) and rect.area > tol * (b - a):
                    boxes.append(tuple(float(v) for v in rect.bounds))  # type: ignore[arg-type]
    return _merge_rows(boxes)


def _rings(polygon: shapely.Polygon) -> list[Any]:
    return [polygon.exterior, *polygon.interiors]


def _rectilinear(polygon: shapely.Polygon) -> bool:
    x0, y0, x1, y1 = polygon.bounds
    tol = 1e-9 * max(x1 - x0, y1 - y0, 1.0)
    for ring in _rings(polygon):
        coords = list(ring.coords)
        for (ax, ay), (bx, by) in itertools.pairwise(coords):
            if abs(ax - bx) > tol and abs(ay - by) > tol:
                return False
    return True


def _merge_rows(boxes: list[Box]) -> list[Box]:
    """Merge side-by-side boxes with the same bottom and top (strips cut by stray vertices)."""
    merged: list[Box] = []
    for box in sorted(boxes, key=lambda b: (b[1], b[3], b[0])):
        if merged:
            x0, y0, x1, y1 = merged[-1]
            tol = 1e-9 * max(x1 - x0, y1 - y0, 1.0)
            if abs(box[1] - y0) <= tol and abs(box[3] - y1) <= tol and abs(box[0] - x1) <= tol:
                merged[-1] = (x0, y0, box[2], y1)
                continue
        merged.append(box)
    return merged
