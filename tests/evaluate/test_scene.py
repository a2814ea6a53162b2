"""`evaluate_scene` end to end: object outcomes of a hand-built scene, errors, real data."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch

from geochange.errors import ConfigurationError, DataError
from geochange.evaluate import evaluate_scene
from geochange.metrics import BinaryChangeMetrics
from tests.evaluate.scenes import (
    CRS,
    DATA,
    FAST,
    LSSCD,
    SIZE,
    HandScene,
    levir_pair,
    pixel_box,
    status_at,
    write_raster,
)


@pytest.mark.parametrize("matching", ["hungarian", "greedy"])
def test_hand_built_object_scores(hand_scene: HandScene, matching: str) -> None:
    report = evaluate_scene(hand_scene.pred, hand_scene.ref, matching=matching, **FAST)
    objects = report.objects
    assert objects is not None
    assert (objects["predicted"], objects["reference"]) == (6, 6)
    assert objects["true_positives"] == 2
    assert objects["false_positives"] == 4  # two split pieces, one merging blob, one false alarm
    assert objects["misses"] == 4  # the split object, two merged objects, one miss
    assert objects["precision"] == pytest.approx(2 / 6)
    assert objects["recall"] == pytest.approx(2 / 6)
    assert objects["f1"] == pytest.approx(2 / 6)
    assert objects["split_references"] == 1 and objects["split_pieces"] == 2
    assert objects["merging_predictions"] == 1 and objects["merged_references"] == 2
    # IoUs of the two matches: 56/64 and 1 (the object crossing two block edges stays whole)
    assert objects["mean_matched_iou"] == pytest.approx((56 / 64 + 1.0) / 2)

    preds, refs = report.predictions, report.references
    assert status_at(preds, pixel_box(2, 10, 3, 10)) == ["TP"]
    assert status_at(preds, pixel_box(50, 56, 2, 8)) == ["FP"]
    assert status_at(refs, pixel_box(40, 46, 40, 46)) == ["FN"]
    edge_ref = refs[refs.geometry.intersects(pixel_box(28, 36, 40, 56).centroid)]
    assert len(edge_ref) == 1 and edge_ref["status"].iloc[0] == "TP"
    assert edge_ref.geometry.iloc[0].area == pytest.approx(8 * 16 * 0.25)
    assert edge_ref["match_iou"].iloc[0] == pytest.approx(1.0)
    split = refs[refs["segmentation"] == "split"]
    assert len(split) == 1 and split["best_iou"].iloc[0] == pytest.approx(90 / 200)
    assert sorted(preds[preds["segmentation"] == "split piece"]["status"]) == ["FP", "FP"]
    assert list(preds[preds["segmentation"] == "merge"]["status"]) == ["FP"]
    assert (refs["segmentation"] == "merged").sum() == 2
    # match ids point at the partner's change_id
    tp = preds[preds["status"] == "TP"]
    for _, row in tp.iterrows():
        partner = refs[refs["change_id"] == row["match_id"]]
        assert partner["match_id"].iloc[0] == row["change_id"]


def test_lower_threshold_matches_split_piece(hand_scene: HandScene) -> None:
    report = evaluate_scene(hand_scene.pred, hand_scene.ref, iou_threshold=0.4, **FAST)
    assert report.objects is not None
    # at IoU >= 0.4 one split piece (0.45) and the merging blob (0.44) find a partner each
    assert report.objects["true_positives"] == 4


def test_reference_polygons_with_change_type(hand_scene: HandScene, tmp_path: Path) -> None:
    # A surveyed GeoPackage in another CRS (WGS 84), as users often have.
    boxes = {
        "new building": [pixel_box(2, 10, 2, 10), pixel_box(28, 36, 40, 56)],
        "demolished building": [pixel_box(40, 46, 40, 46)],
    }
    frame = gpd.GeoDataFrame(
        {"change_type": [t for t, geoms in boxes.items() for _ in geoms]},
        geometry=[g for geoms in boxes.values() for g in geoms],
        crs=CRS,
    ).to_crs("EPSG:4326")
    gpkg = tmp_path / "survey.gpkg"
    frame.to_file(gpkg, driver="GPKG")

    report = evaluate_scene(hand_scene.pred, reference_polygons=gpkg, **FAST)
    by_type = report.objects_by_type
    assert by_type["new building"]["reference"] == 2
    assert by_type["new building"]["recall"] == 1.0
    assert by_type["demolished building"]["recall"] == 0.0
    # unmatched binary predictions have no type
    assert by_type["(untyped)"]["false_positives"] == 4
    # pixel scores use the polygons rasterized on the prediction grid
    ref = np.zeros((SIZE, SIZE), np.uint8)
    ref[2:10, 2:10] = ref[28:36, 40:56] = ref[40:46, 40:46] = 1
    metric = BinaryChangeMetrics()
    metric.update(torch.from_numpy(hand_scene.pred_array), torch.from_numpy(ref))
    assert report.pixel is not None
    assert report.pixel["iou_change"] == pytest.approx(float(metric.compute()["iou_change"]), 1e-6)
    assert report.references.crs == report.predictions.crs


def test_errors(hand_scene: HandScene, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="reference"):
        evaluate_scene(hand_scene.pred)
    with pytest.raises(DataError, match=r"no change\.tif"):
        (tmp_path / "empty").mkdir()
        evaluate_scene(tmp_path / "empty", hand_scene.ref)
    with pytest.raises(ConfigurationError, match="iou_threshold"):
        evaluate_scene(hand_scene.pred, hand_scene.ref, iou_threshold=0)
    bad = hand_scene.ref_array.copy()
    bad[5, 5] = 7
    with pytest.raises(DataError, match="holds value 7"):
        evaluate_scene(hand_scene.pred, write_raster(tmp_path / "bad.tif", bad), **FAST)
    with pytest.raises(DataError, match="not found"):
        evaluate_scene(hand_scene.pred, reference_polygons=tmp_path / "missing.gpkg")


@pytest.mark.skipif(not (DATA / "levircd-samples").exists(), reason="shared data not available")
def test_levir_cd_prediction(tmp_path: Path) -> None:
    pred_path, ref_path, pred, ref = levir_pair(tmp_path, "test_2_0000_0000.png", "predict_CD_BIT")
    report = evaluate_scene(pred_path, ref_path, block_size=64, vectorize_block_size=64, workers=1)
    metric = BinaryChangeMetrics()
    metric.update(torch.from_numpy(pred), torch.from_numpy(ref))
    assert report.pixel is not None
    assert report.pixel["f1"] == pytest.approx(float(metric.compute()["f1"]), abs=1e-12)
    objects = report.objects
    assert objects is not None
    assert objects["reference"] > 0 and objects["predicted"] > 0
    assert objects["true_positives"] <= min(objects["reference"], objects["predicted"])
    # LEVIR buildings: a good model finds most of them at IoU 0.5
    assert objects["recall"] > 0.5
    with rasterio.open(ref_path) as ds:
        assert report.references.geometry.area.sum() == pytest.approx(
            ref.sum() * abs(ds.transform.a * ds.transform.e)
        )


@pytest.mark.slow
def test_synthetic_scene_building_changes(tmp_path: Path) -> None:
    from geochange.synthetic import make_scene

    scene = make_scene(tmp_path / "scene", 768, 1100, seed=4, block_size=512)
    # Prediction: the scene's own maps with every demolition missed.
    with rasterio.open(scene.semantic_pre) as pre_ds, rasterio.open(scene.semantic_post) as post_ds:
        pre, post = pre_ds.read(1), post_ds.read(1)
        profile = pre_ds.profile
    demolished = (pre == 0) & (post != 0)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    with rasterio.open(scene.change) as ds:
        change = ds.read(1)
    pred_change = np.where(demolished, 0, change).astype(np.uint8)
    pred_post = np.where(demolished, pre, post).astype(np.uint8)
    for name, array in (
        ("change", pred_change),
        ("semantic_pre", pre),
        ("semantic_post", pred_post),
    ):
        with rasterio.open(pred_dir / f"{name}.tif", "w", **{**profile, "driver": "GTiff"}) as ds:
            ds.write(array, 1)
            ds.update_tags(GEOCHANGE_CLASS_NAMES=json.dumps(LSSCD))

    survey = gpd.read_file(scene.changed_buildings, layer="changed_buildings")
    counts = survey["change_type"].value_counts()
    assert counts["new building"] > 0 and counts["demolished building"] > 0
    report = evaluate_scene(
        pred_dir,
        scene.change,
        semantic_pre=scene.semantic_pre,
        semantic_post=scene.semantic_post,
        reference_polygons=scene.changed_buildings,
        change_types=["new building", "demolished building"],
        workers=1,
    )
    by_type = report.objects_by_type
    assert by_type["new building"]["reference"] == counts["new building"]
    assert by_type["new building"]["recall"] >= 0.95
    assert by_type["new building"]["precision"] >= 0.95
    assert (
        by_type["new building"]["found_with_same_type"] == by_type["new building"]["true_positives"]
    )
    assert by_type["demolished building"]["recall"] == 0.0
    assert "demolished building" not in set(report.predictions["change_type"])
    assert report.pixel is not None and report.pixel["recall"] < 1.0
    assert report.pixel["precision"] == 1.0


def _probability(hand_scene: HandScene, path: Path) -> np.ndarray:
    """A float32 probability raster on the scene's grid: distinct values per pixel."""
    rng = np.random.default_rng(3)
    prob = rng.uniform(0.0, 1.0, (SIZE, SIZE)).astype(np.float32)
    write_raster(path, prob, dtype="float32", nodata=None)
    return prob


