"""Joining the pieces of objects cut by block seams (links from :mod:`geochange._blockwise`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
import shapely.affinity
from affine import Affine

from geochange._blockwise import BlockGrid, components, seam_links
from geochange.vectorize.blocks import _BlockResult, _majority
from geochange.vectorize.geometry import _to_map
from geochange.vectorize.schema import _metric_measures


@dataclass
class _Objects:
    """All objects of the raster after merging: WKB geometries in the CRS and attributes."""

    wkb: npt.NDArray[np.object_]
    bounds: npt.NDArray[np.float64]
    area: npt.NDArray[np.float64]
    perimeter: npt.NDArray[np.float64]
    codes: npt.NDArray[np.int32]
    pixel_count: npt.NDArray[np.int64]
    prob_mean: npt.NDArray[np.float64]
    prob_max: npt.NDArray[np.float64]
    pre_major: npt.NDArray[np.int32]
    post_major: npt.NDArray[np.int32]


def _finalize_pieces(
    geometry: npt.NDArray[np.object_], transform: Affine, crs: Any
) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.float64], npt.NDArray[np.float64], Any]:
    """Map pixel-coordinate geometries to the CRS; return WKB, bounds, area, perimeter."""
    mapped = _to_map(geometry, transform)
    area, perimeter = _metric_measures(mapped, crs)
    return shapely.to_wkb(mapped), shapely.bounds(mapped), area, perimeter


def _empty_pieces() -> dict[str, npt.NDArray[Any]]:
    """Per-piece arrays of a raster without pieces (the dtypes of :class:`_BlockResult`)."""
    return {
        "wkb": np.empty(0, object),
        "on_edge": np.zeros(0, np.bool_),
        "bounds": np.zeros((0, 4)),
        "area": np.zeros(0),
        "perimeter": np.zeros(0),
        "codes": np.zeros(0, np.int32),
        "pixel_count": np.zeros(0, np.int64),
        "prob_count": np.zeros(0, np.int64),
        "prob_sum": np.zeros(0),
        "prob_max": np.zeros(0),
        "pre_major": np.zeros(0, np.int32),
        "post_major": np.zeros(0, np.int32),
    }


def _gather_pieces(results: list[_BlockResult]) -> dict[str, npt.NDArray[Any]]:
    """Per-piece arrays of all blocks, in global id order (block by block, then local label)."""
    pieces = {
        name: np.concatenate([getattr(r, name) for r in results]) if results else empty
        for name, empty in _empty_pieces().items()
    }
    # Mixed wkb: WKB for interior objects, pixel-coordinate geometries for edge pieces.
    for res in results:  # drop references: the concatenated arrays now own the data
        res.wkb = np.empty(0, object)
    return pieces


def _seam_components(
    results: list[_BlockResult],
    grid: BlockGrid,
    offsets: npt.NDArray[np.int64],
    codes: npt.NDArray[np.int32],
    connectivity: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Object of every piece (pieces with one change code touching across a seam are one).

    Returns:
        The component of every global piece id, and whether the piece belongs to an object
        made of several pieces.
    """
    total = int(offsets[-1])
    strips = {(b.row, b.col): results[b.index].edges.to_global(int(offsets[b.index])) for b in grid}
    sources, targets = seam_links(strips, grid.rows, grid.cols, codes, connectivity)
    merged = np.zeros(total, np.bool_)
    component = np.zeros(total, np.int64)
    if sources.size:
        component = components(total, sources, targets)
        merged = np.bincount(component)[component] > 1
    return component, merged


def _edge_hists(
    results: list[_BlockResult], offsets: npt.NDArray[np.int64], merged: npt.NDArray[np.bool_]
) -> tuple[dict[int, npt.NDArray[np.int64]], dict[int, npt.NDArray[np.int64]]]:
    """Class histograms of merged pieces (pieces of merged objects always touch an edge)."""
    hist_pre: dict[int, npt.NDArray[np.int64]] = {}
    hist_post: dict[int, npt.NDArray[np.int64]] = {}
    for i, res in enumerate(results):
        if res.edge_pre_hist is None or res.edge_post_hist is None:
            continue
        for j, local in enumerate(res.edge_labels):
            gid = int(offsets[i]) + int(local) - 1
            if merged[gid]:
                hist_pre[gid] = res.edge_pre_hist[j]
                hist_post[gid] = res.edge_post_hist[j]
    return hist_pre, hist_post


