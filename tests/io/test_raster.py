"""geochange.io.raster: COG finalization, truncated GeoTIFFs, the change-mask convention."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geochange.io import TILED_GTIFF_OPTIONS, finalize_cog, overview_factors


def test_finalize_cog_keeps_georeferencing_and_adds_overviews(tmp_path):
    tiled = tmp_path / "tiled.tif"
    transform = from_origin(500000, 4000000, 0.6, 0.6)
    data = (np.arange(1024 * 768) % 251).astype("uint8").reshape(768, 1024)
    profile = dict(
        TILED_GTIFF_OPTIONS,
        height=768,
        width=1024,
        count=1,
        dtype="uint8",
        crs="EPSG:32650",
        transform=transform,
        nodata=255,
    )
    with rasterio.open(tiled, "w", **profile) as ds:
        ds.write(data[:512], 1, window=((0, 512), (0, 1024)))
        ds.write(data[512:], 1, window=((512, 768), (0, 1024)))
        ds.update_tags(class_names="a,b")
    out = finalize_cog(tiled, tmp_path / "out.tif")
    assert not tiled.exists()
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 32650
        assert ds.transform == transform
        assert ds.nodata == 255
        assert ds.overviews(1) == overview_factors(768, 1024) == [2]
        assert ds.profile["tiled"] and ds.tags()["class_names"] == "a,b"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        np.testing.assert_array_equal(ds.read(1), data)


@pytest.mark.parametrize("interleave", ["pixel", "band"])
def test_truncated_geotiff_is_detected_without_reading_pixels(tmp_path, interleave):
    from geochange.errors import DataError
    from geochange.io import open_raster

    profile = dict(
        TILED_GTIFF_OPTIONS,
        height=600,
        width=300,
        count=3,
        dtype="uint16",
        crs="EPSG:32650",
        transform=from_origin(500000, 4000000, 1, 1),
        interleave=interleave,
        blockxsize=128,
        blockysize=128,
        sparse_ok=True,
    )
    path = tmp_path / "image.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as ds:
        # Band 3 of the last block row is never written (sparse): not a truncation.
        ds.write(rng.integers(0, 999, (2, 600, 300)).astype("uint16"), [1, 2])
        ds.write(rng.integers(0, 999, (512, 300)).astype("uint16"), 3, window=((0, 512), (0, 300)))
    open_raster(path).close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(DataError, match=r"is truncated: it has \d+ bytes but its image data"):
        open_raster(path)


def _mask_file(path, array, *, nodata=None, block=64, tags=None):
    profile = dict(
        driver="GTiff",
        height=array.shape[0],
        width=array.shape[1],
        count=1,
        dtype=array.dtype,
        crs="EPSG:32650",
        transform=from_origin(500000, 4000000, 1.0, 1.0),
        nodata=nodata,
        tiled=True,
        blockxsize=block,
        blockysize=block,
    )
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(array, 1)
        if tags:
            ds.update_tags(**tags)
    return path


def test_check_change_mask_decodes_the_convention(tmp_path) -> None:
    from geochange.errors import DataError
    from geochange.io import MASK_IGNORE, check_change_mask

    values = np.array([[0, 1, 255, 254]], dtype=np.uint8)
    plain = check_change_mask(_mask_file(tmp_path / "a.tif", values, nodata=254))
    assert plain.values == "0,1" and plain.nodata == 254
    np.testing.assert_array_equal(plain.decode(values), [[0, 1, MASK_IGNORE, MASK_IGNORE]])
    # The same decoding for wider types, and -1 is never wrapped to 255.
    np.testing.assert_array_equal(plain.decode(values.astype(np.int32)), plain.decode(values))
    with pytest.raises(DataError, match=r"a\.tif' holds values -1, 7 outside"):
        plain.decode(np.array([0, -1, 7], dtype=np.int16))
    # Pixels outside ``valid`` are ignore and not checked.
    valid = np.array([True, False, True])
    np.testing.assert_array_equal(plain.decode(np.array([1, 9, 0]), valid), [1, MASK_IGNORE, 0])
    # geochange's own change rasters (predictor, synthetic scenes) may hold only 0 and nodata.
    tag = {"GEOCHANGE_CLASS_NAMES": '["no change", "change"]'}
    empty = np.array([[0, 0, 255]], dtype=np.uint8)
    assert check_change_mask(_mask_file(tmp_path / "p.tif", empty, nodata=255, tags=tag))
    with pytest.raises(DataError, match="0/255"):
        check_change_mask(_mask_file(tmp_path / "u.tif", empty, nodata=255))


def test_check_change_mask_samples_large_rasters(tmp_path, monkeypatch) -> None:
    import geochange.io.raster
    from geochange.errors import DataError
    from geochange.io import check_change_mask
    from geochange.io.raster import _sample_band

    # 512 x 512 in 64 x 64 blocks: a budget of 16 blocks reads a 4 x 4 grid of whole blocks,
    # spread from the first to the last block row and column.
    index = np.arange(512 * 512, dtype=np.int32).reshape(512, 512)
    path = _mask_file(tmp_path / "index.tif", index)
    with rasterio.open(path) as ds:
        sample = _sample_band(ds, budget=16 * 64 * 64)
    assert sample.size == 16 * 64 * 64
    rows, cols = np.unique(sample // 512 // 64), np.unique(sample % 512 // 64)
    np.testing.assert_array_equal(rows, [0, 2, 5, 7])
    np.testing.assert_array_equal(cols, [0, 2, 5, 7])
    # A sampled 0/255 mask is refused; scattered bad values are found.
    monkeypatch.setattr(geochange.io.raster, "_MASK_SAMPLE_PIXELS", 16 * 64 * 64)
    levir = np.zeros((512, 512), dtype=np.uint8)
    levir[::16, ::16] = 255
    with pytest.raises(DataError, match=r"0/255 mask.* \(in a sample of 65536 pixels\)"):
        check_change_mask(_mask_file(tmp_path / "levir.tif", levir))
    assert check_change_mask(tmp_path / "levir.tif", mask_values="0,255").values == "0,255"
    levir[::16, ::16] = 128
    with pytest.raises(DataError, match=r"holds value 128 outside"):
        check_change_mask(_mask_file(tmp_path / "bad.tif", levir))
    # A sparse 0/255 mask whose sample holds only 0 stays undecided: a block with 255 but no
    # 1 raises the same error when read, instead of being read as "ignore".
    sparse = np.zeros((512, 512), dtype=np.uint8)
    sparse[100:110, 100:110] = 255  # block row 1, column 1: not sampled
    mask = check_change_mask(_mask_file(tmp_path / "sparse.tif", sparse))
    assert not mask.confirmed
    np.testing.assert_array_equal(mask.decode(sparse[:64, :64]), 0)
    with pytest.raises(DataError, match=r"0/255 mask.* \(in a block of 4096 pixels\)"):
        mask.decode(sparse[64:128, 64:128])
    # A block with change confirms the reading 255 = ignore there.
    sparse[120, 120] = 1
    np.testing.assert_array_equal(np.unique(mask.decode(sparse[64:128, 64:128])), [0, 1, 255])
    assert check_change_mask(tmp_path / "sparse.tif", mask_values="0,1").confirmed


@pytest.mark.parametrize("budget", [None, 4 * 16 * 16])
def test_check_change_mask_names_an_unreadable_block(tmp_path, monkeypatch, budget) -> None:
    import re

    import geochange.io.raster
    from geochange.errors import DataError
    from geochange.io import check_change_mask

    values = np.zeros((64, 64), np.uint8)
    values[40:60, 30:50] = 1
    path = tmp_path / "change.tif"
    profile = dict(
        driver="GTiff",
        height=64,
        width=64,
        count=1,
        dtype="uint8",
        crs="EPSG:32650",
        transform=from_origin(500000, 4000000, 1.0, 1.0),
        tiled=True,
        blockxsize=16,
        blockysize=16,
        compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(values, 1)
    with rasterio.open(path) as ds:  # zero the inside of the last block (rows 48-64)
        offset = int(ds.get_tag_item("BLOCK_OFFSET_3_3", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_3_3", "TIFF", bidx=1))
    data = bytearray(path.read_bytes())
    data[offset + 2 : offset + size - 2] = bytes(size - 4)
    path.write_bytes(bytes(data))
    if budget is not None:  # sampled: the 2 x 2 blocks read include the last one
        monkeypatch.setattr(geochange.io.raster, "_MASK_SAMPLE_PIXELS", budget)
    pattern = rf"cannot read {re.escape(repr(str(path)))} at rows 48-64, cols 48-64 \(corrupt"
    with pytest.raises(DataError, match=pattern):
        check_change_mask(path)
