"""Whole-scene evaluation of change maps, per pixel and per object, with a visual report.

A change map is judged twice:

* **per pixel** over the whole scene, block by block (bounded memory at any raster size), with
  :class:`geochange.metrics.BinaryChangeMetrics` (IoU^c, F1, precision, recall, OA, kappa) and,
  when both sides have semantic rasters, :class:`geochange.metrics.SemanticChangeMetrics`
  (mIoU, SeK, Fscd, per-class IoU) plus the from→to transition confusion matrix;
* **per object**: predicted and reference change polygons are matched one to one when their
  IoU reaches a threshold (greedy by IoU, or Hungarian = most matches, then highest total IoU,
  with :func:`scipy.optimize.linear_sum_assignment`), giving object precision / recall / F1
  overall and per change type, and the numbers of split and merged objects. Candidate pairs
  come from a :class:`shapely.STRtree`, so hundreds of thousands of objects are fine.

The result is an :class:`EvaluationReport` that writes JSON, Markdown, a GeoPackage of both
polygon sets with their match status (open the false alarms in QGIS with
``status = 'FP'``) and a matplotlib figure set.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.errors
import rasterio.features
import rasterio.transform
import rasterio.windows
import shapely
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from geochange._blockwise import BlockGrid
from geochange.errors import ConfigurationError, DataError, OutputError
from geochange.io import (
    CHANGE_FILE,
    CLASS_NAMES_TAG,
    DEFAULT_GDAL_CACHE_BYTES,
    MASK_IGNORE,
    PARQUET_SUFFIXES,
    SEMANTIC_POST_FILE,
    SEMANTIC_PRE_FILE,
    VECTOR_EXTENSIONS,
    ChangeProducts,
    atomic_output,
    check_change_mask,
    check_writable_dir,
    gdal_cache,
    grid_mismatch,
    is_vector_path,
    open_raster,
    read_errors,
    write_polygon_layer,
)

if TYPE_CHECKING:
    import geopandas as gpd
    from matplotlib.figure import Figure

__all__ = [
    "PREDICTION_FILES",
    "EvaluationReport",
    "MatchResult",
    "evaluate_scene",
    "match_objects",
]

MatchMethod = Literal["hungarian", "greedy"]

#: File names looked up in a prediction directory (as written by ``geochange predict``).
PREDICTION_FILES: dict[str, str] = {
    "change": CHANGE_FILE,
    "semantic_pre": SEMANTIC_PRE_FILE,
    "semantic_post": SEMANTIC_POST_FILE,
}
#: Status values written to the ``status`` attribute of the output polygons.
STATUS_TRUE_POSITIVE = "TP"
STATUS_FALSE_POSITIVE = "FP"
STATUS_MISS = "FN"

_VECTOR_SUFFIXES = set(VECTOR_EXTENSIONS)
_IGNORE = MASK_IGNORE
_GDAL_CACHE_BYTES = DEFAULT_GDAL_CACHE_BYTES
_UNTYPED = "(untyped)"
# Overview colours (RGBA): true positive, false positive, miss.
_COLOURS = {
    "TP": (0.10, 0.62, 0.20, 1.0),
    "FP": (0.89, 0.10, 0.11, 1.0),
    "FN": (0.13, 0.40, 0.90, 1.0),
}


# --------------------------------------------------------------------------------------------
# Object matching
# --------------------------------------------------------------------------------------------


@dataclass
class MatchResult:
    """One-to-one matching of predicted and reference objects.

    Indices refer to the positions in the geometry arrays given to :func:`match_objects`; ``-1``
    means unmatched.

    Attributes:
        pred_match: matched reference index per prediction.
        pred_iou: IoU with the matched reference (0 when unmatched).
        pred_best_iou: best IoU with any reference.
        ref_match: matched prediction index per reference.
        ref_iou: IoU with the matched prediction.
        ref_best_iou: best IoU with any prediction.
        ref_split: reference objects covered by two or more predictions that each lie mostly
            (``cover`` of their area) inside it.
        pred_split_piece: predictions that are such a piece of a split reference.
        pred_merge: predictions that mostly cover two or more reference objects.
        ref_merged: references mostly covered by a merging prediction.
    """

    pred_match: npt.NDArray[np.int64]
    pred_iou: npt.NDArray[np.float64]
    pred_best_iou: npt.NDArray[np.float64]
    ref_match: npt.NDArray[np.int64]
    ref_iou: npt.NDArray[np.float64]
    ref_best_iou: npt.NDArray[np.float64]
    ref_split: npt.NDArray[np.bool_]
    pred_split_piece: npt.NDArray[np.bool_]
    pred_merge: npt.NDArray[np.bool_]
    ref_merged: npt.NDArray[np.bool_]

    @property
    def matches(self) -> int:
        """Number of matched pairs."""
        return int((self.pred_match >= 0).sum())


def _hungarian(
    pi: npt.NDArray[np.int64], rj: npt.NDArray[np.int64], iou: npt.NDArray[np.float64]
) -> list[tuple[int, int]]:
    """Maximum-cardinality matching, ties broken by total IoU, solved per connected component."""
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if pi.size == 0:
        return []
    pred_nodes, pred_local = np.unique(pi, return_inverse=True)
    ref_nodes, ref_local = np.unique(rj, return_inverse=True)
    n_pred = pred_nodes.size
    n = n_pred + ref_nodes.size
    graph = coo_matrix((np.ones(pi.size), (pred_local, n_pred + ref_local)), shape=(n, n)).tocsr()
    _, component = connected_components(graph, directed=False)
    edge_component = component[pred_local]
    pairs: list[tuple[int, int]] = []
    order = np.argsort(edge_component, kind="stable")
    bounds = np.flatnonzero(np.diff(edge_component[order])) + 1
    for edges in np.split(order, bounds):
        if edges.size == 1:  # the common case: an isolated pair
            pairs.append((int(pi[edges[0]]), int(rj[edges[0]])))
            continue
        rows, row_idx = np.unique(pi[edges], return_inverse=True)
        cols, col_idx = np.unique(rj[edges], return_inverse=True)
        # Every match is worth more than any sum of IoUs, so the number of matches comes first.
        bonus = float(min(rows.size, cols.size) + 1)
        weight = np.zeros((rows.size, cols.size))
        weight[row_idx, col_idx] = bonus + iou[edges]
        chosen_rows, chosen_cols = linear_sum_assignment(weight, maximize=True)
        for r, c in zip(chosen_rows, chosen_cols, strict=True):
            if weight[r, c] > 0:
                pairs.append((int(rows[r]), int(cols[c])))
    return pairs


def _greedy(
    pi: npt.NDArray[np.int64], rj: npt.NDArray[np.int64], iou: npt.NDArray[np.float64]
) -> list[tuple[int, int]]:
    """Take pairs by decreasing IoU while both objects are still free."""
    used_pred: set[int] = set()
    used_ref: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for k in np.argsort(-iou, kind="stable"):
        p, r = int(pi[k]), int(rj[k])
        if p not in used_pred and r not in used_ref:
            used_pred.add(p)
            used_ref.add(r)
            pairs.append((p, r))
    return pairs


def match_objects(
    predicted: Sequence[Any] | npt.NDArray[np.object_],
    reference: Sequence[Any] | npt.NDArray[np.object_],
    *,
    iou_threshold: float = 0.5,
    method: MatchMethod = "hungarian",
    cover: float = 0.5,
) -> MatchResult:
    """Match predicted to reference polygons one to one by intersection over union.

    Candidate pairs are the intersecting pairs found with a :class:`shapely.STRtree`; only pairs
    with IoU >= ``iou_threshold`` may be matched. With ``iou_threshold > 0.5`` every object has
    at most one candidate, so both methods agree; below it they can differ.

    Args:
        predicted: predicted polygons (shapely geometries, same CRS as ``reference``).
        reference: reference polygons.
        iou_threshold: minimum IoU of a match, in (0, 1].
        method: ``"hungarian"`` (most matches, then highest total IoU) or ``"greedy"`` (pairs
            by decreasing IoU).
        cover: fraction of an object's area that must lie inside another for split / merge
            counting.

    Returns:
        The :class:`MatchResult`.

    Raises:
        ConfigurationError: threshold or method out of range.
    """
    if not 0 < iou_threshold <= 1:
        raise ConfigurationError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if method not in ("hungarian", "greedy"):
        raise ConfigurationError(f"matching method must be 'hungarian' or 'greedy', not {method!r}")
    if not 0 < cover <= 1:
        raise ConfigurationError(f"cover must be in (0, 1], got {cover}")
    pred = np.asarray(predicted, dtype=object)
    ref = np.asarray(reference, dtype=object)
    n_pred, n_ref = pred.size, ref.size
    pred_area = shapely.area(pred) if n_pred else np.zeros(0)
    ref_area = shapely.area(ref) if n_ref else np.zeros(0)

    if n_pred and n_ref:
        tree = shapely.STRtree(ref)
        pi, rj = tree.query(pred, predicate="intersects")
        inter = shapely.area(shapely.intersection(pred[pi], ref[rj]))
        positive = inter > 0  # polygons sharing only an edge do not overlap
        pi, rj, inter = (
            pi[positive].astype(np.int64),
            rj[positive].astype(np.int64),
            inter[positive],
        )
    else:
        pi = rj = np.zeros(0, np.int64)
        inter = np.zeros(0)
    union = pred_area[pi] + ref_area[rj] - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)

    pred_best = np.zeros(n_pred)
    ref_best = np.zeros(n_ref)
    np.maximum.at(pred_best, pi, iou)
    np.maximum.at(ref_best, rj, iou)

    eligible = iou >= iou_threshold
    solve = _hungarian if method == "hungarian" else _greedy
    pairs = solve(pi[eligible], rj[eligible], iou[eligible])
    pred_match = np.full(n_pred, -1, np.int64)
    ref_match = np.full(n_ref, -1, np.int64)
    pred_iou = np.zeros(n_pred)
    ref_iou = np.zeros(n_ref)
    if pairs:
        p_idx = np.array([p for p, _ in pairs], np.int64)
        r_idx = np.array([r for _, r in pairs], np.int64)
        pred_match[p_idx], ref_match[r_idx] = r_idx, p_idx
        # IoU of each chosen pair, looked up among the eligible candidate pairs.
        e_pi, e_rj, e_iou = pi[eligible], rj[eligible], iou[eligible]
        key = e_pi * max(n_ref, 1) + e_rj
        order = np.argsort(key)
        position = order[np.searchsorted(key, p_idx * max(n_ref, 1) + r_idx, sorter=order)]
        pred_iou[p_idx] = ref_iou[r_idx] = e_iou[position]

    # Split: a reference holding >= 2 predictions that lie mostly inside it; merge: the converse.
    piece = inter >= cover * pred_area[pi]
    part = inter >= cover * ref_area[rj]
    pieces_per_ref = np.bincount(rj[piece], minlength=n_ref)
    parts_per_pred = np.bincount(pi[part], minlength=n_pred)
    ref_split = pieces_per_ref >= 2
    pred_merge = parts_per_pred >= 2
    pred_split_piece = np.zeros(n_pred, bool)
    pred_split_piece[pi[piece & ref_split[rj]]] = True
    ref_merged = np.zeros(n_ref, bool)
    ref_merged[rj[part & pred_merge[pi]]] = True
    return MatchResult(
        pred_match=pred_match,
        pred_iou=pred_iou,
        pred_best_iou=pred_best,
        ref_match=ref_match,
        ref_iou=ref_iou,
        ref_best_iou=ref_best,
        ref_split=ref_split,
        pred_split_piece=pred_split_piece,
        pred_merge=pred_merge,
        ref_merged=ref_merged,
    )


def _prf(tp: int, n_pred: int, n_ref: int) -> dict[str, float]:
    from geochange.metrics import scores_from_counts  # torch: imported on first use

    scores = scores_from_counts(tp, n_pred - tp, n_ref - tp)
    return {"precision": scores["precision"], "recall": scores["recall"], "f1": scores["f1"]}


def _object_scores(
    match: MatchResult, pred_types: list[str], ref_types: list[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Overall and per-change-type object scores from a matching."""
    n_pred, n_ref = match.pred_match.size, match.ref_match.size
    tp = match.matches
    matched_pred = np.flatnonzero(match.pred_match >= 0)
    matched = (matched_pred, match.pred_match[matched_pred])
    overall: dict[str, Any] = {
        "predicted": n_pred,
        "reference": n_ref,
        "true_positives": tp,
        "false_positives": n_pred - tp,
        "misses": n_ref - tp,
        **_prf(tp, n_pred, n_ref),
        "mean_matched_iou": float(match.pred_iou[match.pred_match >= 0].mean()) if tp else 0.0,
        # Share of matched pairs whose change types agree (1.0 when nothing is typed).
        "type_agreement": float(
            np.mean(
                [pred_types[int(p)] == ref_types[int(r)] for p, r in zip(*matched, strict=True)]
            )
        )
        if tp
        else 0.0,
        "split_references": int(match.ref_split.sum()),
        "split_pieces": int(match.pred_split_piece.sum()),
        "merging_predictions": int(match.pred_merge.sum()),
        "merged_references": int(match.ref_merged.sum()),
    }
    by_type: dict[str, dict[str, Any]] = {}
    pred_type_array = np.asarray(pred_types, dtype=object)
    ref_type_array = np.asarray(ref_types, dtype=object)
    for name in sorted(set(pred_types) | set(ref_types)):
        pred_mask = pred_type_array == name
        ref_mask = ref_type_array == name
        n_p, n_r = int(pred_mask.sum()), int(ref_mask.sum())
        # Recall counts found references of this type; precision counts correct predictions
        # of this type; the two agree when predictions and references carry the same types.
        found = int((match.ref_match[ref_mask] >= 0).sum()) if n_r else 0
        found_refs = np.flatnonzero(ref_mask & (match.ref_match >= 0))
        same_type = int((pred_type_array[match.ref_match[found_refs]] == name).sum())
        correct = int((match.pred_match[pred_mask] >= 0).sum()) if n_p else 0
        precision = correct / n_p if n_p else 0.0
        recall = found / n_r if n_r else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        by_type[name] = {
            "predicted": n_p,
            "reference": n_r,
            "true_positives": found,
            "false_positives": n_p - correct,
            "misses": n_r - found,
            "found_with_same_type": same_type,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
    return overall, by_type


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    height: int
    width: int
    transform: Affine
    crs: Any


class _RasterChange:
    """A change raster read block by block as 0/1; ignore / nodata becomes ``nodata_value``.

    Values follow the change-mask convention (:func:`geochange.io.check_change_mask`), checked
    on a sample when opened and in every block.
    """

    def __init__(
        self, path: Path, what: str, nodata_value: int, mask_values: str, option: str
    ) -> None:
        self.path, self.what, self.nodata_value = path, what, nodata_value
        self.dataset = open_raster(path)
        count, dtype = self.dataset.count, self.dataset.dtypes[0]
        if count != 1 or not np.issubdtype(np.dtype(dtype), np.integer):
            self.dataset.close()
            raise DataError(
                f"{what} change raster {str(path)!r} must have one integer band of 0/1 "
                f"(nodata 255); it has {count} band(s) of {dtype}"
            )
        try:
            self.mask = check_change_mask(
                path, mask_values=mask_values, what=f"{what} change raster", option=option
            )
        except BaseException:
            self.dataset.close()
            raise

    def read(self, window: Window) -> npt.NDArray[np.uint8]:
        with read_errors(self.path, window):
            data = self.dataset.read(1, window=window)
        out = self.mask.decode(data)
        if self.nodata_value != _IGNORE:
            out[out == _IGNORE] = self.nodata_value
        return out

    def close(self) -> None:
        self.dataset.close()


class _PolygonChange:
    """Change polygons rasterized onto the evaluation grid block by block (1 inside)."""

    def __init__(self, frame: gpd.GeoDataFrame, grid: _Grid) -> None:
        self.geometry = np.asarray(frame.geometry.values, dtype=object)
        self.tree = shapely.STRtree(self.geometry)
        self.grid = grid

    def read(self, window: Window) -> npt.NDArray[np.uint8]:
        transform = rasterio.windows.transform(window, self.grid.transform)
        shape = (int(window.height), int(window.width))
        box = shapely.box(*rasterio.windows.bounds(window, self.grid.transform))
        hits = self.geometry[self.tree.query(box, predicate="intersects")]
        if hits.size == 0:
            return np.zeros(shape, np.uint8)
        return rasterio.features.rasterize(
            ((g, 1) for g in hits), out_shape=shape, transform=transform, fill=0, dtype="uint8"
        )

    def close(self) -> None:
        """Nothing to release."""


class _ClassRaster:
    """A class-id raster read block by block; nodata and ids >= K become 255."""

    def __init__(self, path: Path, what: str, grid: _Grid, num_classes: int) -> None:
        self.path, self.num_classes = path, num_classes
        self.dataset = open_raster(path)
        _check_grid(self.dataset, grid, f"{what} raster {str(path)!r}")

    def read(self, window: Window) -> npt.NDArray[np.uint8]:
        with read_errors(self.path, window):
            data = self.dataset.read(1, window=window)
        out = np.where(data < self.num_classes, data, _IGNORE).astype(np.uint8)
        if self.dataset.nodata is not None:
            out[data == self.dataset.nodata] = _IGNORE
        return out

    def close(self) -> None:
        self.dataset.close()


def _check_grid(ds: rasterio.DatasetReader, grid: _Grid, what: str) -> None:
    # A raster without a CRS is taken to be on the grid's (hand-made references often lack one).
    mismatch = grid_mismatch(ds, grid, require_crs=False)
    if mismatch == "shape":
        raise DataError(
            f"{what} is not on the evaluation grid: {ds.width}x{ds.height} px with transform "
            f"{tuple(ds.transform)[:6]} vs {grid.width}x{grid.height} px with "
            f"{tuple(grid.transform)[:6]} (reproject it onto the prediction grid first)"
        )
    if ds.count != 1:
        raise DataError(f"{what} has {ds.count} bands; expected one band")
    if mismatch == "crs":
        raise DataError(f"{what} has CRS {ds.crs} but the evaluation grid has {grid.crs}")


def _is_vector(value: Any) -> bool:
    return is_vector_path(value)


def _is_frame(value: Any) -> bool:
    return hasattr(value, "geometry") and hasattr(value, "crs") and hasattr(value, "columns")


def _read_polygons(source: Any, what: str) -> gpd.GeoDataFrame:
    """Read a polygon file (or take a GeoDataFrame), keep areal geometries, repair invalid ones."""
    import geopandas as gpd
    import pyogrio

    if _is_frame(source):
        frame = source.copy()
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"{what} file not found: {str(path)!r}")
        try:
            if path.suffix.lower() in PARQUET_SUFFIXES:
                frame = gpd.read_parquet(path)
            else:
                frame = pyogrio.read_dataframe(path)
        except Exception as err:  # pyogrio/pyarrow raise many types for unreadable files
            raise DataError(f"cannot read {what} file {str(path)!r}: {err}") from err
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    kinds = set(frame.geom_type.unique())
    if not kinds <= {"Polygon", "MultiPolygon"}:
        raise DataError(
            f"{what} must hold polygons; found geometry types {sorted(kinds)}"
            + ("" if _is_frame(source) else f" in {str(source)!r}")
        )
    invalid = ~frame.geometry.is_valid
    if invalid.any():
        # Self-intersections (bow-ties) are common in hand-drawn labels: repair, and say so.
        where = "" if _is_frame(source) else f" in {str(source)!r}"
        warnings.warn(
            f"{int(invalid.sum())} invalid {what} polygon(s){where} repaired with "
            "shapely.make_valid (e.g. self-intersections); check them in a GIS",
            UserWarning,
            stacklevel=3,
        )
        frame.loc[invalid, frame.geometry.name] = shapely.make_valid(
            np.asarray(frame.geometry[invalid].values, dtype=object)
        )
    return frame.reset_index(drop=True)


