"""Evaluation inputs: results and polygon files, polygons off the grid, mask values, bad blocks."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import shapely.affinity

from geochange.cli import main as cli_main
from geochange.errors import DataError
from geochange.evaluate import evaluate_scene
from tests.evaluate.scenes import (
    CRS,
    DATA,
    FAST,
    HandScene,
    pixel_box,
    write_raster,
)


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
    cli += ["--out-dir", str(tmp_path / "out"), "--workers", "1", "--quiet"]
    assert cli_main(cli) == 1
    err = capsys.readouterr().err
    assert err.startswith("geochange evaluate: error: ") and "levir_pred.tif" in err
    assert "--prediction-mask-values 0,255" in err and "Traceback" not in err
    flags = ["--mask-values", "0,255", "--prediction-mask-values", "0,255"]
    assert cli_main([*cli, *flags]) == 0
    assert f"{report.objects['true_positives']} TP" in capsys.readouterr().out


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
    code = cli_main(["evaluate", *args, "--out-dir", str(tmp_path / "out"), "--quiet"])
    assert code == 1
    assert capsys.readouterr().err.startswith("geochange evaluate: error: cannot read ")
