"""The report: files written, figures readable, JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pyogrio
import pytest

from geochange.evaluate import EvaluationReport, evaluate_scene
from tests.evaluate.scenes import (
    FAST,
    HandScene,
    write_raster,
)


def test_report_files_written_and_figures_open(hand_scene: HandScene, tmp_path: Path) -> None:
    report = evaluate_scene(hand_scene.pred, hand_scene.ref, **FAST)
    written = report.save(tmp_path / "report")
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["objects"]["true_positives"] == 2
    assert data["pixel"]["iou_change"] == pytest.approx(report.pixel["iou_change"])  # type: ignore[index]
    assert "# Change detection evaluation" in (tmp_path / "report" / "report.md").read_text()
    layers = {str(name) for name, _ in pyogrio.list_layers(written["objects"])}
    assert layers == {"predictions", "references", "layer_styles"}
    predictions = pyogrio.read_dataframe(written["objects"], layer="predictions")
    assert sorted(predictions["status"]) == ["FP"] * 4 + ["TP"] * 2
    assert predictions.crs.to_epsg() == 32631
    for name in ("metrics", "overview", "gallery"):
        image = matplotlib.image.imread(written[f"figure_{name}"])
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert not list((tmp_path / "report").glob(".*partial"))


def test_json_round_trip_of_empty_scene(tmp_path: Path) -> None:
    empty = np.zeros((32, 32), np.uint8)
    pred = write_raster(tmp_path / "p.tif", empty)
    ref = write_raster(tmp_path / "r.tif", empty)
    report = evaluate_scene(pred, ref, **FAST)
    assert report.objects is not None and report.objects["f1"] == 0.0
    assert report.pixel is not None and report.pixel["oa"] == 1.0
    path = report.to_json(tmp_path / "r.json")
    assert json.loads(path.read_text())["objects"]["predicted"] == 0
    assert isinstance(report, EvaluationReport)
    assert "gallery" not in report.figures()


def test_output_arguments_old_names_still_work_with_a_deprecation_warning(
    hand_scene: HandScene, tmp_path: Path
) -> None:
    # Glossary: `out` is one output file, `out_dir` a directory of outputs; the old names
    # (`path`, `directory`) keep working for one release.
    report = evaluate_scene(hand_scene.pred, hand_scene.ref, **FAST)
    assert report.to_json(out=tmp_path / "new.json") == tmp_path / "new.json"
    with pytest.warns(DeprecationWarning, match=r"to_json\(path=.*out="):
        assert report.to_json(path=tmp_path / "old.json") == tmp_path / "old.json"
    assert (tmp_path / "old.json").read_text() == (tmp_path / "new.json").read_text()

    assert report.write_objects(out=tmp_path / "new.gpkg").exists()
    with pytest.warns(DeprecationWarning, match=r"write_objects\(path="):
        assert report.write_objects(path=tmp_path / "old.gpkg") == tmp_path / "old.gpkg"

    new_figures = report.save_figures(out_dir=tmp_path / "fig_new")
    with pytest.warns(DeprecationWarning, match=r"save_figures\(directory=.*out_dir="):
        old_figures = report.save_figures(directory=tmp_path / "fig_old")
    assert [p.name for p in old_figures] == [p.name for p in new_figures]

    new = report.save(out_dir=tmp_path / "new")
    with pytest.warns(DeprecationWarning, match=r"save\(directory="):
        old = report.save(directory=tmp_path / "old")
    assert sorted(old) == sorted(new)
    assert all(path.exists() for path in old.values())

    with pytest.raises(TypeError, match="both 'out_dir' and its deprecated name 'directory'"):
        report.save(tmp_path / "a", directory=tmp_path / "b")
    with pytest.raises(TypeError, match="missing required argument: 'out'"):
        report.to_json()


def test_objects_layers_open_styled_by_status_with_one_area_field(
    hand_scene: HandScene, tmp_path: Path
) -> None:
    import sqlite3
    import xml.etree.ElementTree as ET

    import geopandas as gpd

    from tests.evaluate.scenes import CRS, pixel_box

    # A survey without any area field, and one with the old name `area`.
    survey = gpd.GeoDataFrame(
        {"change_type": ["new building", "new building"]},
        geometry=[pixel_box(2, 10, 2, 10), pixel_box(40, 46, 40, 46)],
        crs=CRS,
    )
    for references in (survey, survey.assign(area=[1.0, 2.0])):
        report = evaluate_scene(hand_scene.pred, reference_polygons=references, **FAST)
        out = report.write_objects(tmp_path / "objects.gpkg")
        layers = {}
        for layer in ("predictions", "references"):
            frame = pyogrio.read_dataframe(out, layer=layer)
            assert "area" not in frame.columns
            layers[layer] = frame
        np.testing.assert_allclose(
            layers["predictions"]["area_m2"], layers["predictions"].geometry.area, rtol=1e-9
        )
        expected = [16.0, 9.0] if "area" not in references else [1.0, 2.0]  # 0.5 m pixels
        np.testing.assert_allclose(layers["references"]["area_m2"], expected, rtol=1e-9)
        with sqlite3.connect(out) as db:
            rows = db.execute(
                "SELECT f_table_name, styleQML FROM layer_styles WHERE useAsDefault = 1"
            ).fetchall()
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        db.close()
        styles = {table: ET.fromstring(qml.split("\n", 1)[1]) for table, qml in rows}
        assert set(styles) == {"predictions", "references"}
        unmatched = {"predictions": ("FP", "FP: false alarm"), "references": ("FN", "FN: missed")}
        for layer, other in unmatched.items():
            renderer = styles[layer].find("renderer-v2")
            assert renderer is not None and renderer.get("attr") == "status"
            labels = {c.get("value"): c.get("label") for c in renderer.iter("category")}
            assert labels == {"TP": "TP: matched", other[0]: other[1]}
            assert set(layers[layer]["status"]) <= set(labels)
