"""The ChangePredictor API (geochange.predict.predictor): window, res, errors before any work.

The stages have their own files: test_windows, test_reader, test_inference, test_tiles,
test_blend, test_outputs, test_run (resume), test_output_safety.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geochange.errors import ConfigurationError, DataError, OutputError
from geochange.predict import ChangePredictor
from tests.builders import DifferenceModel, TinyConvChange, whole_image, write_raster
from tests.predict.helpers import exact_predictor, read


def test_window_restricts_prediction(scene_pair) -> None:
    pre_path, post_path, pre, post = scene_pair
    model = TinyConvChange()
    predictor = exact_predictor(model)
    with rasterio.open(pre_path) as src:
        full_transform = src.transform
    window = rasterio.windows.Window(30, 20, 150, 100)
    result = predictor.predict(pre_path, post_path, pre_path.parent / "win", window=window)
    with rasterio.open(result.change) as ds:
        assert ds.shape == (100, 150)
        assert ds.transform == rasterio.windows.transform(window, full_transform)
    sub = (slice(None), slice(20, 120), slice(30, 180))
    reference, _, _ = whole_image(model, pre[sub], post[sub])
    np.testing.assert_allclose(read(result.probability), reference, atol=1e-5)


def test_bad_inputs_fail_before_work(scene_pair, tmp_path: Path) -> None:
    pre_path, post_path, pre, _ = scene_pair
    predictor = exact_predictor(TinyConvChange())
    with pytest.raises(DataError, match="not found"):
        predictor.predict(tmp_path / "missing.tif", post_path, tmp_path / "o1")
    far = write_raster(
        tmp_path / "far.tif", pre, transform=from_origin(900000.0, 1000000.0, 10.0, 10.0)
    )
    with pytest.raises(DataError, match="do not overlap"):
        predictor.predict(pre_path, far, tmp_path / "o2")
    four = write_raster(tmp_path / "four.tif", np.concatenate([pre, pre[:1]]))
    with pytest.raises(DataError, match="bands"):
        predictor.predict(pre_path, four, tmp_path / "o3")
    with pytest.raises(DataError, match="expects 4 bands"):
        exact_predictor(TinyConvChange(), in_channels=4, normalization=None).predict(
            pre_path, post_path, tmp_path / "o4"
        )
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="not writable"):
        predictor.predict(pre_path, post_path, blocker / "out")
    not_raster = tmp_path / "bad.tif"
    not_raster.write_text("garbage")
    with pytest.raises(DataError, match="cannot read raster"):
        predictor.predict(pre_path, not_raster, tmp_path / "o5")


@pytest.mark.parametrize("spelling", ["res", "resolution"])
def test_requested_resolution_warps_both_dates(tmp_path: Path, spelling: str) -> None:
    height, width = 120, 160
    base = np.full((3, height, width), 100.0, dtype=np.float32)
    changed = base.copy()
    changed[:, 40:80, 60:120] += 200.0
    pre_path = write_raster(tmp_path / "pre.tif", base)
    post_path = write_raster(tmp_path / "post.tif", changed)
    predictor = ChangePredictor(
        DifferenceModel(),
        tile_size=64,
        overlap=16,
        precision="fp32",
        num_workers=0,
        progress=False,
        size_divisor=1,
    )
    if spelling == "res":
        result = predictor.predict(pre_path, post_path, tmp_path / "out", res=20.0)
    else:  # the deprecated spelling still works for one release
        with pytest.warns(DeprecationWarning, match="use res="):
            result = predictor.predict(pre_path, post_path, tmp_path / "out", resolution=20.0)
    with rasterio.open(result.change) as ds:
        assert ds.res == (20.0, 20.0) and ds.shape == (60, 80)
        assert ds.bounds == rasterio.open(pre_path).bounds
        change = ds.read(1)
    truth = np.zeros((60, 80), dtype=np.uint8)
    truth[20:40, 30:60] = 1
    np.testing.assert_array_equal(change, truth)
    if spelling == "resolution":
        with pytest.raises(ConfigurationError, match="not both"):
            predictor.predict(pre_path, post_path, tmp_path / "o2", res=20.0, resolution=20.0)
