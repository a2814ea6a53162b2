"""predict_xarray on dask inputs (lazy), CF attributes, palettes through rio.to_raster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geochange.classes import CHANGE_COLORS, CHANGE_PALETTE
from geochange.predict.lazy import palette, to_raster
from tests.builders import TinyConvChange
from tests.predict.helpers import EXACT, tiny_predictor

rioxarray = pytest.importorskip("rioxarray")
dask = pytest.importorskip("dask")


def test_dask_inputs_give_lazy_results_equal_to_in_memory(scene_pair, monkeypatch) -> None:
    import geochange.predict.tiles as tiles_module

    pre_path, post_path, _, _ = scene_pair
    pre = rioxarray.open_rasterio(pre_path, chunks={"x": 100, "y": 100})
    post = rioxarray.open_rasterio(post_path, chunks={"x": 100, "y": 100})
    predictor = tiny_predictor()
    eager = predictor.predict_xarray(pre.compute(), post.compute())
    calls = []
    model = predictor._inferencer.model
    model.register_forward_hook(lambda *_: calls.append(1))
    lazy = predictor.predict_xarray(pre, post)
    probes = len(calls)  # the channel probe runs at once; no tile does
    assert probes <= 2
    for key in ("change", "probability"):
        assert isinstance(lazy[key].data, dask.array.Array)
    assert len(calls) == probes
    # Blocks of two tile rows (173 px, 64-px tiles, overlap 16: 4 tile rows -> 2 blocks).
    assert lazy["change"].data.numblocks == (2, 1)
    for key in ("change", "probability"):
        np.testing.assert_array_equal(lazy[key].values, eager[key].values)
    assert len(calls) > probes
    assert lazy.rio.crs == pre.rio.crs and lazy.rio.transform() == pre.rio.transform()
    # Column stripes inside the blocks give the same values.
    monkeypatch.setattr(tiles_module, "MIN_STRIPE_TILES", 2)
    striped = tiny_predictor(band_memory_mb=0.01).predict_xarray(pre, post)
    np.testing.assert_array_equal(striped["probability"].values, eager["probability"].values)


def test_results_are_cf_described(scene_pair) -> None:
    pre_path, post_path, _, _ = scene_pair
    pre = rioxarray.open_rasterio(pre_path)
    post = rioxarray.open_rasterio(post_path)
    dataset = tiny_predictor().predict_xarray(pre, post)
    change, probability = dataset["change"].attrs, dataset["probability"].attrs
    assert change["long_name"] == "change" and change["_FillValue"] == 255
    np.testing.assert_array_equal(change["flag_values"], [0, 1])
    assert change["flag_meanings"] == "no_change change"
    assert probability["units"] == "1" and np.isnan(probability["_FillValue"])
    np.testing.assert_array_equal(probability["valid_range"], [0.0, 1.0])
    assert palette(dataset["change"]) == CHANGE_PALETTE  # "no change" transparent


def test_semantic_outputs_carry_class_flags(scene_pair) -> None:
    from geochange.predict import ChangePredictor

    pre_path, post_path, _, _ = scene_pair
    names = ["building", "bare land", "tree"]
    predictor = ChangePredictor(TinyConvChange(semantic_classes=3), class_names=names, **EXACT)
    dataset = predictor.predict_xarray(
        rioxarray.open_rasterio(pre_path), rioxarray.open_rasterio(post_path)
    )
    attrs = dataset["semantic_post"].attrs
    np.testing.assert_array_equal(attrs["flag_values"], [0, 1, 2])
    assert attrs["flag_meanings"] == "building bare_land tree"
    words = dataset["transition"].attrs["flag_meanings"].split()
    assert "building_to_tree" in words and "no_change" in words
    assert len(words) == len(dataset["transition"].attrs["flag_values"])


def test_palette_survives_rio_to_raster(scene_pair, tmp_path: Path) -> None:
    pre_path, post_path, _, _ = scene_pair
    pre = rioxarray.open_rasterio(pre_path, chunks={"x": 128, "y": 128})
    post = rioxarray.open_rasterio(post_path, chunks={"x": 128, "y": 128})
    dataset = tiny_predictor().predict_xarray(pre, post)
    out = to_raster(dataset["change"], tmp_path / "change.tif", tiled=True)
    with rasterio.open(out) as ds, rasterio.open(pre_path) as src:
        assert ds.colormap(1)[1] == (*CHANGE_COLORS[1], 255)
        assert ds.colormap(1)[0] == (*CHANGE_COLORS[0], 255)
        assert ds.nodata == 255 and ds.crs == src.crs and ds.transform == src.transform
        np.testing.assert_array_equal(ds.read(1), dataset["change"].values)
    assert not list(tmp_path.glob(".*partial"))
