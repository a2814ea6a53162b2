"""The evaluation report: scores, annotated polygons and overview; JSON, Markdown, GeoPackage.

:meth:`EvaluationReport.save` writes the whole report directory; the figures are built by
:mod:`geochange.evaluate.figures`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geochange._deprecation import renamed_argument
from geochange.errors import OutputError
from geochange.evaluate.matching import (
    STATUS_COLORS,
    STATUS_FALSE_POSITIVE,
    STATUS_LABELS,
    STATUS_MISS,
    STATUS_TRUE_POSITIVE,
)
from geochange.io import (
    StyleCategory,
    atomic_output,
    check_writable_dir,
    write_layer_style,
    write_polygon_layer,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["EvaluationReport"]


_PathLike = str | os.PathLike[str]


def _renamed(
    value: _PathLike | None, old_value: _PathLike | None, *, old: str, new: str, where: str
) -> _PathLike:
    """``value``, or the deprecated ``old_value`` (warns); one of them is required."""
    value = renamed_argument(value, old_value, old=old, new=new, where=where, stacklevel=3)
    if value is None:
        raise TypeError(f"{where}() missing required argument: {new!r}")
    return value


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

    def to_json(
        self,
        out: str | os.PathLike[str] | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
    ) -> Path:
        """Write :meth:`to_dict` as indented JSON, atomically.

        Args:
            out: output file.
            path: deprecated name of ``out`` (``DeprecationWarning``; removed next release).

        Returns:
            The path written.
        """
        target = _renamed(out, path, old="path", new="out", where="EvaluationReport.to_json")
        with atomic_output(target) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return Path(target)

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

    def write_objects(
        self,
        out: str | os.PathLike[str] | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
    ) -> Path:
        """Write both polygon sets with their status to a GeoPackage, atomically.

        Layers ``predictions`` (status TP / FP) and ``references`` (status TP / FN), each
        with a default QGIS style categorized by ``status`` (in its ``layer_styles`` table),
        so QGIS opens them coloured as the overview figure, with a legend.

        Args:
            out: output ``.gpkg`` path.
            path: deprecated name of ``out`` (``DeprecationWarning``; removed next release).

        Returns:
            The path written.

        Raises:
            OutputError: if there are no polygons or the path is not a GeoPackage.
        """
        path = Path(
            _renamed(out, path, old="path", new="out", where="EvaluationReport.write_objects")
        )
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
                _style_status_layer(work, "predictions", STATUS_FALSE_POSITIVE)
                _style_status_layer(work, "references", STATUS_MISS)
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
        from geochange.evaluate.figures import build_figures

        return build_figures(self, gallery_size=gallery_size)

    def save_figures(
        self,
        out_dir: str | os.PathLike[str] | None = None,
        *,
        dpi: int = 120,
        directory: str | os.PathLike[str] | None = None,
    ) -> list[Path]:
        """Write every figure as ``<name>.png`` into ``out_dir`` (atomic writes).

        Args:
            out_dir: output directory (created if needed).
            dpi: resolution.
            directory: deprecated name of ``out_dir`` (``DeprecationWarning``; removed next
                release).

        Returns:
            The PNG paths written.
        """
        directory = check_writable_dir(
            _renamed(
                out_dir,
                directory,
                old="directory",
                new="out_dir",
                where="EvaluationReport.save_figures",
            )
        )
        written = []
        for name, figure in self.figures().items():
            target = directory / f"{name}.png"
            with atomic_output(target) as tmp:
                figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
            written.append(target)
        return written

    def save(
        self,
        out_dir: str | os.PathLike[str] | None = None,
        *,
        directory: str | os.PathLike[str] | None = None,
    ) -> dict[str, Path]:
        """Write the whole report: ``report.json``, ``report.md``, ``objects.gpkg``, figures.

        Args:
            out_dir: report directory (created if needed).
            directory: deprecated name of ``out_dir`` (``DeprecationWarning``; removed next
                release).

        Returns:
            Output name -> path.
        """
        directory = check_writable_dir(
            _renamed(
                out_dir, directory, old="directory", new="out_dir", where="EvaluationReport.save"
            )
        )
        written = {"json": self.to_json(directory / "report.json")}
        with atomic_output(directory / "report.md") as tmp:
            tmp.write_text(self.to_markdown() + "\n", encoding="utf-8")
        written["markdown"] = directory / "report.md"
        if self.predictions is not None and self.references is not None:
            written["objects"] = self.write_objects(directory / "objects.gpkg")
        for png in self.save_figures(directory / "figures"):
            written[f"figure_{png.stem}"] = png
        return written


def _style_status_layer(path: Path, layer: str, unmatched: str) -> None:
    """The default QGIS style of an objects layer: TP and its unmatched status, labelled."""
    statuses = (STATUS_TRUE_POSITIVE, unmatched)
    categories = [StyleCategory(s, STATUS_LABELS[s], STATUS_COLORS[s]) for s in statuses]
    write_layer_style(
        path, layer, "status", categories, description="geochange: objects by match status"
    )


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
