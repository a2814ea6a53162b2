"""The direct read of aligned windows (geochange.datasets._direct) and the scene-sized cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from geochange.datasets import BiTemporalRasterDataset, _direct
from geochange.datasets._layers import RasterFile, RasterLayer, TargetGrid
from tests.builders import ORIGIN, Pair, write_tif

X0, Y0 = ORIGIN


def _query(col: int, row: int, size: int) -> tuple[slice, slice]:
    return slice(X0 + col, X0 + col + size), slice(Y0 - row - size, Y0 - row)


def _general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every read take the general (fill, paste, stack) path."""
    monkeypatch.setattr("geochange.datasets.geo.direct_window", lambda *_: None)


def _forbid_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the general read path was taken")

    monkeypatch.setattr(RasterLayer, "read", refuse)


@pytest.mark.parametrize(("col", "row", "size"), [(0, 0, 64), (90, 30, 64), (13, 171, 85)])
def test_direct_read_equals_plain_rasterio_read(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, col: int, row: int, size: int
) -> None:
    ds = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change)
    _forbid_general_path(monkeypatch)
    sample = ds[_query(col, row, size)]
    window = Window(col, row, size, size)
    with rasterio.open(pair.pre) as pre, rasterio.open(pair.post) as post:
        expected = np.stack([pre.read(window=window), post.read(window=window)])
    with rasterio.open(pair.change) as change:
        expected_mask = change.read(1, window=window)
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (2, 3, size, size)
    np.testing.assert_array_equal(sample["image"].numpy(), expected.astype(np.float32))
    assert sample["mask"].dtype == torch.long
    np.testing.assert_array_equal(sample["mask"].numpy(), expected_mask.astype(np.int64))
    assert sample["bounds"].tolist()[:6] == [
        X0 + col, X0 + col + size, 1.0, Y0 - row - size, Y0 - row, 1.0
    ]  # fmt: skip


def _samples_both_ways(
    ds: BiTemporalRasterDataset, monkeypatch: pytest.MonkeyPatch, queries: list[tuple[slice, slice]]
) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    direct = [ds[q] for q in queries]
    with monkeypatch.context() as patch:
        _general_path(patch)
        general = [ds[q] for q in queries]
    return direct, general


def test_direct_read_equals_general_path_with_nodata_nan_and_semantic_labels(
    pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pre = pair.pre_array.astype(np.float32)
    pre[:, :10, :] = -1.0  # nodata in every band
    pre[1, 40:43, 50:52] = np.nan
    pre[2, 60, 70] = np.inf
    post = pair.post_array.astype(np.int16)
    post[:, 100:104, :] = 7  # the post image's nodata
    ds = BiTemporalRasterDataset(
        write_tif(tmp_path / "pre.tif", pre, nodata=-1.0),
        write_tif(tmp_path / "post.tif", post, nodata=7),
        change=pair.change,
        semantic_pre=pair.semantic_pre,
        semantic_post=pair.semantic_post,
    )
    queries = [_query(0, 0, 128), _query(40, 90, 64), _query(128, 128, 128)]
    direct, general = _samples_both_ways(ds, monkeypatch, queries)
    assert (direct[0]["mask"][:10] == 255).all() and (direct[0]["mask"][40:43, 50:52] == 255).all()
    assert (direct[1]["mask_pre"][10:14] == 255).all()
    for fast, plain in zip(direct, general, strict=True):
        assert fast.keys() == plain.keys()
        for key in fast:
            assert fast[key].dtype == plain[key].dtype
            assert torch.equal(fast[key], plain[key]), key
    # read_window still reports the validity of every pixel.
    arrays = ds.read_window((X0, Y0 - 128, X0 + 128, Y0))
    assert arrays["valid"].shape == (128, 128) and not arrays["valid"][:10].any()
    assert arrays["valid"][20:30].all()


def test_windows_off_the_direct_path_are_read_as_before(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change)
    layer = ds.pre
    assert _direct.direct_window(layer, (X0 + 200, Y0 - 64, X0 + 264, Y0), (1.0, 1.0)) is None
    assert _direct.direct_window(layer, (X0 + 0.5, Y0 - 64, X0 + 64.5, Y0), (1.0, 1.0)) is None
    assert _direct.direct_window(layer, (X0, Y0 - 64, X0 + 64, Y0), (2.0, 2.0)) is None
    assert _direct.direct_window(layer, (X0, Y0 - 64, X0 + 64, Y0), (1.0, 1.0)) == Window(
        0, 0, 64, 64
    )
    # A window partly outside the scene: filled and ignored exactly like the general path.
    queries = [_query(200, 10, 64), _query(10, 220, 64)]
    direct, general = _samples_both_ways(ds, monkeypatch, queries)
    for fast, plain in zip(direct, general, strict=True):
        for key in fast:
            assert torch.equal(fast[key], plain[key]), key
    assert (direct[0]["mask"][:, 56:] == 255).all()


def _layer(nbytes: int) -> RasterLayer:
    info = RasterFile(Path("x.tif"), [1], None, False, (0.0, 0.0, 1.0, 1.0), "uint8", nbytes)
    return RasterLayer("pre", [info], TargetGrid(None, (1.0, 1.0), (0.0, 0.0)), 0)  # type: ignore[arg-type]


def test_scene_cache_holds_a_scene_that_fits_the_gdal_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_direct, "gdal_default_cache_mb", lambda: 1200)
    # An 8192 x 8192 RGB pair plus its change mask (467 MiB decoded): cached whole, the
    # 256 MiB it had before was thrashed by random windows (every read decoded its tiles).
    pair_mb = [_layer(8192 * 8192 * 3), _layer(8192 * 8192 * 3), _layer(8192 * 8192)]
    cache = _direct.scene_cache_mb(pair_mb)
    assert 448 * 1.1 < cache <= 448 * 1.1 + 17
    # A scene far beyond the budget keeps the bounded cache; a small one keeps the floor.
    assert _direct.scene_cache_mb([_layer(48000 * 32500 * 3)] * 2) == 256
    assert _direct.scene_cache_mb([_layer(2048 * 2048 * 3), None]) == 256


def test_dataset_cache_setting(pair: Pair) -> None:
    assert BiTemporalRasterDataset(pair.pre, pair.post).gdal_cache_mb == 256
    ds = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change, gdal_cache_mb=64)
    assert ds.gdal_cache_mb == 64 and ds.pre.gdal_cache_mb == ds.change.gdal_cache_mb == 64
    assert ds.pre.files[0].nbytes == 256 * 256 * 3
