"""Object matching: predicted vs reference polygons one to one by IoU, and the object scores.

Candidate pairs come from a :class:`shapely.STRtree`; the matching is greedy by IoU or
Hungarian (most matches, then highest total IoU). Split and merged objects are counted too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import shapely

from geochange.errors import ConfigurationError

__all__ = [
    "STATUS_COLORS",
    "STATUS_FALSE_POSITIVE",
    "STATUS_LABELS",
    "STATUS_MISS",
    "STATUS_TRUE_POSITIVE",
    "MatchMethod",
    "MatchResult",
    "match_objects",
]

MatchMethod = Literal["hungarian", "greedy"]

#: Status values written to the ``status`` attribute of the output polygons.
STATUS_TRUE_POSITIVE = "TP"
STATUS_FALSE_POSITIVE = "FP"
STATUS_MISS = "FN"
#: Colour (RGB) of each status, in the overview figure and the layers' default QGIS style.
STATUS_COLORS: dict[str, tuple[int, int, int]] = {
    STATUS_TRUE_POSITIVE: (26, 158, 51),
    STATUS_FALSE_POSITIVE: (227, 26, 28),
    STATUS_MISS: (33, 102, 230),
}
#: Legend label of each status.
STATUS_LABELS: dict[str, str] = {
    STATUS_TRUE_POSITIVE: "TP: matched",
    STATUS_FALSE_POSITIVE: "FP: false alarm",
    STATUS_MISS: "FN: missed",
}

_UNTYPED = "(untyped)"


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


def _annotate(frame: Any, match: MatchResult, partner_ids: Any, is_prediction: bool) -> Any:
    """Add status / match columns to a polygon frame (copy)."""
    import pandas as pd

    out = _with_area(frame.copy())
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


def _with_area(frame: Any) -> Any:
    """``frame`` with the one area field of both layers, ``area_m2`` (glossary).

    An older name (``area``) is renamed; polygons without any area field (e.g. a surveyed
    file) get theirs measured as the vectorizer measures it.
    """
    import rasterio.crs

    from geochange.vectorize.schema import AREA_FIELD, AREA_FIELD_OLD_NAMES, _metric_measures

    if AREA_FIELD in frame.columns:
        return frame
    for old in AREA_FIELD_OLD_NAMES:
        if old in frame.columns:
            return frame.rename(columns={old: AREA_FIELD})
    crs = rasterio.crs.CRS.from_wkt(frame.crs.to_wkt()) if frame.crs is not None else None
    geometry = np.asarray(frame.geometry.values, dtype=object)
    frame[AREA_FIELD] = _metric_measures(geometry, crs)[0] if len(frame) else np.zeros(0)
    return frame


def _types(
    frame: Any, match_partner: npt.NDArray[np.int64], partner_types: list[str] | None
) -> list[str]:
    """Change type per object; untyped objects take their match's type, else "(untyped)".

    Untyped: no ``change_type``, or the ``"change"`` of a binary model's polygons (their
    classes are unknown), so a binary prediction is scored under its reference's type.
    """
    own = _typed(frame)
    result = []
    for k, value in enumerate(own):
        if value is None and partner_types is not None and match_partner[k] >= 0:
            value = partner_types[int(match_partner[k])]
        result.append(value or _UNTYPED)
    return result


def _typed(frame: Any) -> list[str | None]:
    """``change_type`` per object, ``None`` where it says nothing about classes."""
    from geochange.vectorize.schema import BINARY_CHANGE_TYPE

    if "change_type" not in frame.columns:
        return [None] * len(frame)
    return [
        t if isinstance(t, str) and t and t != BINARY_CHANGE_TYPE else None
        for t in frame["change_type"]
    ]


def _change_ids(frame: Any) -> npt.NDArray[np.int64]:
    """The ``change_id`` column, else 1..n in row order."""
    if "change_id" in frame.columns:
        return frame["change_id"].to_numpy()
    return np.arange(1, len(frame) + 1)


@dataclass
class ObjectOutcome:
    """Object scores of one scene and both polygon sets annotated with their match status."""

    scores: dict[str, Any]
    by_type: dict[str, dict[str, Any]]
    predictions: Any
    references: Any


def score_objects(
    pred_frame: Any, ref_frame: Any, *, iou_threshold: float, method: MatchMethod
) -> ObjectOutcome:
    """Match predicted to reference polygons; score them overall and per change type.

    Args:
        pred_frame: predicted polygons (GeoDataFrame, same CRS as ``ref_frame``).
        ref_frame: reference polygons.
        iou_threshold: minimum IoU of a match.
        method: ``"hungarian"`` or ``"greedy"`` (see :func:`match_objects`).

    Returns:
        The scores and both frames with ``status`` / match columns (see :func:`_annotate`).
    """
    import geopandas as gpd

    match = match_objects(
        np.asarray(pred_frame.geometry.values, dtype=object),
        np.asarray(ref_frame.geometry.values, dtype=object),
        iou_threshold=iou_threshold,
        method=method,
    )
    ref_ids = _change_ids(ref_frame)
    pred_ids = _change_ids(pred_frame)
    ref_types = _types(ref_frame, match.ref_match, None)
    pred_types = _types(pred_frame, match.pred_match, ref_types)
    scores, by_type = _object_scores(match, pred_types, ref_types)
    if set(by_type) == {_UNTYPED}:
        by_type = {}
    return ObjectOutcome(
        scores=scores,
        by_type=by_type,
        predictions=gpd.GeoDataFrame(
            _annotate(pred_frame, match, ref_ids, is_prediction=True), crs=pred_frame.crs
        ),
        references=gpd.GeoDataFrame(
            _annotate(ref_frame, match, pred_ids, is_prediction=False), crs=ref_frame.crs
        ),
    )
