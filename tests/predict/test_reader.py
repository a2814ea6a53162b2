"""Reading a raster pair (geochange.predict.reader): warping to the pre grid, nodata, NaN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject

from geochange.errors import DataError
from geochange.predict import ChangePredictor
from tests.builders import DifferenceModel, TinyConvChange, write_raster
from tests.predict.helpers import exact_predictor, read


def test_post_in_other_crs_is_warped_onto_pre_grid(tmp_path: Path) -> None:
    # Pre image in UTM, post image reprojected to WGS84 with a changed square: the predictor must
    # warp it back and find the change where the scene says, with nodata outside its footprint.
    height, width = 200, 240
    rng = np.random.default_rng(3)
    base = rng.integers(90, 110, size=(3, height, width)).astype(np.float32)
    changed = base.copy()
    changed[:, 60:140, 80:180] += 200.0
    pre_transform = from_origin(500000.0, 4600000.0, 10.0, 10.0)
    pre_path = write_raster(tmp_path / "pre.tif", base, transform=pre_transform)
    dst_crs = "EPSG:4326"
    # Post covers the pre scene except its last 40 columns.
    src_w = width - 40
    left, bottom = 500000.0, 4600000.0 - 10 * height
    right, top = 500000.0 + 10 * src_w, 4600000.0
    transform, w, h = calculate_default_transform(
        "EPSG:32631", dst_crs, src_w, height, left, bottom, right, top
    )
    post = np.full((3, h, w), -9999.0, dtype=np.float32)
    for band in range(3):
        reproject(
            changed[band, :, :src_w],
            post[band],
            src_transform=pre_transform,
            src_crs="EPSG:32631",
            dst_transform=transform,
            dst_crs=dst_crs,
            dst_nodata=-9999.0,
            resampling=Resampling.nearest,
        )
    post_path = write_raster(
        tmp_path / "post.tif", post, crs=dst_crs, transform=transform, nodata=-9999.0
    )
    predictor = ChangePredictor(
        DifferenceModel(),
        tile_size=64,
        overlap=16,
        precision="fp32",
        num_workers=0,
        progress=False,
        size_divisor=1,
    )
    result = predictor.predict(pre_path, post_path, tmp_path / "out")
    change = read(result.change)
    with rasterio.open(result.change) as ds:
        assert ds.crs == rasterio.crs.CRS.from_string("EPSG:32631")
        assert ds.transform == pre_transform and ds.shape == (height, width)
    truth = np.zeros((height, width), dtype=bool)
    truth[60:140, 80:180] = True
    inner = (slice(2, height - 2), slice(2, src_w - 2))
    assert np.all(change[:, src_w + 1 :] == 255)  # outside the post footprint
    agree = change[inner] == truth[inner]
    assert agree.mean() > 0.99


def test_nodata_in_either_date_is_nodata(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    pre = rng.integers(1, 255, size=(3, 100, 120)).astype(np.uint8)
    post = pre.copy()
    pre[:, :10, :] = 0
    post[:, :, 100:] = 0
    pre_path = write_raster(tmp_path / "pre.tif", pre, nodata=0)
    post_path = write_raster(tmp_path / "post.tif", post, nodata=0)
    result = exact_predictor(DifferenceModel(), normalization=None).predict(
        pre_path, post_path, tmp_path / "out"
    )
    change, probability = read(result.change), read(result.probability)
    assert np.all(change[:10] == 255) and np.all(change[:, 100:] == 255)
    assert np.all(np.isnan(probability[:10]))
    assert np.all(change[10:, :100] == 0)


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf])
def test_nan_hole_without_nodata_tag_is_nodata_and_stays_local(tmp_path: Path, fill) -> None:
    # One 512 x 512 tile of float32 imagery without a nodata tag, with a 16 x 16 hole of NaN
    # (or +-inf) in one band of the pre image.
    rng = np.random.default_rng(11)
    pre = rng.uniform(0, 1000, size=(3, 512, 512)).astype(np.float32)
    post = pre.copy()
    post[:, 100:220, 300:420] = rng.uniform(0, 1000, size=(3, 120, 120))
    holed = pre.copy()
    holed[1, 250:266, 250:266] = fill
    clean_path = write_raster(tmp_path / "pre.tif", pre)
    holed_path = write_raster(tmp_path / "pre_hole.tif", holed)
    post_path = write_raster(tmp_path / "post.tif", post)
    options = {"tile_size": 512, "overlap": 32}
    model = TinyConvChange()
    clean = exact_predictor(model, **options).predict(clean_path, post_path, tmp_path / "clean")
    result = exact_predictor(model, **options).predict(holed_path, post_path, tmp_path / "hole")
    change, probability = read(result.change), read(result.probability)
    hole = np.zeros((512, 512), dtype=bool)
    hole[250:266, 250:266] = True
    assert np.all(change[hole] == 255) and np.all(np.isnan(probability[hole]))
    # Every other pixel is predicted: finite probability, 0/1 change, and both classes occur.
    assert np.all(np.isfinite(probability[~hole])) and set(np.unique(change[~hole])) == {0, 1}
    # TinyConvChange sees 2 pixels around each output pixel (two 3x3 convolutions): pixels
    # more than 2 pixels from the hole equal the prediction on the image without the hole.
    margin = 2
    near = np.zeros_like(hole)
    near[250 - margin : 266 + margin, 250 - margin : 266 + margin] = True
    np.testing.assert_array_equal(probability[~near], read(clean.probability)[~near])
    np.testing.assert_array_equal(change[~near], read(clean.change)[~near])


@pytest.mark.parametrize("overviews", [False, True], ids=["whole-read", "overview"])
def test_all_nodata_image_is_refused_before_any_work(tmp_path: Path, overviews: bool) -> None:
    """A date whose every pixel is nodata is a DataError naming it, before anything is written."""
    from geochange.predict.reader import RasterPair

    valid = np.full((3, 300, 200), 50, np.uint16)
    empty = write_raster(tmp_path / "empty.tif", np.zeros_like(valid), nodata=0)
    good = write_raster(tmp_path / "good.tif", valid, nodata=0)
    if overviews:
        with rasterio.open(empty, "r+") as ds:
            ds.build_overviews([2, 4])
    with pytest.raises(DataError, match=r"empty\.tif.* no valid pixel.*nodata 0"):
        RasterPair.open(empty, good)
    with pytest.raises(DataError, match=r"empty\.tif.* no valid pixel"):
        RasterPair.open(good, empty)
    partly = np.zeros_like(valid)
    partly[:, 290:, 190:] = 7  # one valid corner is enough
    RasterPair.open(write_raster(tmp_path / "partly.tif", partly, nodata=0), good)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("uint8", np.uint8), ("int16", np.int16), ("uint16", np.float32), ("float32", np.float32)],
)
def test_tiles_are_read_in_small_integer_dtypes(tmp_path: Path, dtype, expected) -> None:
    """uint8/int8/int16 tiles keep their dtype (exact in float32); others are read as float32."""
    from geochange.predict.reader import RasterPair

    rng = np.random.default_rng(0)
    data = rng.integers(1, 120, size=(2, 40, 50)).astype(dtype)
    pre = write_raster(tmp_path / "pre.tif", data, nodata=0)
    post = write_raster(tmp_path / "post.tif", data[::-1].copy(), nodata=0)
    pair = RasterPair.open(pre, post)
    try:
        image, valid = pair.read(rasterio.windows.Window(5, 3, 32, 24))
    finally:
        pair.close()
    assert image.dtype == expected and image.shape == (2, 2, 24, 32)
    assert valid.all()
    np.testing.assert_array_equal(image[0], data[:, 3:27, 5:37].astype(expected))
    np.testing.assert_array_equal(image[1], data[::-1, 3:27, 5:37].astype(expected))


def test_warped_post_is_read_as_float32(tmp_path: Path) -> None:
    """A date warped onto the pre grid is resampled for a float32 buffer, whatever its dtype."""
    from geochange.predict.reader import RasterPair

    data = np.full((3, 40, 40), 50, dtype=np.uint8)
    pre = write_raster(tmp_path / "pre.tif", data)
    shifted = from_origin(500005.0, 4600000.0, 10.0, 10.0)
    post = write_raster(tmp_path / "post.tif", data, transform=shifted)
    pair = RasterPair.open(pre, post)
    try:
        assert pair.warp_post and not pair.warp_pre
        image, _ = pair.read(rasterio.windows.Window(0, 0, 16, 16))
    finally:
        pair.close()
    assert image.dtype == np.float32


def test_an_internal_mask_band_without_nodata_marks_nodata(tmp_path: Path) -> None:
    # No nodata value, but a GDAL mask band: the dataset mask must still be read (only files
    # with no nodata, mask or alpha band skip it).
    rng = np.random.default_rng(6)
    pre = rng.integers(1, 255, size=(3, 100, 120)).astype(np.uint8)
    pre_path = write_raster(tmp_path / "pre.tif", pre)
    post_path = write_raster(tmp_path / "post.tif", pre.copy())
    mask = np.full((100, 120), 255, dtype=np.uint8)
    mask[:, :30] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(pre_path, "r+") as ds:
        ds.write_mask(mask)
    with rasterio.open(pre_path) as ds:
        assert ds.nodata is None and ds.mask_flag_enums[0] != [rasterio.enums.MaskFlags.all_valid]
    result = exact_predictor(DifferenceModel(), normalization=None).predict(
        pre_path, post_path, tmp_path / "out"
    )
    change = read(result.change)
    assert np.all(change[:, :30] == 255) and np.all(change[:, 30:] == 0)