def _union_groups(
    pieces: dict[str, npt.NDArray[Any]],
    component: npt.NDArray[np.int64],
    merged: npt.NDArray[np.bool_],
    hists: tuple[dict[int, npt.NDArray[np.int64]], dict[int, npt.NDArray[np.int64]]],
    transform: Affine,
    crs: Any,
) -> dict[str, npt.NDArray[Any]]:
    """One object per component of merged pieces, in component order, with summed statistics."""
    member_ids = np.flatnonzero(merged)
    order = member_ids[np.argsort(component[member_ids], kind="stable")]
    group_of = component[order]
    starts = np.flatnonzero(np.r_[True, group_of[1:] != group_of[:-1]])
    ends = np.r_[starts[1:], order.size]
    hist_pre, hist_post = hists
    geometry, codes = pieces["wkb"], pieces["codes"]
    pixel_count, prob_count = pieces["pixel_count"], pieces["prob_count"]
    prob_sum, prob_max = pieces["prob_sum"], pieces["prob_max"]

    n_groups = starts.size
    new_geometry = np.empty(n_groups, object)
    new: dict[str, npt.NDArray[Any]] = {
        "codes": np.empty(n_groups, np.int32),
        "pixel_count": np.empty(n_groups, np.int64),
        "prob_count": np.empty(n_groups, np.int64),
        "prob_sum": np.empty(n_groups, np.float64),
        "prob_max": np.empty(n_groups, np.float64),
        "pre_major": np.full(n_groups, -1, np.int32),
        "post_major": np.full(n_groups, -1, np.int32),
    }
    for g, (s, e) in enumerate(zip(starts, ends, strict=True)):
        members = order[s:e]
        # Exact: every vertex is an integer pixel corner, the grid_size=1 overlay keeps
        # them exactly; simplify(0) drops the collinear vertices left on the seams.
        union = shapely.union_all(geometry[members], grid_size=1.0)
        new_geometry[g] = shapely.simplify(union, 0.0)
        new["codes"][g] = codes[members[0]]
        new["pixel_count"][g] = pixel_count[members].sum()
        new["prob_count"][g] = prob_count[members].sum()
        new["prob_sum"][g] = prob_sum[members].sum()
        new["prob_max"][g] = np.nanmax(prob_max[members]) if new["prob_count"][g] else np.nan
        if hist_pre:
            pre_h = np.sum([hist_pre[int(m)] for m in members], axis=0)
            post_h = np.sum([hist_post[int(m)] for m in members], axis=0)
            new["pre_major"][g] = _majority(pre_h[None, :])[0]
            new["post_major"][g] = _majority(post_h[None, :])[0]
    new["wkb"], new["bounds"], new["area"], new["perimeter"] = _finalize_pieces(
        new_geometry, transform, crs
    )
    return new


def _merge_blocks(
    results: list[_BlockResult],
    grid: BlockGrid,
    connectivity: int,
    transform: Affine,
    crs: Any,
) -> _Objects:
    """Link labels across seams and union the pieces of objects spanning several blocks.

    Objects are ordered as their pieces' global ids (block by block, then local label), with
    the objects of several pieces last, in order of their first piece.
    """
    counts = np.array([r.count for r in results], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])  # global id = offset + local label - 1
    pieces = _gather_pieces(results)
    component, merged = _seam_components(results, grid, offsets, pieces["codes"], connectivity)

    # Edge pieces without a partner across any seam are complete objects: map them now.
    lonely = np.flatnonzero(pieces["on_edge"] & ~merged)
    if lonely.size:
        wkb, pieces["bounds"][lonely], pieces["area"][lonely], pieces["perimeter"][lonely] = (
            _finalize_pieces(pieces["wkb"][lonely], transform, crs)
        )
        pieces["wkb"][lonely] = wkb

    if merged.any():
        keep = ~merged
        hists = _edge_hists(results, offsets, merged)
        new = _union_groups(pieces, component, merged, hists, transform, crs)
        for name, values in new.items():
            pieces[name] = np.concatenate([pieces[name][keep], values])

    prob_count, prob_sum = pieces["prob_count"], pieces["prob_sum"]
    with np.errstate(invalid="ignore", divide="ignore"):
        prob_mean = np.where(prob_count > 0, prob_sum / np.maximum(prob_count, 1), np.nan)
    prob_max = np.where(prob_count > 0, pieces["prob_max"], np.nan)
    return _Objects(
        wkb=pieces["wkb"],
        bounds=pieces["bounds"],
        area=pieces["area"],
        perimeter=pieces["perimeter"],
        codes=pieces["codes"].astype(np.int32),
        pixel_count=pieces["pixel_count"].astype(np.int64),
        prob_mean=prob_mean.astype(np.float64),
        prob_max=prob_max.astype(np.float64),
        pre_major=pieces["pre_major"].astype(np.int32),
        post_major=pieces["post_major"].astype(np.int32),
    )