@dataclass
class _Prediction:
    change: Path | None = None
    semantic_pre: Path | None = None
    semantic_post: Path | None = None
    polygons: Any = None
    class_names: list[str] | None = None


def _resolve_prediction(prediction: Any) -> _Prediction:
    if prediction is None:
        raise ConfigurationError("a prediction is required")
    if _is_frame(prediction) or _is_vector(prediction):
        return _Prediction(polygons=prediction)
    if not isinstance(prediction, str | os.PathLike) and hasattr(prediction, "change"):
        names = getattr(prediction, "class_names", None)

        def path_of(name: str) -> Path | None:
            value = getattr(prediction, name, None)
            return Path(value) if value is not None else None

        result = _Prediction(
            change=path_of("change"),
            semantic_pre=path_of("semantic_pre"),
            semantic_post=path_of("semantic_post"),
            class_names=list(names) if names else None,
        )
        if result.change is None:
            raise DataError("the prediction result has no change raster")
        return result
    if not isinstance(prediction, str | os.PathLike):
        raise ConfigurationError(
            "prediction must be a PredictionResult, a prediction directory, a change raster or "
            f"a polygon file, got {type(prediction).__name__}"
        )
    path = Path(prediction)
    if path.is_dir():
        found = {k: path / name for k, name in PREDICTION_FILES.items() if (path / name).exists()}
        if "change" not in found:
            raise DataError(
                f"prediction directory {str(path)!r} has no {PREDICTION_FILES['change']} "
                "(run `geochange predict` into it, or pass the change raster itself)"
            )
        return _Prediction(
            change=found["change"],
            semantic_pre=found.get("semantic_pre"),
            semantic_post=found.get("semantic_post"),
        )
    if not path.exists():
        raise DataError(f"prediction not found: {str(path)!r}")
    return _Prediction(change=path)