def _means_inside(frame: gpd.GeoDataFrame, prob: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and maximum of ``prob`` over the pixels of each polygon."""
    from rasterio.features import geometry_mask

    from tests.evaluate.scenes import TRANSFORM

    means, maxima = [], []
    for geometry in frame.geometry:
        inside = geometry_mask([geometry], (SIZE, SIZE), TRANSFORM, invert=True)
        means.append(float(prob[inside].mean()))
        maxima.append(float(prob[inside].max()))
    return means, maxima


def test_mean_prob_of_predicted_objects_from_the_probability_raster(
    hand_scene: HandScene, tmp_path: Path
) -> None:
    # evaluate never read probability.tif: the objects layer's mean_prob was NULL.
    prob = _probability(hand_scene, hand_scene.directory / "probability.tif")
    for prediction in (hand_scene.pred, hand_scene.directory):  # change.tif, or its folder
        report = evaluate_scene(prediction, hand_scene.ref, **FAST)
        predictions = report.predictions
        assert len(predictions) == 6 and predictions["mean_prob"].notna().all()
        means, maxima = _means_inside(predictions, prob)
        np.testing.assert_allclose(predictions["mean_prob"].astype(float), means, rtol=1e-5)
        np.testing.assert_allclose(predictions["max_prob"].astype(float), maxima, rtol=1e-6)
        assert report.settings["prediction_probability"] == str(
            hand_scene.directory / "probability.tif"
        )
        assert report.references["mean_prob"].isna().all()  # the reference has none
    # A change raster of another name: only an explicit probability raster is used.
    other = write_raster(tmp_path / "pred.tif", hand_scene.pred_array)
    plain = evaluate_scene(other, hand_scene.ref, **FAST)
    assert plain.predictions["mean_prob"].isna().all()
    chosen = tmp_path / "p.tif"
    prob = _probability(hand_scene, chosen)
    given = evaluate_scene(other, hand_scene.ref, prediction_probability=chosen, **FAST)
    means, _ = _means_inside(given.predictions, prob)
    np.testing.assert_allclose(given.predictions["mean_prob"].astype(float), means, rtol=1e-5)


def test_prediction_probability_errors(hand_scene: HandScene, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.tif"):
        evaluate_scene(
            hand_scene.pred, hand_scene.ref, prediction_probability=tmp_path / "missing.tif"
        )
    small = write_raster(tmp_path / "small.tif", np.zeros((8, 8), np.float32), dtype="float32")
    with pytest.raises(DataError, match=r"probability raster '.*small\.tif' is not on"):
        evaluate_scene(hand_scene.pred, hand_scene.ref, prediction_probability=small, **FAST)
    polygons = gpd.GeoDataFrame(geometry=[pixel_box(2, 10, 2, 10)], crs=CRS)
    with pytest.raises(ConfigurationError, match="prediction_probability"):
        evaluate_scene(polygons, hand_scene.ref, prediction_probability=small, **FAST)


def test_binary_predictions_are_scored_under_their_references_type(
    hand_scene: HandScene,
) -> None:
    # Binary polygons are change_type "change" now; that says nothing about classes, so a
    # matched one still counts for its reference's type and a type filter keeps them.
    references = gpd.GeoDataFrame(
        {"change_type": ["new building", "demolished building"]},
        geometry=[pixel_box(2, 10, 2, 10), pixel_box(40, 46, 40, 46)],
        crs=CRS,
    )
    report = evaluate_scene(
        hand_scene.pred, reference_polygons=references, change_types=["new building"], **FAST
    )
    assert set(report.predictions["change_type"]) == {"change"}
    assert len(report.predictions) == 6 and len(report.references) == 1
    assert report.objects_by_type["new building"]["precision"] == 1.0
    assert report.objects_by_type["new building"]["recall"] == 1.0
    assert set(report.objects_by_type) == {"new building", "(untyped)"}
