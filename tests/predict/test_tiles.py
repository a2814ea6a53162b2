"""Tiles of a prediction (geochange.predict.tiles): column stripes are bit-identical."""

from __future__ import annotations

import numpy as np
import pytest

from geochange.predict import TileGrid
from tests.builders import TinyConvChange, write_raster
from tests.predict.helpers import exact_predictor, read


@pytest.mark.parametrize("semantic_blend", [None, "probability", "center"])
def test_column_stripes_are_bit_identical(scene_pair, monkeypatch, semantic_blend) -> None:
    """A small band budget splits the scene into stripes without changing any pixel."""
    import geochange.predict.tiles as tiles_module

    pre_path, post_path, _, _ = scene_pair
    options = {} if semantic_blend is None else {"semantic_blend": semantic_blend}
    model = TinyConvChange(semantic_classes=0 if semantic_blend is None else 3, seed=1)
    whole = exact_predictor(model, **options).predict(pre_path, post_path, pre_path.parent / "w")
    monkeypatch.setattr(tiles_module, "MIN_STRIPE_TILES", 2)
    striped = exact_predictor(model, band_memory_mb=0.01, **options)
    grid = TileGrid(173, 251, 64, 16, 4)
    channels = 1 if semantic_blend is None else 7
    stripes = striped._stripes(grid, channels, 0 if semantic_blend is None else 3)
    assert len(stripes) >= 3
    result = striped.predict(pre_path, post_path, pre_path.parent / "s")
    warmup = sum(s.warmup for s in stripes) * len(grid.row_starts)
    assert result.tiles == whole.tiles + warmup
    keys = ["probability", "change"]
    if semantic_blend is not None:
        keys += ["semantic_pre", "semantic_post", "transition"]
    for key in keys:
        np.testing.assert_array_equal(
            read(getattr(result, key)), read(getattr(whole, key)), err_msg=key
        )


def _small_int_pair(tmp_path, dtype: str) -> tuple:
    """A 3-band 150 x 201 pair in ``dtype`` with a nodata hole and an all-nodata tile row."""
    rng = np.random.default_rng(7)
    low, high = (-300, 300) if dtype == "int16" else (1, 250)
    pre = rng.integers(low, high, size=(3, 150, 201)).astype(dtype)
    post = pre.copy()
    post[:, 30:80, 60:140] = rng.integers(low, high, size=(3, 50, 80)).astype(dtype)
    post[:, 100:, :] = 0  # nodata below row 100: whole batches without a valid pixel
    pre[:, 10:20, 10:30] = 0
    return (
        write_raster(tmp_path / f"pre_{dtype}.tif", pre, nodata=0),
        write_raster(tmp_path / f"post_{dtype}.tif", post, nodata=0),
    )


@pytest.mark.parametrize("dtype", ["uint8", "int16"])
def test_pipelined_native_dtype_run_is_bit_identical_to_serial_float32(
    tmp_path, monkeypatch, dtype
) -> None:
    """Double-buffered batches and tiles read in the files' dtype change no output pixel.

    The reference is the earlier pipeline: one batch at a time, tiles read as float32.
    """
    import geochange.predict.reader as reader_module
    import geochange.predict.tiles as tiles_module

    pre, post = _small_int_pair(tmp_path, dtype)
    norm = {"mean": [100.0, 90.0, 80.0], "std": [50.0, 60.0, 70.0]}
    model = TinyConvChange(semantic_classes=3, seed=2)
    options = {"normalization": norm, "batch_size": 2}
    fast = exact_predictor(model, **options).predict(pre, post, tmp_path / "fast")
    monkeypatch.setattr(tiles_module, "PIPELINE_DEPTH", 1)
    monkeypatch.setattr(reader_module, "NATIVE_TILE_DTYPES", frozenset())
    serial = exact_predictor(model, **options).predict(pre, post, tmp_path / "serial")
    assert fast.tiles == serial.tiles > 0
    for key in ["probability", "change", "semantic_pre", "semantic_post", "transition"]:
        a, b = read(getattr(fast, key)), read(getattr(serial, key))
        assert a.shape == (150, 201)
        np.testing.assert_array_equal(a, b, err_msg=key)
    assert np.isnan(read(fast.probability)[120:]).all()  # the nodata rows stay nodata
