"""Every engine (torch, OpenVINO, ONNX Runtime) through the whole predictor: same mosaics."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

import geochange.predict.engines.export as export_module
from geochange.predict import ChangePredictor
from tests.builders import TinyConvBNChange, TinyConvChange, whole_image, write_raster
from tests.predict.engines.conftest import ENGINE_PARAMS
from tests.predict.helpers import EXACT, read


def predictor(model: torch.nn.Module, engine: str, **kwargs) -> ChangePredictor:
    return ChangePredictor(model, **{**EXACT, "batch_size": 3, "engine": engine, **kwargs})


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_binary_mosaic_equals_the_whole_image_reference(scene_pair, engine: str) -> None:
    pre_path, post_path, pre, post = scene_pair
    model = TinyConvBNChange()
    p = predictor(model, engine)
    result = p.predict(pre_path, post_path, pre_path.parent / f"out_{engine}")
    reference, _, _ = whole_image(model, pre, post)
    np.testing.assert_allclose(read(result.probability), reference, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(read(result.change), (reference >= 0.5).astype(np.uint8))
    assert p._inferencer.folded_batchnorms == 1
    assert p.precision == "fp32" and p.engine == engine


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
@pytest.mark.parametrize("tta", [False, True], ids=["plain", "tta"])
def test_semantic_model_and_tta_match_the_torch_engine(scene_pair, engine: str, tta: bool) -> None:
    pre_path, post_path, _, _ = scene_pair
    model = TinyConvChange(semantic_classes=3)
    reference = predictor(model, "torch", tta=tta).predict(
        pre_path, post_path, pre_path.parent / f"ref_{tta}"
    )
    result = predictor(model, engine, tta=tta).predict(
        pre_path, post_path, pre_path.parent / f"out_{engine}_{tta}"
    )
    np.testing.assert_allclose(read(result.probability), read(reference.probability), atol=1e-5)
    for key in ("semantic_pre", "semantic_post", "transition"):
        a, b = read(getattr(result, key)), read(getattr(reference, key))
        assert a.shape == (173, 251)
        assert np.mean(a == b) > 0.999  # arg-max ties of float rounding aside
    with rasterio.open(result.change) as a, rasterio.open(reference.change) as b:
        assert a.crs == b.crs and a.transform == b.transform


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_dask_workers_equal_a_single_process(scene_pair, tmp_path: Path, engine: str) -> None:
    distributed = pytest.importorskip("distributed")
    pre_path, post_path, _, _ = scene_pair
    p = predictor(TinyConvBNChange(), engine, batch_size=2)
    single = p.predict(pre_path, post_path, tmp_path / "single")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        spread = p.predict(pre_path, post_path, tmp_path / "dask", client=client)
    np.testing.assert_allclose(read(spread.probability), read(single.probability), atol=1e-6)
    np.testing.assert_array_equal(read(spread.change), read(single.change))


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_predict_xarray_with_every_engine(scene_pair, engine: str) -> None:
    rioxarray = pytest.importorskip("rioxarray")
    pre_path, post_path, pre, post = scene_pair
    pre_da = rioxarray.open_rasterio(pre_path, chunks={"x": 100, "y": 100})
    post_da = rioxarray.open_rasterio(post_path, chunks={"x": 100, "y": 100})
    model = TinyConvBNChange()
    dataset = predictor(model, engine).predict_xarray(pre_da, post_da)
    reference, _, _ = whole_image(model, pre, post)
    np.testing.assert_allclose(dataset["probability"].values, reference, atol=1e-5)
    assert dataset.rio.crs == pre_da.rio.crs


@pytest.mark.parametrize("engine", [p for p in ENGINE_PARAMS if p.values[0] != "torch"])
def test_a_pickled_engine_compiles_from_the_cache_without_exporting(
    engine: str, monkeypatch
) -> None:
    p = predictor(TinyConvBNChange(), engine)
    x = torch.rand(3, 2, 3, 64, 64) * 1000
    first = p._inferencer(x)
    assert p._inferencer.engine.entries  # the exported entry, by input shape
    copy = pickle.loads(pickle.dumps(p._inferencer))
    assert copy.engine._compiled == {} and copy.engine.folded_batchnorms is None

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(export_module, "export_onnx", no_export)
    # A partial batch is padded to the compiled batch of 3.
    np.testing.assert_allclose(copy(x), first, atol=1e-6)
    np.testing.assert_allclose(copy(x[:1]), first[:1], atol=1e-6)
    # The same weights in a new predictor find the entry too.
    again = predictor(TinyConvBNChange(), engine)
    np.testing.assert_allclose(again._inferencer(x), first, atol=1e-6)


@pytest.mark.parametrize("engine", [p for p in ENGINE_PARAMS if p.values[0] != "torch"])
@pytest.mark.parametrize("per_date", [False, True], ids=["per-band", "per-date"])
def test_raw_uint8_tiles_are_normalized_inside_the_graph(
    tmp_path: Path, engine: str, per_date: bool
) -> None:
    rng = np.random.default_rng(3)
    pre = rng.integers(0, 256, (3, 150, 170)).astype(np.uint8)
    post = pre.copy()
    post[:, 30:80, 40:120] = rng.integers(0, 256, (3, 50, 80))
    pre_path = write_raster(tmp_path / "pre.tif", pre)
    post_path = write_raster(tmp_path / "post.tif", post)
    norm = {"mean": [100.0, 120.0, 90.0], "std": [60.0, 50.0, 70.0]}
    # 48-px tiles padded to the size divisor of 32: the padding is done on the raw uint8 tiles.
    options = {"normalization": norm, "tile_size": 48, "size_divisor": 32}
    model = TinyConvBNChange()
    runs = {}
    for name in ("torch", engine):
        runs[name] = predictor(model, name, **options)
        if per_date:  # what value_range="rescale" makes of a date rescaled by 1/2
            runs[name]._inferencer.normalization = {
                key: [values, [v / 2 for v in values]] for key, values in norm.items()
            }
    reference = runs["torch"].predict(pre_path, post_path, tmp_path / "t")
    p = runs[engine]
    result = p.predict(pre_path, post_path, tmp_path / engine)
    np.testing.assert_allclose(read(result.probability), read(reference.probability), atol=1e-5)
    assert np.mean(read(result.change) == read(reference.change)) > 0.999
    # The engine got the uint8 tiles themselves (one entry, of the uint8 input kind).
    assert [kind for _, kind in p._inferencer.engine.entries] == ["uint8"]


@pytest.mark.parametrize("engine", [p for p in ENGINE_PARAMS if p.values[0] == "openvino"])
def test_two_openvino_streams_give_the_one_stream_mosaic(
    scene_pair, tmp_path: Path, engine: str, monkeypatch
) -> None:
    from geochange.predict.engines.openvino_engine import OpenVINOEngine

    pre_path, post_path, _, _ = scene_pair
    model = TinyConvBNChange()
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        p = predictor(model, engine, batch_size=2)
        assert p._inferencer.engine.concurrency == 2
        assert p._inferencer.engine.compile_config()["NUM_STREAMS"] == 2
        two = p.predict(pre_path, post_path, tmp_path / "two")
        monkeypatch.setattr(OpenVINOEngine, "concurrency", property(lambda self: 1))
        one = predictor(model, engine, batch_size=2).predict(pre_path, post_path, tmp_path / "one")
    finally:
        torch.set_num_threads(previous)
    # Batches in flight at once, but each in submission order into the same mosaic.
    np.testing.assert_allclose(read(two.probability), read(one.probability), atol=1e-6)
    assert np.mean(read(two.change) == read(one.change)) > 0.9999