def _overview_factor(grid: _Grid, max_side: int) -> int:
    return max(1, math.ceil(max(grid.height, grid.width) / max_side))


def _reduce_counts(mask: npt.NDArray[np.bool_], factor: int) -> npt.NDArray[np.int32]:
    """Count true pixels in every ``factor`` x ``factor`` cell (block padded with False)."""
    h, w = mask.shape
    hp, wp = math.ceil(h / factor) * factor, math.ceil(w / factor) * factor
    if (hp, wp) != (h, w):
        mask = np.pad(mask, ((0, hp - h), (0, wp - w)))
    return mask.reshape(hp // factor, factor, wp // factor, factor).sum(axis=(1, 3), dtype=np.int32)


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


@dataclass
class EvaluationReport:
    """Pixel and object scores of one scene, with the matched polygons and overview data.

    Attributes:
        pixel: binary (and semantic) pixel scores, or ``None`` without any change raster.
        semantic_iou: per-class IoU (class name -> IoU) with semantic rasters on both sides.
        transition_confusion: ``[T, T]`` pixel counts indexed ``[reference, prediction]`` over
            the transitions in ``transition_labels`` (index 0 = no change).
        transition_labels: ``"no change"`` then ``"from → to"`` for every class pair.
        objects: overall object scores (counts, precision, recall, F1, split/merged counts).
        objects_by_type: the same per change type.
        predictions: predicted polygons with ``status`` (TP/FP), ``match_id``, ``match_iou``,
            ``best_iou`` and ``segmentation`` ("split piece", "merge" or "").
        references: reference polygons with ``status`` (TP/FN) and the same columns.
        overview: ``[3, h, w]`` counts of true-positive, false-positive and missed pixels per
            overview cell, or ``None``.
        overview_extent: ``(left, right, bottom, top)`` map extent of the overview.
        settings: inputs and parameters of the evaluation.
    """

    pixel: dict[str, float] | None = None
    semantic_iou: dict[str, float] | None = None
    transition_confusion: npt.NDArray[np.int64] | None = None
    transition_labels: list[str] = field(default_factory=list)
    objects: dict[str, Any] | None = None
    objects_by_type: dict[str, dict[str, Any]] = field(default_factory=dict)
    predictions: Any = None
    references: Any = None
    overview: npt.NDArray[np.int32] | None = None
    overview_extent: tuple[float, float, float, float] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    # ---- text outputs

    def to_dict(self) -> dict[str, Any]:
        """Scores and settings as a JSON-compatible dict (no geometries)."""
        transitions = None
        if self.transition_confusion is not None:
            transitions = {
                "labels": self.transition_labels,
                "matrix": self.transition_confusion.tolist(),
            }
        return {
            "settings": self.settings,
            "pixel": self.pixel,
            "semantic_iou": self.semantic_iou,
            "transition_confusion": transitions,
            "objects": self.objects,
            "objects_by_type": self.objects_by_type,
        }

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as indented JSON, atomically.

        Args:
            path: output file.

        Returns:
            The path written.
        """
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return Path(path)

    def to_markdown(self) -> str:
        """A Markdown summary: settings, pixel scores, object scores overall and per type."""
        lines = ["# Change detection evaluation", ""]
        s = self.settings
        lines += [
            f"- prediction: `{s.get('prediction')}`",
            f"- reference: `{s.get('reference')}`",
            f"- object matching: {s.get('matching')}, IoU >= {s.get('iou_threshold')}",
        ]
        if s.get("height"):
            lines.append(f"- scene: {s['width']} x {s['height']} px, CRS {s.get('crs')}")
        lines.append("")
        if self.pixel is not None:
            lines += ["## Pixel level", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in self.pixel.items()]
            lines.append("")
        if self.semantic_iou:
            lines += ["### Per-class IoU", "", "| class | IoU |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in self.semantic_iou.items()]
            lines.append("")
        if self.transition_confusion is not None:
            lines += _top_confusions(self.transition_confusion, self.transition_labels)
        if self.objects is not None:
            lines += ["## Object level", "", "| measure | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in self.objects.items()]
            lines.append("")
            if self.objects_by_type:
                keys = ["predicted", "reference", "true_positives", "false_positives", "misses"]
                keys += ["precision", "recall", "f1"]
                lines += ["### Per change type", "", "| change type | " + " | ".join(keys) + " |"]
                lines.append("|---" * (len(keys) + 1) + "|")
                for name, scores in self.objects_by_type.items():
                    row = " | ".join(_fmt(scores[k]) for k in keys)
                    lines.append(f"| {name} | {row} |")
                lines.append("")
        return "\n".join(lines)

    # ---- polygons

    def write_objects(self, path: str | os.PathLike[str]) -> Path:
        """Write both polygon sets with their status to a GeoPackage, atomically.

        Layers ``predictions`` (status TP / FP) and ``references`` (status TP / FN).

        Args:
            path: output ``.gpkg`` path.

        Returns:
            The path written.

        Raises:
            OutputError: if there are no polygons or the path is not a GeoPackage.
        """
        path = Path(path)
        if path.suffix.lower() != ".gpkg":
            raise OutputError(f"object layers are written to a GeoPackage (.gpkg), not {path}")
        if self.predictions is None or self.references is None:
            raise OutputError("this report has no object-level results to write")
        with atomic_output(path) as tmp:
            work = tmp.with_name(f"{tmp.name}.gpkg")
            try:
                for layer, frame in (
                    ("predictions", self.predictions),
                    ("references", self.references),
                ):
                    kinds = set(frame.geom_type.unique()) if len(frame) else set()
                    multi = "MultiPolygon" in kinds
                    write_polygon_layer(frame, work, layer, "GPKG", multi=multi)
                os.replace(work, tmp)
            finally:
                work.unlink(missing_ok=True)
        return path

    # ---- figures

    def figures(self, *, gallery_size: int = 8) -> dict[str, Figure]:
        """Build the figure set (matplotlib, no global pyplot state).

        Args:
            gallery_size: number of worst errors shown in the zoom gallery.

        Returns:
            Dict with ``"metrics"`` (table), ``"transitions"`` (confusion heatmap, semantic
            inputs only), ``"overview"`` (TP / FP / miss map) and ``"gallery"`` (worst errors),
            each present when the data exists.
        """
        figures: dict[str, Figure] = {"metrics": self._metrics_figure()}
        if self.transition_confusion is not None:
            figures["transitions"] = self._transition_figure()
        if self.overview is not None:
            figures["overview"] = self._overview_figure()
        if self.predictions is not None and self.references is not None:
            gallery = self._gallery_figure(gallery_size)
            if gallery is not None:
                figures["gallery"] = gallery
        return figures

    def save_figures(self, directory: str | os.PathLike[str], *, dpi: int = 120) -> list[Path]:
        """Write every figure as ``<name>.png`` into ``directory`` (atomic writes).

        Args:
            directory: output directory (created if needed).
            dpi: resolution.

        Returns:
            The PNG paths written.
        """
        directory = check_writable_dir(directory)
        written = []
        for name, figure in self.figures().items():
            target = directory / f"{name}.png"
            with atomic_output(target) as tmp:
                figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
            written.append(target)
        return written

    def save(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        """Write the whole report: ``report.json``, ``report.md``, ``objects.gpkg``, figures.

        Args:
            directory: report directory (created if needed).

        Returns:
            Output name -> path.
        """
        directory = check_writable_dir(directory)
        written = {"json": self.to_json(directory / "report.json")}
        with atomic_output(directory / "report.md") as tmp:
            tmp.write_text(self.to_markdown() + "\n", encoding="utf-8")
        written["markdown"] = directory / "report.md"
        if self.predictions is not None and self.references is not None:
            written["objects"] = self.write_objects(directory / "objects.gpkg")
        for png in self.save_figures(directory / "figures"):
            written[f"figure_{png.stem}"] = png
        return written

    def _metrics_figure(self) -> Figure:
        from matplotlib.figure import Figure

        rows: list[tuple[str, str, str]] = []
        for key, value in (self.pixel or {}).items():
            rows.append(("pixel", key, _fmt(value)))
        if self.objects is not None:
            for key in ("precision", "recall", "f1", "mean_matched_iou"):
                rows.append(("object", key, _fmt(self.objects[key])))
            for key in ("true_positives", "false_positives", "misses"):
                rows.append(("object", key, _fmt(self.objects[key])))
            for key in ("split_references", "merging_predictions"):
                rows.append(("object", key, _fmt(self.objects[key])))
        for name, scores in self.objects_by_type.items():
            rows.append(
                (
                    "object",
                    f"{name}: P / R / F1",
                    f"{scores['precision']:.3f} / {scores['recall']:.3f} / {scores['f1']:.3f}",
                )
            )
        figure = Figure(figsize=(7, 0.32 * len(rows) + 1.0))
        ax = figure.add_subplot()
        ax.axis("off")
        if rows:
            table = ax.table(
                cellText=[list(r) for r in rows],
                colLabels=["level", "metric", "value"],
                loc="center",
                cellLoc="left",
            )
            table.auto_set_font_size(False)
            table.set_fontsize(9)
            table.scale(1, 1.2)
        ax.set_title("Change detection scores")
        return figure

    def _transition_figure(self) -> Figure:
        from matplotlib.colors import LogNorm
        from matplotlib.figure import Figure

        assert self.transition_confusion is not None
        matrix = self.transition_confusion
        # Show only transitions that occur on either side (K^2 + 1 is mostly empty).
        used = np.flatnonzero((matrix.sum(0) + matrix.sum(1)) > 0)
        sub = matrix[np.ix_(used, used)].astype(np.float64)
        labels = [self.transition_labels[i] for i in used]
        size = max(4.0, 0.35 * len(used) + 2.5)
        figure = Figure(figsize=(size + 1.5, size))
        ax = figure.add_subplot()
        shown = np.where(sub > 0, sub, np.nan)
        vmax = max(float(np.nanmax(shown)) if np.isfinite(shown).any() else 1.0, 1.0)
        image = ax.imshow(shown, cmap="viridis", norm=LogNorm(vmin=1, vmax=vmax))
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("predicted transition")
        ax.set_ylabel("reference transition")
        ax.set_title("From → to transition confusion (pixels)")
        figure.colorbar(image, ax=ax, label="pixels (log)")
        return figure

    def _overview_figure(self) -> Figure:
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch

        assert self.overview is not None
        counts = self.overview
        rgba = np.zeros((*counts.shape[1:], 4))
        rgba[..., :3] = 0.93  # light grey background for "no change anywhere in the cell"
        rgba[..., 3] = 1.0
        any_change = counts.sum(0) > 0
        dominant = counts.argmax(0)
        for index, key in enumerate(("TP", "FP", "FN")):
            rgba[any_change & (dominant == index)] = _COLOURS[key]
        height, width = counts.shape[1:]
        figure = Figure(figsize=(9, max(3.0, 9 * height / max(width, 1)) + 0.8))
        ax = figure.add_subplot()
        ax.imshow(rgba, extent=self.overview_extent, interpolation="nearest")
        ax.set_title(
            f"Pixel outcome per {self.settings.get('overview_factor', 1)}-pixel cell "
            "(dominant class)"
        )
        ax.legend(
            handles=[
                Patch(color=_COLOURS["TP"], label="true positive"),
                Patch(color=_COLOURS["FP"], label="false positive"),
                Patch(color=_COLOURS["FN"], label="miss"),
            ],
            loc="upper right",
            fontsize=8,
        )
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.tick_params(labelsize=7)
        ax.set_xlabel(f"x ({self.settings.get('crs') or 'map units'})")
        ax.set_ylabel("y")
        return figure

    def _gallery_figure(self, size: int) -> Figure | None:
        from matplotlib.figure import Figure

        errors = _worst_errors(self.predictions, self.references, size)
        if not errors:
            return None
        cols = min(4, len(errors))
        rows = math.ceil(len(errors) / cols)
        figure = Figure(figsize=(3.2 * cols, 3.4 * rows))
        pred_geoms = np.asarray(self.predictions.geometry.values, dtype=object)
        ref_geoms = np.asarray(self.references.geometry.values, dtype=object)
        pred_tree = shapely.STRtree(pred_geoms)
        ref_tree = shapely.STRtree(ref_geoms)
        rasters = self.settings.get("rasters", {})
        for k, (title, geometry) in enumerate(errors):
            ax = figure.add_subplot(rows, cols, k + 1)
            minx, miny, maxx, maxy = geometry.bounds
            pad = max(maxx - minx, maxy - miny) * 0.6 + 1e-9
            view = (minx - pad, miny - pad, maxx + pad, maxy + pad)
            background = _zoom_outcome(rasters, view)
            if background is not None:
                ax.imshow(background[0], extent=background[1], interpolation="nearest")
            box = shapely.box(*view)
            for geoms, tree, colour, style in (
                (ref_geoms, ref_tree, "black", "-"),
                (pred_geoms, pred_tree, "yellow", "--"),
            ):
                for g in geoms[tree.query(box, predicate="intersects")]:
                    for ring in _rings(g):
                        x, y = ring.xy
                        ax.plot(x, y, color=colour, linestyle=style, linewidth=1.2)
            ax.set_xlim(view[0], view[2])
            ax.set_ylim(view[1], view[3])
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)
        figure.suptitle(
            "Worst errors (black: reference, yellow dashed: prediction; "
            "green TP / red FP / blue miss pixels)",
            fontsize=9,
        )
        return figure


def _rings(geometry: Any) -> list[Any]:
    parts = getattr(geometry, "geoms", [geometry])
    rings = []
    for part in parts:
        if part.geom_type == "Polygon":
            rings.append(part.exterior)
            rings.extend(part.interiors)
    return rings


def _worst_errors(predictions: Any, references: Any, size: int) -> list[tuple[str, Any]]:
    """Largest false alarms and misses, alternating, then poorest matches."""
    false_alarms = predictions[predictions["status"] == STATUS_FALSE_POSITIVE]
    misses = references[references["status"] == STATUS_MISS]
    fa = false_alarms.assign(error_area=false_alarms.geometry.area).sort_values(
        "error_area", ascending=False
    )
    mi = misses.assign(error_area=misses.geometry.area).sort_values("error_area", ascending=False)
    chosen: list[tuple[str, Any]] = []
    fa_rows = list(fa.itertuples(index=False))
    mi_rows = list(mi.itertuples(index=False))
    for k in range(size):
        for rows, label in ((fa_rows, "false alarm"), (mi_rows, "miss")):
            if k < len(rows) and len(chosen) < size:
                row = rows[k]
                kind = f" ({row.change_type})" if getattr(row, "change_type", None) else ""
                chosen.append((f"{label}{kind}, {row.error_area:.0f} m²", row.geometry))
    if len(chosen) < size:
        tp = predictions[predictions["status"] == STATUS_TRUE_POSITIVE].sort_values("match_iou")
        for row in tp.head(size - len(chosen)).itertuples(index=False):
            chosen.append((f"poor match, IoU {row.match_iou:.2f}", row.geometry))
    return chosen


def _zoom_outcome(
    rasters: dict[str, str], view: tuple[float, float, float, float]
) -> tuple[npt.NDArray[np.float64], tuple[float, float, float, float]] | None:
    """RGBA image of TP / FP / miss pixels in a map window and its extent (l, r, b, t).

    Large windows are read decimated, so memory stays bounded whatever the object size.
    """
    if "prediction" not in rasters or "reference" not in rasters:
        return None
    with (
        gdal_cache(_GDAL_CACHE_BYTES),
        rasterio.open(rasters["prediction"]) as pred_ds,
        rasterio.open(rasters["reference"]) as ref_ds,
    ):
        window = rasterio.windows.from_bounds(*view, transform=pred_ds.transform)
        window = window.round_offsets(op="floor").round_lengths(op="ceil")
        try:
            window = window.intersection(Window(0, 0, pred_ds.width, pred_ds.height))
        except rasterio.errors.WindowError:
            return None
        h, w = int(window.height), int(window.width)
        if h < 1 or w < 1:
            return None
        scale = max(1.0, max(h, w) / 512)
        shape = (max(1, round(h / scale)), max(1, round(w / scale)))
        pred = pred_ds.read(1, window=window, out_shape=shape, resampling=Resampling.nearest)
        ref = ref_ds.read(1, window=window, out_shape=shape, resampling=Resampling.nearest)
        left, bottom, right, top = rasterio.windows.bounds(window, pred_ds.transform)
    rgba = np.zeros((*shape, 4))
    pred_c, ref_c = pred == 1, ref == 1
    rgba[pred_c & ref_c] = _COLOURS["TP"]
    rgba[pred_c & (ref == 0)] = _COLOURS["FP"]
    rgba[~pred_c & ref_c] = _COLOURS["FN"]
    rgba[..., 3] *= 0.55
    return rgba, (left, right, bottom, top)


def _top_confusions(matrix: npt.NDArray[np.int64], labels: list[str], top: int = 10) -> list[str]:
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off, axis=None)[::-1][:top]
    lines = ["### Most frequent transition confusions (pixels)", ""]
    lines += ["| reference | predicted | pixels |", "|---|---|---|"]
    for index in flat:
        r, c = np.unravel_index(index, off.shape)
        if off[r, c] > 0:
            lines.append(f"| {labels[r]} | {labels[c]} | {int(off[r, c])} |")
    lines.append("")
    return lines


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _annotate(frame: Any, match: MatchResult, partner_ids: Any, is_prediction: bool) -> Any:
    """Add status / match columns to a polygon frame (copy)."""
    import pandas as pd

    out = frame.copy()
    if "change_id" not in out.columns:
        out["change_id"] = np.arange(1, len(out) + 1, dtype=np.int64)
    own_match = match.pred_match if is_prediction else match.ref_match
    matched = own_match >= 0
    out["status"] = np.where(
        matched, STATUS_TRUE_POSITIVE, STATUS_FALSE_POSITIVE if is_prediction else STATUS_MISS
    )
    ids = np.asarray(partner_ids, dtype=np.int64)
    out["match_id"] = pd.array([int(ids[m]) if m >= 0 else None for m in own_match], dtype="Int64")
    out["match_iou"] = match.pred_iou if is_prediction else match.ref_iou
    out["best_iou"] = match.pred_best_iou if is_prediction else match.ref_best_iou
    if is_prediction:
        seg = np.where(
            match.pred_merge, "merge", np.where(match.pred_split_piece, "split piece", "")
        )
    else:
        seg = np.where(match.ref_split, "split", np.where(match.ref_merged, "merged", ""))
    out["segmentation"] = seg
    return out


def _types(
    frame: Any, match_partner: npt.NDArray[np.int64], partner_types: list[str] | None
) -> list[str]:
    """Change type per object; untyped objects take their match's type, else "(untyped)"."""
    if "change_type" in frame.columns:
        own = [t if isinstance(t, str) and t else None for t in frame["change_type"]]
    else:
        own = [None] * len(frame)
    result = []
    for k, value in enumerate(own):
        if value is None and partner_types is not None and match_partner[k] >= 0:
            value = partner_types[int(match_partner[k])]
        result.append(value or _UNTYPED)
    return result


def evaluate_scene(
    prediction: ChangeProducts | str | os.PathLike[str] | gpd.GeoDataFrame,
    reference: Any = None,
    *,
    semantic_pre: str | os.PathLike[str] | None = None,
    semantic_post: str | os.PathLike[str] | None = None,
    reference_polygons: Any = None,
    prediction_semantic_pre: str | os.PathLike[str] | None = None,
    prediction_semantic_post: str | os.PathLike[str] | None = None,
    class_names: Sequence[str] | None = None,
    iou_threshold: float = 0.5,
    matching: MatchMethod = "hungarian",
    min_area: float = 0.0,
    change_types: Sequence[str] | None = None,
    objects: bool = True,
    block_size: int = 1024,
    vectorize_block_size: int = 4096,
    overview_size: int = 1500,
    workers: int | None = None,
    progress: bool = False,
    mask_values: str = "auto",
    prediction_mask_values: str = "auto",
) -> EvaluationReport:
    """Evaluate a whole-scene change map against a reference, per pixel and per object.

    Pixel scores are accumulated block by block with :mod:`geochange.metrics`; predicted and
    reference polygons come from :func:`geochange.vectorize.vectorize_changes` (block-wise)
    unless given as polygon files, and are matched one to one with :func:`match_objects`.

    Args:
        prediction: a ``geochange.predict.PredictionResult`` (duck-typed: ``change``,
            ``semantic_pre``, ``semantic_post``, ``class_names``), a prediction directory
            holding ``change.tif`` (and ``semantic_pre.tif`` / ``semantic_post.tif``), a change
            raster (uint8 0/1, nodata 255 counted as no change) or a polygon file /
            GeoDataFrame of predicted changes (rasterized block-wise for the pixel scores).
        reference: reference change raster (0/1, nodata or 255 ignored) or polygon file.
            Change rasters follow the change-mask convention (see ``mask_values``); polygons
            entirely outside the evaluation grid are left out with a warning, and polygons
            none of which overlaps it raise a ``DataError``.
        semantic_pre: reference class raster before (for SCD scores and change types).
        semantic_post: reference class raster after.
        reference_polygons: reference change polygons (file or GeoDataFrame, e.g. the
            synthetic scene's ``changed_buildings`` or a surveyed GeoPackage); a
            ``change_type`` column gives the per-type scores. Default: vectorize the
            reference raster.
        prediction_semantic_pre: predicted class raster before (default: from ``prediction``).
        prediction_semantic_post: predicted class raster after.
        class_names: class names in id order (default: the rasters' ``GEOCHANGE_CLASS_NAMES``).
        iou_threshold: minimum IoU of an object match.
        matching: ``"hungarian"`` or ``"greedy"`` (see :func:`match_objects`).
        min_area: ignore vectorized objects smaller than this (square map units) on both sides.
        change_types: evaluate only objects of these change types (e.g. ``["new building",
            "demolished building"]`` against a building survey); applied to each side that
            has a ``change_type`` column. Pixel scores are unaffected.
        objects: compute the object-level scores (vectorizing as needed).
        block_size: block side of the pixel pass (memory grows with its square).
        vectorize_block_size: block side of the vectorizer.
        overview_size: longest side, in cells, of the overview accumulated during the pass.
        workers: vectorizer processes (default: all cores).
        progress: show progress bars.
        mask_values: how the reference change raster stores change (see
            :func:`geochange.io.check_change_mask`): ``"auto"`` (0/1, 255 = ignore; a 0/255
            raster is refused with a message naming this option), ``"0,1"`` or ``"0,255"``
            (255 = change, e.g. LEVIR-CD labels).
        prediction_mask_values: the same for the predicted change raster (a geochange
            ``change.tif`` is always read as 0/1 with nodata 255 under ``"auto"``).

    Returns:
        The :class:`EvaluationReport`.

    Raises:
        ConfigurationError: inconsistent arguments (no reference, half a semantic pair, ...).
        DataError: unreadable inputs, rasters not on one grid, invalid values (outside the
            change-mask convention, or a 0/255 mask under ``"auto"``), polygons that do not
            overlap the evaluation grid (or, without a grid, each other).
    """
    import geopandas as gpd
    import torch

    from geochange.metrics import BinaryChangeMetrics, SemanticChangeMetrics
    from geochange.vectorize import read_class_names, vectorize_changes

    # ---- validate and resolve every input before the long work
    if block_size < 16:
        raise ConfigurationError(f"block_size must be at least 16 pixels, got {block_size}")
    if not 0 < iou_threshold <= 1:
        raise ConfigurationError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if matching not in ("hungarian", "greedy"):
        raise ConfigurationError(f"matching must be 'hungarian' or 'greedy', not {matching!r}")
    if reference is None and reference_polygons is None:
        raise ConfigurationError("give a reference change raster and/or reference_polygons")
    if (semantic_pre is None) != (semantic_post is None):
        raise ConfigurationError("semantic_pre and semantic_post must be given together")
    pred = _resolve_prediction(prediction)
    if prediction_semantic_pre is not None or prediction_semantic_post is not None:
        if (prediction_semantic_pre is None) != (prediction_semantic_post is None):
            raise ConfigurationError(
                "prediction_semantic_pre and prediction_semantic_post must be given together"
            )
        pred.semantic_pre = Path(prediction_semantic_pre)  # type: ignore[arg-type]
        pred.semantic_post = Path(prediction_semantic_post)  # type: ignore[arg-type]
    ref_raster: Path | None = None
    ref_vector: Any = reference_polygons
    if reference is not None:
        if _is_frame(reference) or _is_vector(reference):
            if ref_vector is not None:
                raise ConfigurationError(
                    "reference is a polygon file and reference_polygons is also given"
                )
            ref_vector = reference
        else:
            ref_raster = Path(reference)

    # Evaluation grid: the prediction raster, else the reference raster.
    grid: _Grid | None = None
    sources: list[Any] = []
    # GDAL's block cache defaults to 5 % of the RAM; every block is read once, so keep it small.
    gdal_env = gdal_cache(_GDAL_CACHE_BYTES)
    gdal_env.__enter__()
    try:
        pred_source: Any = None
        ref_source: Any = None
        if pred.change is not None:
            pred_source = _RasterChange(
                pred.change, "predicted", 0, prediction_mask_values, "prediction_mask_values"
            )
            sources.append(pred_source)
            ds = pred_source.dataset
            grid = _Grid(ds.height, ds.width, ds.transform, ds.crs)
        if ref_raster is not None:
            ref_source = _RasterChange(ref_raster, "reference", _IGNORE, mask_values, "mask_values")
            sources.append(ref_source)
            ds = ref_source.dataset
            if grid is None:
                grid = _Grid(ds.height, ds.width, ds.transform, ds.crs)
            else:
                _check_grid(ds, grid, f"reference change raster {str(ref_raster)!r}")
        names = list(class_names) if class_names is not None else pred.class_names
        for path in (semantic_pre, semantic_post, pred.semantic_pre, pred.semantic_post):
            if names is None and path is not None:
                names = read_class_names(path)
        semantic_ref = semantic_pre is not None
        semantic_pred = pred.semantic_pre is not None and pred.semantic_post is not None
        if (semantic_ref or semantic_pred) and names is None:
            raise ConfigurationError(
                "class names are needed with semantic rasters: none of them carries the "
                f"{CLASS_NAMES_TAG} tag; pass class_names"
            )
        if semantic_ref and grid is None:
            raise ConfigurationError("reference semantic rasters need a change raster on one side")

        # ---- polygons (vectorized block-wise when not given)
        pred_frame = ref_frame = None
        if pred.polygons is not None:
            pred_frame = _read_polygons(pred.polygons, "predicted polygons")
        if ref_vector is not None:
            ref_frame = _read_polygons(ref_vector, "reference polygons")
        if grid is None:
            # Polygons only: no pixel grid; object scores only.
            pass
        else:
            if pred_frame is not None:
                pred_frame = _to_crs(pred_frame, grid.crs, "predicted polygons")
                pred_frame = _inside_grid(pred_frame, grid, "predicted polygons", pred.polygons)
                pred_source = _PolygonChange(pred_frame, grid)
            if ref_frame is not None:
                ref_frame = _to_crs(ref_frame, grid.crs, "reference polygons")
                ref_frame = _inside_grid(ref_frame, grid, "reference polygons", ref_vector)
            if ref_source is None and ref_frame is not None:
                ref_source = _PolygonChange(ref_frame, grid)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        if objects:
            if pred_frame is None:
                assert pred.change is not None
                pred_frame = vectorize_changes(
                    pred.change,
                    semantic_pre=pred.semantic_pre if semantic_pred else None,
                    semantic_post=pred.semantic_post if semantic_pred else None,
                    class_names=names if semantic_pred else None,
                    min_area=min_area,
                    block_size=vectorize_block_size,
                    workers=workers,
                    progress=progress,
                    mask_values=prediction_mask_values,
                )
            if ref_frame is None:
                assert ref_raster is not None
                ref_frame = vectorize_changes(
                    ref_raster,
                    semantic_pre=semantic_pre,
                    semantic_post=semantic_post,
                    class_names=names if semantic_ref else None,
                    min_area=min_area,
                    block_size=vectorize_block_size,
                    workers=workers,
                    progress=progress,
                    mask_values=mask_values,
                )
            if change_types is not None:
                pred_frame = _filter_types(pred_frame, change_types)
                ref_frame = _filter_types(ref_frame, change_types)
            if pred_frame.crs is not None and ref_frame.crs is not None:
                ref_frame = _to_crs(ref_frame, pred_frame.crs, "reference polygons")
            if grid is None:
                _check_polygons_overlap(pred_frame, ref_frame, pred.polygons, ref_vector)

        timings["vectorize"] = time.perf_counter() - started
        report = EvaluationReport()
        report.settings = {
            "prediction": str(
                pred.change or (pred.polygons if not _is_frame(pred.polygons) else "<GeoDataFrame>")
            ),
            "reference": str(
                ref_raster or (ref_vector if not _is_frame(ref_vector) else "<GeoDataFrame>")
            ),
            "reference_polygons": None
            if reference_polygons is None or _is_frame(reference_polygons)
            else str(reference_polygons),
            "iou_threshold": iou_threshold,
            "matching": matching,
            "min_area": min_area,
            "change_types": list(change_types) if change_types is not None else None,
            "class_names": names,
        }

        # ---- pixel pass
        started = time.perf_counter()
        if grid is not None and pred_source is not None and ref_source is not None:
            num_classes = len(names) if names is not None else 0
            semantic = semantic_ref and semantic_pred
            class_sources: list[_ClassRaster] = []
            if semantic:
                assert semantic_pre is not None and semantic_post is not None
                assert pred.semantic_pre is not None and pred.semantic_post is not None
                for path, what in (
                    (Path(semantic_pre), "reference semantic_pre"),
                    (Path(semantic_post), "reference semantic_post"),
                    (pred.semantic_pre, "predicted semantic_pre"),
                    (pred.semantic_post, "predicted semantic_post"),
                ):
                    class_sources.append(_ClassRaster(path, what, grid, num_classes))
                sources.extend(class_sources)
            metric: Any = (
                SemanticChangeMetrics(num_classes, ignore_index=_IGNORE)
                if semantic
                else BinaryChangeMetrics(ignore_index=_IGNORE)
            )
            n_transitions = num_classes * num_classes + 1
            transitions = np.zeros((n_transitions, n_transitions), np.int64) if semantic else None
            factor = _overview_factor(grid, overview_size)
            # Blocks aligned on overview cells, so each cell is counted from one block only.
            step = max(factor, block_size // factor * factor)
            overview = np.zeros(
                (3, math.ceil(grid.height / factor), math.ceil(grid.width / factor)), np.int32
            )
            windows = list(BlockGrid(grid.height, grid.width, step).windows())
            iterator: Any = windows
            if progress:
                from tqdm import tqdm

                iterator = tqdm(windows, desc="evaluate", unit="block")
            for window in iterator:
                p = pred_source.read(window)
                r = ref_source.read(window)
                if semantic:
                    r_pre, r_post, p_pre, p_post = (s.read(window) for s in class_sources)
                    # Predicted classes outside 0..K-1 (nodata) cannot be scored: ignore there.
                    bad = (p_pre == _IGNORE) | (p_post == _IGNORE)
                    if bad.any():
                        r_pre, r_post = r_pre.copy(), r_post.copy()
                        r_pre[bad] = _IGNORE
                        r_post[bad] = _IGNORE
                        p_pre = np.where(bad, 0, p_pre).astype(np.uint8)
                        p_post = np.where(bad, 0, p_post).astype(np.uint8)
                    metric.update(
                        *(torch.from_numpy(a) for a in (p_pre, p_post, p, r_pre, r_post, r))
                    )
                    assert transitions is not None
                    _add_transitions(transitions, p, p_pre, p_post, r, r_pre, r_post, num_classes)
                else:
                    metric.update(torch.from_numpy(p), torch.from_numpy(r))
                pc, rc = p == 1, r == 1
                row0, col0 = int(window.row_off) // factor, int(window.col_off) // factor
                for index, mask in enumerate((pc & rc, pc & (r == 0), ~pc & rc)):
                    cells = _reduce_counts(mask, factor)
                    overview[index, row0 : row0 + cells.shape[0], col0 : col0 + cells.shape[1]] = (
                        cells
                    )
            scores = metric.compute()
            timings["pixel_pass"] = time.perf_counter() - started
            report.pixel = {
                k: float(v) for k, v in scores.items() if k != "semantic_iou" and v.ndim == 0
            }
            if semantic and names is not None:
                report.semantic_iou = {
                    name: float(v) for name, v in zip(names, scores["semantic_iou"], strict=True)
                }
                report.transition_confusion = transitions
                report.transition_labels = ["no change"] + [
                    f"{a} → {b}" for a in names for b in names
                ]
            report.overview = overview
            left, top = grid.transform.c, grid.transform.f
            right = left + grid.transform.a * grid.width
            bottom = top + grid.transform.e * grid.height
            report.overview_extent = (left, right, bottom, top)
            report.settings["overview_factor"] = factor
            report.settings.update(
                height=grid.height, width=grid.width, crs=str(grid.crs) if grid.crs else None
            )
            rasters: dict[str, str] = {}
            if isinstance(pred_source, _RasterChange):
                rasters["prediction"] = str(pred_source.path)
            if isinstance(ref_source, _RasterChange):
                rasters["reference"] = str(ref_source.path)
            report.settings["rasters"] = rasters
    finally:
        for source in sources:
            source.close()
        gdal_env.__exit__(None, None, None)

    # ---- objects
    if objects:
        started = time.perf_counter()
        assert pred_frame is not None and ref_frame is not None
        match = match_objects(
            np.asarray(pred_frame.geometry.values, dtype=object),
            np.asarray(ref_frame.geometry.values, dtype=object),
            iou_threshold=iou_threshold,
            method=matching,
        )
        ref_ids = (
            ref_frame["change_id"].to_numpy()
            if "change_id" in ref_frame.columns
            else np.arange(1, len(ref_frame) + 1)
        )
        pred_ids = (
            pred_frame["change_id"].to_numpy()
            if "change_id" in pred_frame.columns
            else np.arange(1, len(pred_frame) + 1)
        )
        ref_types = _types(ref_frame, match.ref_match, None)
        pred_types = _types(pred_frame, match.pred_match, ref_types)
        report.objects, report.objects_by_type = _object_scores(match, pred_types, ref_types)
        if set(report.objects_by_type) == {_UNTYPED}:
            report.objects_by_type = {}
        report.predictions = gpd.GeoDataFrame(
            _annotate(pred_frame, match, ref_ids, is_prediction=True), crs=pred_frame.crs
        )
        report.references = gpd.GeoDataFrame(
            _annotate(ref_frame, match, pred_ids, is_prediction=False), crs=ref_frame.crs
        )
        timings["matching"] = time.perf_counter() - started
    report.settings["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    return report


def _source_name(source: Any) -> str:
    return "<GeoDataFrame>" if _is_frame(source) else repr(str(source))


def _inside_grid(frame: Any, grid: _Grid, what: str, source: Any) -> Any:
    """Leave out polygons entirely outside the grid (warning); raise if none overlaps it.

    Such polygons cannot be scored: the pixel pass never sees them and the object pass would
    count them as misses (or false alarms). None overlapping means a wrong file or CRS, which
    would otherwise report all-zero scores.
    """
    if len(frame) == 0:
        return frame
    bounds = rasterio.transform.array_bounds(grid.height, grid.width, grid.transform)
    west, south, east, north = bounds[0], bounds[1], bounds[2], bounds[3]
    box = shapely.box(min(west, east), min(south, north), max(west, east), max(south, north))
    hits = shapely.intersects(np.asarray(frame.geometry.values, dtype=object), box)
    if not hits.any():
        extent = tuple(round(float(v), 3) for v in frame.total_bounds)
        raise DataError(
            f"none of the {len(frame)} {what} ({_source_name(source)}) overlaps the evaluation "
            f"grid: polygons span {extent}, the grid {tuple(round(v, 3) for v in box.bounds)} "
            f"in {grid.crs or 'no CRS'} (wrong file, or polygons in another CRS without one "
            "declared?)"
        )
    if not hits.all():
        warnings.warn(
            f"{int((~hits).sum())} of the {len(frame)} {what} ({_source_name(source)}) lie "
            "entirely outside the evaluation grid and are left out",
            UserWarning,
            stacklevel=3,
        )
        frame = frame[hits].reset_index(drop=True)
    return frame


def _check_polygons_overlap(
    pred_frame: Any, ref_frame: Any, pred_source: Any, ref_source: Any
) -> None:
    """Without a raster grid: predicted and reference polygons must share some extent."""
    if len(pred_frame) == 0 or len(ref_frame) == 0:
        return
    pred_box = shapely.box(*pred_frame.total_bounds)
    ref_box = shapely.box(*ref_frame.total_bounds)
    if not pred_box.intersects(ref_box):
        raise DataError(
            f"predicted polygons ({_source_name(pred_source)}, extent "
            f"{tuple(round(float(v), 3) for v in pred_box.bounds)}) and reference polygons "
            f"({_source_name(ref_source)}, extent "
            f"{tuple(round(float(v), 3) for v in ref_box.bounds)}) do not overlap "
            "(wrong file, or polygons in another CRS without one declared?)"
        )


def _filter_types(frame: Any, change_types: Sequence[str]) -> Any:
    """Keep rows whose ``change_type`` is wanted; frames without types are kept whole."""
    if "change_type" not in frame.columns or not frame["change_type"].notna().any():
        return frame
    return frame[frame["change_type"].isin(list(change_types))].reset_index(drop=True)


def _to_crs(frame: Any, crs: Any, what: str) -> Any:
    """Reproject polygons to ``crs`` when both CRSs are known and differ."""
    if crs is None or frame.crs is None:
        return frame
    try:
        same = frame.crs == crs or frame.crs.equals(crs)
    except Exception:
        same = False
    if same:
        return frame
    try:
        return frame.to_crs(crs)
    except Exception as err:
        raise DataError(f"cannot reproject {what} from {frame.crs} to {crs}: {err}") from err


def _add_transitions(
    matrix: npt.NDArray[np.int64],
    p: npt.NDArray[np.uint8],
    p_pre: npt.NDArray[np.uint8],
    p_post: npt.NDArray[np.uint8],
    r: npt.NDArray[np.uint8],
    r_pre: npt.NDArray[np.uint8],
    r_post: npt.NDArray[np.uint8],
    k: int,
) -> None:
    """Accumulate the [reference, prediction] transition confusion (0 = no change)."""
    valid = (r != _IGNORE) & ~((r == 1) & ((r_pre == _IGNORE) | (r_post == _IGNORE)))
    ref_t = np.where(r == 1, 1 + r_pre.astype(np.int64) * k + r_post, 0)[valid]
    pred_t = np.where(p == 1, 1 + p_pre.astype(np.int64) * k + p_post, 0)[valid]
    size = matrix.shape[0]
    matrix += np.bincount(ref_t * size + pred_t, minlength=size * size).reshape(size, size)
