"""geochange.vectorize.inputs: input rasters are checked (bands, types, grid, values) and read."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
from affine import Affine

from geochange.errors import ConfigurationError, DataError, OutputError
from geochange.vectorize import (
    vectorize_changes,
)

from .conftest import (
    DATA,
    TRANSFORM,
    stress_mask,
    write_raster,
)


def test_levircd_0_255_labels_need_mask_values(tmp_path: Path, capsys) -> None:
    from geochange.cli import main

    labels = sorted((DATA / "levircd-samples" / "label").glob("*.png"))[:2]
    if len(labels) < 2:
        pytest.skip("shared LEVIR-CD samples not available")
    raw = np.hstack([rasterio.open(path).read(1) for path in labels])
    assert set(np.unique(raw)) == {0, 255}
    binary = write_raster(tmp_path / "levir01.tif", (raw == 255).astype(np.uint8))
    expected = vectorize_changes(binary, block_size=100, workers=1)
    assert len(expected) >= 5
    for nodata in (None, 255):
        path = write_raster(tmp_path / f"levir_{nodata}.tif", raw, nodata=nodata)
        # Neither "every 255 is nodata: 0 polygons" nor "any non-zero value is change".
        with pytest.raises(DataError, match=r"levir_.*0/255 mask.*mask_values=\"0,255\""):
            vectorize_changes(path, workers=1)
        frame = vectorize_changes(path, block_size=100, workers=1, mask_values="0,255")
        assert frame.geometry.geom_equals_exact(expected.geometry, tolerance=0).all()
    out = tmp_path / "levir.gpkg"
    cli = ["vectorize", str(path), "--out", str(out), "--quiet", "--workers", "1"]
    assert main(cli) == 1
    err = capsys.readouterr().err
    assert err.startswith("geochange vectorize: error: ") and "--mask-values 0,255" in err
    assert "Traceback" not in err and not out.exists()
    assert main([*cli, "--mask-values", "0,255"]) == 0
    assert len(pyogrio.read_dataframe(out)) == len(expected)


@pytest.mark.parametrize("value", [2, 7, 128])
def test_out_of_range_change_values_are_rejected(tmp_path: Path, value: int) -> None:
    mask = stress_mask()
    mask[mask == 1] = value
    path = write_raster(tmp_path / "bad.tif", mask)
    with pytest.raises(DataError, match=rf"bad\.tif' holds value {value} outside"):
        vectorize_changes(path, workers=1)


def test_bad_inputs(tmp_path: Path, stress_path: Path) -> None:
    multi = write_raster(tmp_path / "multi.tif", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DataError, match="2 bands"):
        vectorize_changes(multi)
    floats = write_raster(tmp_path / "float.tif", np.zeros((8, 8), np.float32), nodata=None)
    with pytest.raises(DataError, match="float32"):
        vectorize_changes(floats)
    other_grid = write_raster(tmp_path / "pre.tif", np.zeros((53, 60), np.uint8))
    with pytest.raises(DataError, match="not on the change raster's grid"):
        vectorize_changes(stress_path, semantic_pre=other_grid, semantic_post=other_grid)
    shifted = write_raster(
        tmp_path / "prob.tif",
        np.zeros((53, 61), np.uint8),
        transform=TRANSFORM @ Affine.translation(1, 0),
    )
    with pytest.raises(DataError, match="grid"):
        vectorize_changes(stress_path, probability=shifted)
    with pytest.raises(OutputError, match=r"\.shp"):
        vectorize_changes(stress_path, tmp_path / "out.shp")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not writable"):
        vectorize_changes(stress_path, blocker / "out.gpkg")
    with pytest.raises(DataError, match="not found"):
        vectorize_changes(tmp_path / "missing.tif")
    with pytest.raises(ConfigurationError, match="connectivity"):
        vectorize_changes(stress_path, connectivity=6)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="single layer"):
        vectorize_changes(stress_path, tmp_path / "x.fgb", layer_per_type=True)
    with pytest.raises(ConfigurationError, match="needs an output path"):
        vectorize_changes(stress_path, return_frame=False)
    with pytest.raises(ConfigurationError, match="together"):
        vectorize_changes(stress_path, semantic_pre=stress_path)


def test_explicit_class_names_override_tags(semantic_paths: SimpleNamespace) -> None:
    names = ["bâtiment", "route", "eau", "sol nu", "arbre", "culture", "autre"]
    frame = vectorize_changes(
        semantic_paths.change,
        semantic_pre=semantic_paths.semantic_pre,
        semantic_post=semantic_paths.semantic_post,
        class_names=names,
        workers=1,
    )
    assert "culture → route" in set(frame["change_type"])


def test_predictor_probability_scale_tag(tmp_path: Path) -> None:
    # The predictor writes round(p * 254) with 255 as nodata and tags the scale.
    change = np.zeros((20, 20), np.uint8)
    change[2:6, 2:6] = 1
    change[10:14, 10:16] = 1
    prob = np.zeros((20, 20), np.uint8)
    prob[2:6, 2:6] = 254
    prob[10:14, 10:16] = 127
    prob_path = write_raster(tmp_path / "probability.tif", prob)
    with rasterio.open(prob_path, "r+") as ds:
        ds.update_tags(GEOCHANGE_PROBABILITY_SCALE="254")
    frame = vectorize_changes(
        write_raster(tmp_path / "change.tif", change), probability=prob_path, workers=1
    )
    by_size = frame.sort_values("pixel_count")
    assert by_size["max_prob"].tolist() == pytest.approx([1.0, 0.5])
    assert by_size["mean_prob"].tolist() == pytest.approx([1.0, 0.5])
