"""Prediction beyond one process (geochange.predict.distributed): Dask and xarray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.builders import whole_image
from tests.predict.helpers import read, tiny_predictor


def test_dask_local_cluster_equals_single_process(scene_pair, tmp_path: Path, monkeypatch) -> None:
    import geochange.predict.tiles as tiles_module

    distributed = pytest.importorskip("distributed")
    pre_path, post_path, _, _ = scene_pair
    predictor = tiny_predictor(batch_size=2)
    single = predictor.predict(pre_path, post_path, tmp_path / "single")
    # The same scene in column stripes (three or more with 128-px bands).
    monkeypatch.setattr(tiles_module, "MIN_STRIPE_TILES", 2)
    striped = tiny_predictor(batch_size=2, band_memory_mb=0.01)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        spread = predictor.predict(pre_path, post_path, tmp_path / "dask", client=client)
        spread_striped = striped.predict(pre_path, post_path, tmp_path / "dask_s", client=client)
    for result in (spread, spread_striped):
        np.testing.assert_array_equal(read(result.probability), read(single.probability))
        np.testing.assert_array_equal(read(result.change), read(single.change))
    assert spread_striped.tiles > spread.tiles  # the warm-up columns
    with rasterio.open(spread.change) as a, rasterio.open(single.change) as b:
        assert a.transform == b.transform and a.crs == b.crs


def test_predict_xarray_matches_files_and_keeps_georeferencing(scene_pair, monkeypatch) -> None:
    import geochange.predict.tiles as tiles_module

    rioxarray = pytest.importorskip("rioxarray")
    pre_path, post_path, pre, post = scene_pair
    pre_da = rioxarray.open_rasterio(pre_path, chunks={"x": 100, "y": 100})
    post_da = rioxarray.open_rasterio(post_path, chunks={"x": 100, "y": 100})
    predictor = tiny_predictor()
    dataset = predictor.predict_xarray(pre_da, post_da)
    reference, _, _ = whole_image(predictor.model, pre, post)
    np.testing.assert_allclose(dataset["probability"].values, reference, atol=1e-5)
    np.testing.assert_array_equal(dataset["change"].values, (reference >= 0.5).astype(np.uint8))
    assert dataset.rio.crs == pre_da.rio.crs
    assert dataset.rio.transform() == pre_da.rio.transform()
    np.testing.assert_array_equal(dataset["x"].values, pre_da["x"].values)
    # Column stripes assemble the in-memory arrays identically.
    monkeypatch.setattr(tiles_module, "MIN_STRIPE_TILES", 2)
    striped = tiny_predictor(band_memory_mb=0.01).predict_xarray(pre_da, post_da)
    for key in ("probability", "change"):
        np.testing.assert_array_equal(striped[key].values, dataset[key].values)
