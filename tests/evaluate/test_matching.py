"""Object matching: Hungarian vs greedy, many objects."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
import shapely.affinity

from geochange.evaluate import evaluate_scene, match_objects
from tests.evaluate.scenes import CRS, FAST, HandScene, pixel_box


def test_hungarian_maximises_matches_where_greedy_does_not() -> None:
    # 1-D boxes of height 10: reference X [0, 10], Y [10, 20]; prediction A [1, 13] overlaps
    # both (IoU 0.69 with X, 0.16 with Y), B [-5, 4] overlaps X only (IoU 0.27).
    def bar(a: float, b: float) -> shapely.Polygon:
        return shapely.box(a, 0, b, 10)

    predicted = [bar(1, 13), bar(-5, 4)]
    reference = [bar(0, 10), bar(10, 20)]
    greedy = match_objects(predicted, reference, iou_threshold=0.1, method="greedy")
    hungarian = match_objects(predicted, reference, iou_threshold=0.1, method="hungarian")
    assert greedy.matches == 1 and list(greedy.pred_match) == [0, -1]
    assert hungarian.matches == 2 and list(hungarian.pred_match) == [1, 0]
    assert hungarian.pred_iou[1] == pytest.approx(4 / 15)
    assert greedy.pred_best_iou[0] == pytest.approx(9 / 13)


def test_match_objects_many_objects_fast() -> None:
    # 40k objects on a regular lattice, predictions shifted by 10 %: all match.
    xs, ys = np.meshgrid(np.arange(200) * 3.0, np.arange(200) * 3.0)
    reference = shapely.box(xs.ravel(), ys.ravel(), xs.ravel() + 2, ys.ravel() + 2)
    predicted = shapely.box(xs.ravel() + 0.2, ys.ravel(), xs.ravel() + 2.2, ys.ravel() + 2)
    result = match_objects(predicted, reference)
    assert result.matches == 40_000
    assert np.allclose(result.pred_iou, 1.8 / 2.2)
    assert (result.ref_match == np.arange(40_000)).all()


def test_reference_area_field_is_written_as_area_m2(hand_scene: HandScene, tmp_path: Path) -> None:
    # Glossary: predicted and reference layers name the area `area_m2` (the synthetic scenes'
    # references used to carry `area`).
    boxes = [pixel_box(2, 10, 2, 10), pixel_box(40, 46, 40, 46)]
    frame = gpd.GeoDataFrame({"area": [g.area for g in boxes]}, geometry=boxes, crs=CRS)
    report = evaluate_scene(hand_scene.pred, reference_polygons=frame, **FAST)
    assert "area" not in report.references.columns
    assert list(report.references["area_m2"]) == pytest.approx([g.area for g in boxes])
    assert "area_m2" in report.predictions.columns
    layer = pyogrio.read_dataframe(report.write_objects(tmp_path / "o.gpkg"), layer="references")
    assert "area_m2" in layer.columns and "area" not in layer.columns
