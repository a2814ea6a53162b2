"""The figures of an evaluation report: score table, transition heatmap, overview, gallery.

Built with matplotlib's object API (no global pyplot state), so reports can be made in
worker processes and tests.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.errors
import rasterio.windows
import shapely
from rasterio.enums import Resampling
from rasterio.windows import Window

from geochange.evaluate.matching import (
    STATUS_COLORS,
    STATUS_FALSE_POSITIVE,
    STATUS_MISS,
    STATUS_TRUE_POSITIVE,
)
from geochange.evaluate.report import _fmt
from geochange.io import DEFAULT_GDAL_CACHE_BYTES, gdal_cache

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from geochange.evaluate.report import EvaluationReport

_GDAL_CACHE_BYTES = DEFAULT_GDAL_CACHE_BYTES
# Overview colours (RGBA): true positive, false positive, miss; as in the layers' QGIS style.
_COLOURS = {k: (r / 255, g / 255, b / 255, 1.0) for k, (r, g, b) in STATUS_COLORS.items()}


def build_figures(report: EvaluationReport, *, gallery_size: int = 8) -> dict[str, Figure]:
    """The figure set of ``report``; see :meth:`EvaluationReport.figures`."""
    figures: dict[str, Figure] = {"metrics": metrics_figure(report)}
    if report.transition_confusion is not None:
        figures["transitions"] = transition_figure(report)
    if report.overview is not None:
        figures["overview"] = overview_figure(report)
    if report.predictions is not None and report.references is not None:
        gallery = gallery_figure(report, gallery_size)
        if gallery is not None:
            figures["gallery"] = gallery
    return figures


def metrics_figure(report: EvaluationReport) -> Figure:
    """Table of the pixel and object scores."""
    from matplotlib.figure import Figure

    rows: list[tuple[str, str, str]] = []
    for key, value in (report.pixel or {}).items():
        rows.append(("pixel", key, _fmt(value)))
    if report.objects is not None:
        for key in ("precision", "recall", "f1", "mean_matched_iou"):
            rows.append(("object", key, _fmt(report.objects[key])))
        for key in ("true_positives", "false_positives", "misses"):
            rows.append(("object", key, _fmt(report.objects[key])))
        for key in ("split_references", "merging_predictions"):
            rows.append(("object", key, _fmt(report.objects[key])))
    for name, scores in report.objects_by_type.items():
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


def transition_figure(report: EvaluationReport) -> Figure:
    """Heatmap of the from → to transition confusion (occurring transitions only)."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    assert report.transition_confusion is not None
    matrix = report.transition_confusion
    # Show only transitions that occur on either side (K^2 + 1 is mostly empty).
    used = np.flatnonzero((matrix.sum(0) + matrix.sum(1)) > 0)
    sub = matrix[np.ix_(used, used)].astype(np.float64)
    labels = [report.transition_labels[i] for i in used]
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


def overview_figure(report: EvaluationReport) -> Figure:
    """Map of the dominant pixel outcome (TP / FP / miss) per overview cell."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    assert report.overview is not None
    counts = report.overview
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
    ax.imshow(rgba, extent=report.overview_extent, interpolation="nearest")
    ax.set_title(
        f"Pixel outcome per {report.settings.get('overview_factor', 1)}-pixel cell (dominant class)"
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
    ax.set_xlabel(f"x ({report.settings.get('crs') or 'map units'})")
    ax.set_ylabel("y")
    return figure


def gallery_figure(report: EvaluationReport, size: int) -> Figure | None:
    """Zooms on the worst errors, or ``None`` when there is none."""
    from matplotlib.figure import Figure

    errors = _worst_errors(report.predictions, report.references, size)
    if not errors:
        return None
    cols = min(4, len(errors))
    rows = math.ceil(len(errors) / cols)
    figure = Figure(figsize=(3.2 * cols, 3.4 * rows))
    pred_geoms = np.asarray(report.predictions.geometry.values, dtype=object)
    ref_geoms = np.asarray(report.references.geometry.values, dtype=object)
    pred_tree = shapely.STRtree(pred_geoms)
    ref_tree = shapely.STRtree(ref_geoms)
    rasters = report.settings.get("rasters", {})
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
