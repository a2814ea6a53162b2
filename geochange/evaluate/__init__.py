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

Modules: :mod:`~geochange.evaluate.scene` (:func:`evaluate_scene`, the phases),
:mod:`~geochange.evaluate.sources` (inputs and grid), :mod:`~geochange.evaluate.pixels`
(pixel pass), :mod:`~geochange.evaluate.matching` (object matching and scores),
:mod:`~geochange.evaluate.report` (the report and its files),
:mod:`~geochange.evaluate.figures` (figures).
"""

from __future__ import annotations

from geochange.evaluate.matching import (
    STATUS_FALSE_POSITIVE,
    STATUS_MISS,
    STATUS_TRUE_POSITIVE,
    MatchMethod,
    MatchResult,
    match_objects,
)
from geochange.evaluate.report import EvaluationReport
from geochange.evaluate.scene import evaluate_scene
from geochange.evaluate.sources import PREDICTION_FILES

__all__ = [
    "PREDICTION_FILES",
    "STATUS_FALSE_POSITIVE",
    "STATUS_MISS",
    "STATUS_TRUE_POSITIVE",
    "EvaluationReport",
    "MatchMethod",
    "MatchResult",
    "evaluate_scene",
    "match_objects",
]
