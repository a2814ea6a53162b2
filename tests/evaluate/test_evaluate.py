from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import matplotlib.image
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import shapely.affinity
import torch

from geochange.cli import main as cli_main
from geochange.errors import ConfigurationError, DataError
from geochange.evaluate import EvaluationReport, evaluate_scene, match_objects
from geochange.metrics import BinaryChangeMetrics, SemanticChangeMetrics

from .conftest import CRS, LSSCD, SIZE, TRANSFORM, HandScene, write_raster

DATA = Path(__file__).parents[2] / ".." / "shared" / "data"
FAST = {"block_size": 16, "vectorize_block_size": 16, "workers": 1}


def pixel_box(row0: int, row1: int, col0: int, col1: int) -> shapely.Polygon:
    """Map-coordinate polygon of the pixel rows row0..row1-1, cols col0..col1-1."""
    x0, y0 = TRANSFORM @ (col0, row0)
    x1, y1 = TRANSFORM @ (col1, row1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def status_at(frame: gpd.GeoDataFrame, geometry: shapely.Geometry) -> list[str]:
    hits = frame[frame.geometry.intersects(geometry.centroid)]
    return list(hits["status"])


# ---------------------------------------------------------------- hand-built object scores


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


def test_block_size_does_not_change_results(hand_scene: HandScene) -> None:
    small = evaluate_scene(hand_scene.pred, hand_scene.ref, **FAST)
    large = evaluate_scene(
        hand_scene.pred, hand_scene.ref, block_size=64, vectorize_block_size=64, workers=1
    )
    assert small.pixel == large.pixel
    assert small.objects == large.objects


def test_lower_threshold_matches_split_piece(hand_scene: HandScene) -> None:
    report = evaluate_scene(hand_scene.pred, hand_scene.ref, iou_threshold=0.4, **FAST)
    assert report.objects is not None
    # at IoU >= 0.4 one split piece (0.45) and the merging blob (0.44) find a partner each
    assert report.objects["true_positives"] == 4


# ---------------------------------------------------------------- pixel metrics


def test_pixel_metrics_equal_geochange_metrics(hand_scene: HandScene) -> None:
    report = evaluate_scene(hand_scene.pred, hand_scene.ref, objects=False, **FAST)
    metric = BinaryChangeMetrics(ignore_index=255)
    metric.update(
        torch.from_numpy(hand_scene.pred_array)[None], torch.from_numpy(hand_scene.ref_array)[None]
    )
    expected = {k: float(v) for k, v in metric.compute().items()}
    assert report.pixel is not None and set(report.pixel) == set(expected)
    for key, value in expected.items():
        assert report.pixel[key] == pytest.approx(value, abs=1e-12)
    assert report.objects is None
    # overview counts every TP / FP / miss pixel once
    ref, pred = hand_scene.ref_array, hand_scene.pred_array
    assert report.overview is not None
    assert int(report.overview[0].sum()) == int(((pred == 1) & (ref == 1)).sum())
    assert int(report.overview[1].sum()) == int(((pred == 1) & (ref == 0)).sum())
    assert int(report.overview[2].sum()) == int(((pred == 0) & (ref == 1)).sum())


def test_semantic_scores_transitions_and_types(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    ref_pre = rng.integers(0, 7, (SIZE, SIZE)).astype(np.uint8)
    ref_post = ref_pre.copy()
    ref_change = np.zeros((SIZE, SIZE), np.uint8)
    # new building (cropland -> building), demolished building (building -> bare land)
    ref_pre[4:12, 4:12], ref_post[4:12, 4:12] = 5, 0
    ref_pre[30:38, 40:56], ref_post[30:38, 40:56] = 0, 3
    ref_pre[50:58, 10:20], ref_post[50:58, 10:20] = 2, 4  # water -> tree, missed below
    for box in ((slice(4, 12), slice(4, 12)), (slice(30, 38), slice(40, 56))):
        ref_change[box] = 1
    ref_change[50:58, 10:20] = 1
    ref_pre[0, :] = 255  # unlabeled row
    pred_pre, pred_post = ref_pre.copy(), ref_post.copy()
    pred_pre[0, :] = 1
    pred_post[0, :] = 1
    pred_change = ref_change.copy()
    pred_change[50:58, 10:20] = 0  # the water -> tree change is missed
    pred_post[6:12, 4:12] = 6  # part of the new building predicted as "others"
    pred_change[20:26, 20:26] = 1  # false alarm: road -> water
    pred_pre[20:26, 20:26], pred_post[20:26, 20:26] = 1, 2

    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    write_raster(pred_dir / "change.tif", pred_change)
    write_raster(pred_dir / "semantic_pre.tif", pred_pre, LSSCD)
    write_raster(pred_dir / "semantic_post.tif", pred_post, LSSCD)
    ref_path = write_raster(tmp_path / "ref.tif", ref_change)
    pre_path = write_raster(tmp_path / "ref_pre.tif", ref_pre, LSSCD)
    post_path = write_raster(tmp_path / "ref_post.tif", ref_post, LSSCD)

    report = evaluate_scene(
        pred_dir, ref_path, semantic_pre=pre_path, semantic_post=post_path, **FAST
    )
    metric = SemanticChangeMetrics(7, ignore_index=255)
    metric.update(
        *(
            torch.from_numpy(a)[None]
            for a in (pred_pre, pred_post, pred_change, ref_pre, ref_post, ref_change)
        )
    )
    expected = metric.compute()
    assert report.pixel is not None
    for key in ("iou_change", "f1", "precision", "recall", "oa", "kappa", "miou", "sek", "fscd"):
        assert report.pixel[key] == pytest.approx(float(expected[key]), abs=1e-12)
    assert report.semantic_iou is not None
    assert list(report.semantic_iou) == LSSCD
    assert report.semantic_iou["water"] == pytest.approx(float(expected["semantic_iou"][2]))

    # transition confusion [reference, prediction], index 0 = no change, 1 + from * 7 + to
    matrix = report.transition_confusion
    assert matrix is not None and matrix.shape == (50, 50)
    labels = report.transition_labels
    new_b, other = labels.index("cropland → building"), labels.index("cropland → others")
    assert matrix[new_b, new_b] == 2 * 8 and matrix[new_b, other] == 6 * 8
    demolished = labels.index("building → bare land")
    assert matrix[demolished, demolished] == 8 * 16
    assert matrix[labels.index("water → tree"), 0] == 80
    assert matrix[0, labels.index("road → water")] == 36
    # the unlabeled row (reference pre-date 255) only counts where unchanged
    assert int(matrix.sum()) == SIZE * SIZE

    by_type = report.objects_by_type
    assert by_type["demolished building"]["true_positives"] == 1
    assert by_type["demolished building"]["precision"] == 1.0
    assert by_type["water → tree"]["misses"] == 1
    assert by_type["water → tree"]["recall"] == 0.0
    assert by_type["road → water"]["false_positives"] == 1
    assert by_type["road → water"]["precision"] == 0.0
    # the new building is predicted as two change-type regions: "new building" (IoU 0.25, a
    # false alarm) and "cropland → others" (IoU 0.75): found, but with the wrong type
    assert by_type["new building"]["true_positives"] == 1
    assert by_type["new building"]["found_with_same_type"] == 0
    assert by_type["new building"]["false_positives"] == 1
    assert by_type["cropland → others"]["precision"] == 1.0
    assert report.objects is not None
    assert report.objects["true_positives"] == 2
    assert report.objects["type_agreement"] == pytest.approx(0.5)
    markdown = report.to_markdown()
    assert "sek" in markdown and "demolished building" in markdown
    assert "| cropland → building | cropland → others | 48 |" in markdown


# ---------------------------------------------------------------- reference polygons


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


def test_prediction_result_and_polygon_prediction(hand_scene: HandScene, tmp_path: Path) -> None:
    from geochange.predict import PredictionResult

    result = PredictionResult(change=hand_scene.pred)
    from_result = evaluate_scene(result, hand_scene.ref, **FAST)
    gpkg = from_result.write_objects(tmp_path / "objects.gpkg")
    predicted = pyogrio.read_dataframe(gpkg, layer="predictions")
    from_polygons = evaluate_scene(predicted, hand_scene.ref, **FAST)
    assert from_polygons.objects == from_result.objects
    assert from_result.pixel is not None and from_polygons.pixel is not None
    for key, value in from_result.pixel.items():
        assert from_polygons.pixel[key] == pytest.approx(value, abs=1e-12)


def test_reference_polygons_outside_the_scene(hand_scene: HandScene, tmp_path: Path) -> None:
    inside = [pixel_box(2, 10, 2, 10), pixel_box(28, 36, 40, 56)]
    # 10 km east: a survey of another area, or coordinates in another CRS than declared.
    far = [shapely.affinity.translate(g, 10_000.0, 0.0) for g in inside]
    elsewhere = tmp_path / "elsewhere.gpkg"
    gpd.GeoDataFrame(geometry=far, crs=CRS).to_file(elsewhere)
    with pytest.raises(DataError, match=r"none of the 2 reference polygons .*elsewhere\.gpkg"):
        evaluate_scene(hand_scene.pred, reference_polygons=elsewhere, **FAST)
    # Some outside: left out with a warning; the scores are those of the inside ones.
    mixed = tmp_path / "mixed.gpkg"
    gpd.GeoDataFrame(geometry=inside + far[:1], crs=CRS).to_file(mixed)
    only_inside = tmp_path / "inside.gpkg"
    gpd.GeoDataFrame(geometry=inside, crs=CRS).to_file(only_inside)
    with pytest.warns(UserWarning, match=r"1 of the 3 reference polygons .*mixed\.gpkg.* left out"):
        report = evaluate_scene(hand_scene.pred, reference_polygons=mixed, **FAST)
    expected = evaluate_scene(hand_scene.pred, reference_polygons=only_inside, **FAST)
    assert report.objects == expected.objects and report.objects["reference"] == 2
    assert report.pixel == expected.pixel
    # Predicted polygons as a file, against the reference raster: the same rule.
    with pytest.raises(DataError, match="none of the 2 predicted polygons"):
        evaluate_scene(elsewhere, hand_scene.ref, **FAST)
    # Polygons only (no grid): both sets must share some extent.
    with pytest.raises(DataError, match="do not overlap"):
        evaluate_scene(only_inside, reference_polygons=elsewhere, **FAST)


@pytest.mark.skipif(not (DATA / "levircd-samples").exists(), reason="shared data not available")
def test_levir_0_255_rasters_need_mask_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    name, root = "test_2_0000_0000.png", DATA / "levircd-samples"
    raw_ref = np.asarray(Image.open(root / "label" / name))
    raw_pred = np.asarray(Image.open(root / "predict_CD_BIT" / name))
    assert set(np.unique(raw_ref)) == set(np.unique(raw_pred)) == {0, 255}
    # As users get them: 0/255 GeoTIFFs (this writer also tags nodata 255).
    ref_path = write_raster(tmp_path / "levir_ref.tif", raw_ref)
    pred_path = write_raster(tmp_path / "levir_pred.tif", raw_pred)
    pred01 = write_raster(tmp_path / "pred01.tif", raw_pred // 255)
    ref01 = write_raster(tmp_path / "ref01.tif", raw_ref // 255)
    with pytest.raises(DataError, match=r"levir_ref\.tif.*0/255 mask.* mask_values=\"0,255\""):
        evaluate_scene(pred01, ref_path, **FAST)
    with pytest.raises(DataError, match=r"levir_pred\.tif.*0/255.*prediction_mask_values="):
        evaluate_scene(pred_path, ref01, **FAST)
    report = evaluate_scene(
        pred_path, ref_path, mask_values="0,255", prediction_mask_values="0,255", **FAST
    )
    binary = evaluate_scene(pred01, ref01, **FAST)
    assert report.pixel == binary.pixel and report.objects == binary.objects
    assert report.objects is not None and report.objects["true_positives"] > 0
    cli = ["evaluate", "--prediction", str(pred_path), "--reference", str(ref_path)]
    cli += ["--report", str(tmp_path / "out"), "--workers", "1", "--quiet"]
    assert cli_main(cli) == 1
    err = capsys.readouterr().err
    assert err.startswith("geochange evaluate: error: ") and "levir_pred.tif" in err
    assert "--prediction-mask-values 0,255" in err and "Traceback" not in err
    flags = ["--mask-values", "0,255", "--prediction-mask-values", "0,255"]
    assert cli_main([*cli, *flags]) == 0
    assert f"{report.objects['true_positives']} TP" in capsys.readouterr().out


# ---------------------------------------------------------------- matching


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


# ---------------------------------------------------------------- report files


def test_report_files_written_and_figures_open(hand_scene: HandScene, tmp_path: Path) -> None:
    report = evaluate_scene(hand_scene.pred, hand_scene.ref, **FAST)
    written = report.save(tmp_path / "report")
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["objects"]["true_positives"] == 2
    assert data["pixel"]["iou_change"] == pytest.approx(report.pixel["iou_change"])  # type: ignore[index]
    assert "# Change detection evaluation" in (tmp_path / "report" / "report.md").read_text()
    layers = {str(name) for name, _ in pyogrio.list_layers(written["objects"])}
    assert layers == {"predictions", "references"}
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


# ---------------------------------------------------------------- CLI and errors


def test_cli_writes_report(
    hand_scene: HandScene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(
        [
            "evaluate",
            "--prediction",
            str(hand_scene.directory),  # a prediction directory holding change.tif
            "--reference",
            str(hand_scene.ref),
            "--report",
            str(tmp_path / "out"),
            "--workers",
            "1",
            "--quiet",
        ]
    )
    assert code == 0
    assert "2 TP, 4 FP, 4 misses" in capsys.readouterr().out
    assert (tmp_path / "out" / "report.json").exists()
    assert (tmp_path / "out" / "figures" / "overview.png").exists()


def test_cli_clean_error_on_grid_mismatch(
    hand_scene: HandScene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = write_raster(tmp_path / "small.tif", np.zeros((32, 32), np.uint8))
    code = cli_main(
        [
            "evaluate",
            *("--prediction", str(hand_scene.pred), "--reference", str(small)),
            *("--report", str(tmp_path / "out"), "--quiet"),
        ]
    )
    assert code == 1
    assert "not on the evaluation grid" in capsys.readouterr().err


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


# ---------------------------------------------------------------- real data


def _levir_pair(tmp_path: Path, name: str, model: str) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    from PIL import Image

    root = DATA / "levircd-samples"
    ref = (np.asarray(Image.open(root / "label" / name)) > 0).astype(np.uint8)
    pred = (np.asarray(Image.open(root / model / name)) > 0).astype(np.uint8)
    return (
        write_raster(tmp_path / f"pred_{name}.tif", pred),
        write_raster(tmp_path / f"ref_{name}.tif", ref),
        pred,
        ref,
    )


@pytest.mark.skipif(not (DATA / "levircd-samples").exists(), reason="shared data not available")
def test_levir_cd_prediction(tmp_path: Path) -> None:
    pred_path, ref_path, pred, ref = _levir_pair(tmp_path, "test_2_0000_0000.png", "predict_CD_BIT")
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


# ---------------------------------------------------------------- synthetic LsSCD-like scene


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

    survey = gpd.read_file(scene.changed_buildings)
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


def test_corrupt_reference_block_is_a_data_error_naming_file_and_window(
    hand_scene: HandScene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ref.tif"
    with rasterio.open(hand_scene.ref) as src:
        profile = dict(src.profile, compress="deflate")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read())
    with rasterio.open(path) as ds:  # zero the inside of block (row 2, col 3): rows 32-48
        offset = int(ds.get_tag_item("BLOCK_OFFSET_3_2", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_3_2", "TIFF", bidx=1))
    data = bytearray(path.read_bytes())
    data[offset + 2 : offset + size - 2] = bytes(size - 4)
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"cannot read .*ref\.tif' at rows 32-48, cols 48-64"):
        evaluate_scene(hand_scene.pred, path, **FAST)
    args = ["--prediction", str(hand_scene.pred), "--reference", str(path)]
    code = cli_main(["evaluate", *args, "--report", str(tmp_path / "out"), "--quiet"])
    assert code == 1
    assert capsys.readouterr().err.startswith("geochange evaluate: error: cannot read ")
