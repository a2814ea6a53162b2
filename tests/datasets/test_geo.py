from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from rasterio.transform import from_origin
from rasterio.warp import Resampling, reproject
from torch.utils.data import DataLoader
from torchgeo.datasets import RasterDataset, roi_split, stack_samples
from torchgeo.samplers import GridGeoSampler, RandomBatchGeoSampler, RandomGeoSampler

from geochange.datasets import BiTemporalRasterDataset, spatial_split
from geochange.errors import ConfigurationError, DataError
from tests.builders import CRS, ORIGIN, Pair, make_pair, write_tif

warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchgeo")
X0, Y0 = ORIGIN


def window(col: int, row: int, size: int) -> tuple[slice, slice]:
    return slice(X0 + col, X0 + col + size), slice(Y0 - row - size, Y0 - row)


def test_sample_matches_files(pair: Pair) -> None:
    ds = BiTemporalRasterDataset(
        pair.pre,
        pair.post,
        change=pair.change,
        semantic_pre=pair.semantic_pre,
        semantic_post=pair.semantic_post,
    )
    assert ds.in_channels == 3 and ds.task == "semantic" and ds.res == (1.0, 1.0)
    assert ds.crs.to_epsg() == 32631
    sample = ds[window(90, 30, 64)]
    assert sample["image"].shape == (2, 3, 64, 64) and sample["image"].dtype == torch.float32
    np.testing.assert_array_equal(sample["image"][0].numpy(), pair.pre_array[:, 30:94, 90:154])
    np.testing.assert_array_equal(sample["image"][1].numpy(), pair.post_array[:, 30:94, 90:154])
    assert sample["mask"].dtype == torch.long
    np.testing.assert_array_equal(sample["mask"].numpy(), pair.change_array[30:94, 90:154])
    np.testing.assert_array_equal(sample["mask_pre"].numpy(), pair.sem_pre_array[30:94, 90:154])
    np.testing.assert_array_equal(sample["mask_post"].numpy(), pair.sem_post_array[30:94, 90:154])
    # Metadata as TorchGeo 0.10 returns it: bounds slice and affine transform.
    bounds = sample["bounds"].tolist()
    assert bounds[:6] == [X0 + 90, X0 + 154, 1.0, Y0 - 94, Y0 - 30, 1.0]
    assert sample["transform"].tolist()[:6] == [1.0, 0.0, X0 + 90, 0.0, -1.0, Y0 - 30]


def test_semantic_only_derives_change(pair: Pair) -> None:
    ds = BiTemporalRasterDataset(
        pair.pre, pair.post, semantic_pre=pair.semantic_pre, semantic_post=pair.semantic_post
    )
    sample = ds[window(0, 0, 256)]
    np.testing.assert_array_equal(sample["mask"].numpy(), pair.change_array)
    assert ds.class_names is not None and ds.class_names[0] == "building"


def test_partial_overlap_is_ignored(pair: Pair, tmp_path: Path) -> None:
    # Post shifted 100 px east: the first 100 columns have no post data.
    shifted = write_tif(
        tmp_path / "post_shift.tif",
        pair.post_array,
        transform=from_origin(X0 + 100, Y0, 1.0, 1.0),
    )
    ds = BiTemporalRasterDataset(pair.pre, shifted, change=pair.change)
    assert ds.index.geometry.iloc[0].bounds == (X0 + 100, Y0 - 256, X0 + 256, Y0)
    sample = ds[window(50, 0, 128)]
    mask = sample["mask"].numpy()
    assert (mask[:, :50] == 255).all()
    np.testing.assert_array_equal(mask[:, 50:], pair.change_array[:128, 100:178])
    assert (sample["image"][:, :, :, :50] == 0).all()
    np.testing.assert_array_equal(
        sample["image"][1, :, :, 50:].numpy(), pair.post_array[:, :128, :78]
    )
    # A window hanging off the scene edge is padded and ignored too.
    edge = ds[window(200, 200, 128)]
    assert edge["image"].shape == (2, 3, 128, 128)
    assert (edge["mask"][56:, :] == 255).all() and (edge["mask"][:, 56:] == 255).all()


def test_nodata_is_ignored(pair: Pair, tmp_path: Path) -> None:
    pre = pair.pre_array.copy()
    pre[:, :10, :] = 0
    nodata_pre = write_tif(tmp_path / "pre_nodata.tif", pre, nodata=0)
    ds = BiTemporalRasterDataset(nodata_pre, pair.post, change=pair.change)
    sample = ds[window(0, 0, 64)]
    assert (sample["mask"][:10] == 255).all()
    assert (sample["mask"][10:] != 255).all()
    assert (sample["image"][:, :, :10] == 0).all()


def test_nonfinite_pixels_are_nodata_without_nodata_tag(pair: Pair, tmp_path: Path) -> None:
    pre = pair.pre_array.astype(np.float32)
    pre[0, 5:8, 5:8] = np.nan
    pre[2, 20:22, 30:33] = np.inf
    pre[1, 40, 40] = -np.inf
    float_pre = write_tif(tmp_path / "pre_float.tif", pre)
    ds = BiTemporalRasterDataset(float_pre, pair.post, change=pair.change)
    sample = ds[window(0, 0, 64)]
    bad = np.zeros((64, 64), dtype=bool)
    bad[5:8, 5:8] = bad[20:22, 30:33] = bad[40, 40] = True
    mask = sample["mask"].numpy()
    assert (mask[bad] == 255).all()
    np.testing.assert_array_equal(mask[~bad], pair.change_array[:64, :64][~bad])
    image = sample["image"].numpy()
    assert np.isfinite(image).all() and (image[:, :, bad] == 0).all()


def _smooth(size: int) -> np.ndarray:
    rows, cols = np.mgrid[0:size, 0:size]
    return np.stack([rows * 0.5 + 10, cols * 0.5 + 20, (rows + cols) * 0.25 + 5]).astype(np.float32)


def test_post_in_other_resolution_is_warped(tmp_path: Path) -> None:
    image = _smooth(256)
    pre = write_tif(tmp_path / "pre.tif", image)
    coarse = image.reshape(3, 128, 2, 128, 2).mean(axis=(2, 4))
    post = write_tif(tmp_path / "post.tif", coarse, transform=from_origin(X0, Y0, 2.0, 2.0))
    ds = BiTemporalRasterDataset(pre, post)
    assert ds.post.files[0].warp and not ds.pre.files[0].warp
    sample = ds[window(64, 64, 64)]
    assert sample["image"].shape == (2, 3, 64, 64)
    # Bilinear upsampling of a linear ramp: within half a coarse pixel step.
    np.testing.assert_allclose(sample["image"][1], sample["image"][0], atol=0.6)


def test_post_in_other_crs_is_warped(tmp_path: Path) -> None:
    image = _smooth(256)
    pre = write_tif(tmp_path / "pre.tif", image)
    dst_crs = "EPSG:4326"
    from rasterio.warp import calculate_default_transform

    transform, width, height = calculate_default_transform(
        CRS, dst_crs, 256, 256, X0, Y0 - 256, X0 + 256, Y0
    )
    out = np.zeros((3, height, width), dtype=np.float32)
    reproject(
        image,
        out,
        src_transform=from_origin(X0, Y0, 1, 1),
        src_crs=CRS,
        dst_transform=transform,
        dst_crs=dst_crs,
        resampling=Resampling.bilinear,
        dst_nodata=-1,
    )
    post = write_tif(tmp_path / "post.tif", out, transform=transform, crs=dst_crs, nodata=-1)
    ds = BiTemporalRasterDataset(pre, post)
    assert ds.crs.to_epsg() == 32631
    sample = ds[window(64, 64, 128)]
    np.testing.assert_allclose(sample["image"][1], sample["image"][0], atol=1.5)
    assert (sample["mask"] if "mask" in sample else None) is None


def test_vector_change_matches_raster(pair: Pair) -> None:
    raster = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change)
    vector = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change_vector)
    for col, row in [(0, 0), (90, 30), (192, 192)]:
        a = raster[window(col, row, 64)]["mask"]
        b = vector[window(col, row, 64)]["mask"]
        assert torch.equal(a, b)
    assert int(vector[window(0, 0, 256)]["mask"].sum()) == int(pair.change_array.sum())


def test_vector_semantic_with_class_names(pair: Pair) -> None:
    ds = BiTemporalRasterDataset(
        pair.pre,
        pair.post,
        semantic_pre=pair.semantic_pre,
        semantic_post=pair.semantic_vector,
    )
    sample = ds[window(0, 0, 256)]
    np.testing.assert_array_equal(sample["mask_post"].numpy(), pair.sem_post_array)
    np.testing.assert_array_equal(sample["mask"].numpy(), pair.change_array)


def test_vector_without_class_attribute(pair: Pair) -> None:
    with pytest.raises(DataError, match=r"no class attribute 'class'.*\['id'\]"):
        BiTemporalRasterDataset(pair.pre, pair.post, semantic_post=pair.change_vector)


def test_bad_inputs(pair: Pair, tmp_path: Path) -> None:
    far = write_tif(
        tmp_path / "far.tif", pair.post_array, transform=from_origin(X0 + 10000, Y0, 1.0, 1.0)
    )
    with pytest.raises(DataError, match="do not overlap"):
        BiTemporalRasterDataset(pair.pre, far)
    two_bands = write_tif(tmp_path / "two.tif", pair.post_array[:2])
    with pytest.raises(DataError, match=r"has 3 bands but post image .*two\.tif.* has 2"):
        BiTemporalRasterDataset(pair.pre, two_bands)
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00not a tiff at all" * 10)
    with pytest.raises(DataError, match=r"corrupt\.tif"):
        BiTemporalRasterDataset(pair.pre, corrupt)
    with pytest.raises(DataError, match="does not exist"):
        BiTemporalRasterDataset(pair.pre, tmp_path / "missing.tif")
    far_label = write_tif(
        tmp_path / "far_label.tif",
        pair.change_array,
        transform=from_origin(X0 + 10000, Y0, 1.0, 1.0),
    )
    with pytest.raises(DataError, match=r"change label .*far_label\.tif.* does not overlap"):
        BiTemporalRasterDataset(pair.pre, pair.post, change=far_label)
    far_vector = tmp_path / "far.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 10, 10)], crs=CRS).to_file(far_vector)
    with pytest.raises(DataError, match="does not overlap"):
        BiTemporalRasterDataset(pair.pre, pair.post, change=far_vector)


@pytest.mark.parametrize("nodata", [None, 255])
@pytest.mark.parametrize("layout", ["aligned", "warped"])
def test_0_255_change_label_is_refused_or_mapped_explicitly(
    pair: Pair, tmp_path: Path, nodata: float | None, layout: str
) -> None:
    # A LEVIR-CD style label (255 = change), optionally tagged nodata 255; "warped": stored at
    # 0.5 m, so it is read through a WarpedVRT onto the 1 m grid.
    label = pair.change_array * 255
    transform = None
    if layout == "warped":
        label = label.repeat(2, axis=0).repeat(2, axis=1)
        transform = from_origin(X0, Y0, 0.5, 0.5)
    path = write_tif(tmp_path / "levir_label.tif", label, nodata=nodata, transform=transform)
    with pytest.raises(DataError, match=r"levir_label\.tif.*0/255.*mask_values=\"0,255\""):
        BiTemporalRasterDataset(pair.pre, pair.post, change=path)
    ds = BiTemporalRasterDataset(pair.pre, pair.post, change=path, mask_values="0,255")
    assert ds.change.files[0].warp == (layout == "warped")
    np.testing.assert_array_equal(ds[window(0, 0, 256)]["mask"].numpy(), pair.change_array)
    # "0,1" confirms the other reading: 255 is ignore.
    ds = BiTemporalRasterDataset(pair.pre, pair.post, change=path, mask_values="0,1")
    expected = np.where(pair.change_array == 1, 255, 0)
    np.testing.assert_array_equal(ds[window(0, 0, 256)]["mask"].numpy(), expected)


@pytest.mark.parametrize(
    ("values", "dtype", "shown"),
    [(2, "uint8", "2"), (7, "uint8", "7"), (128, "uint8", "128"), (-1, "int16", "-1")],
)
def test_out_of_range_change_label_fails_when_opened(
    pair: Pair, tmp_path: Path, values: int, dtype: str, shown: str
) -> None:
    label = pair.change_array.astype(dtype)
    label[label == 1] = values
    path = write_tif(tmp_path / "bad_label.tif", label)
    with pytest.raises(DataError, match=rf"bad_label\.tif.* holds value {shown} outside"):
        BiTemporalRasterDataset(pair.pre, pair.post, change=path)


def test_change_label_nodata_conventions(pair: Pair, tmp_path: Path) -> None:
    # int16 -1 declared nodata is ignore (not wrapped to 255 by a uint8 cast: ignored on purpose).
    label = pair.change_array.astype(np.int16)
    label[:10] = -1
    path = write_tif(tmp_path / "int16_label.tif", label, nodata=-1)
    mask = BiTemporalRasterDataset(pair.pre, pair.post, change=path)[window(0, 0, 256)]["mask"]
    expected = pair.change_array.astype(np.int64)
    expected[:10] = 255
    np.testing.assert_array_equal(mask.numpy(), expected)
    # A nodata tag of 0 would make every unchanged pixel unlabeled: refused, with the fix.
    zero = write_tif(tmp_path / "nodata0.tif", pair.change_array, nodata=0)
    with pytest.raises(DataError, match=r"nodata0\.tif.*declares nodata 0.*no-change value"):
        BiTemporalRasterDataset(pair.pre, pair.post, change=zero)
    with pytest.raises(ConfigurationError, match="mask_values must be one of"):
        BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change, mask_values="0-255")


def test_semantic_label_values_are_not_wrapped(pair: Pair, tmp_path: Path) -> None:
    classes = pair.sem_post_array.astype(np.int16)
    classes[0, 0] = 300  # would wrap to 44 in a uint8 cast
    path = write_tif(tmp_path / "sem300.tif", classes)
    ds = BiTemporalRasterDataset(
        pair.pre, pair.post, semantic_pre=pair.semantic_pre, semantic_post=path
    )
    with pytest.raises(DataError, match=r"sem300\.tif.* holds value 300;"):
        ds[window(0, 0, 64)]


def test_empty_change_polygons_mean_no_change(pair: Pair, tmp_path: Path) -> None:
    # A scene without change has an empty change GeoPackage: a valid, all-zero label.
    empty = tmp_path / "no_change.gpkg"
    gpd.GeoDataFrame(geometry=[], crs=CRS).to_file(empty)
    with pytest.warns(UserWarning, match="no features"):
        ds = BiTemporalRasterDataset(pair.pre, pair.post, change=empty)
    sample = ds[ds.bounds]
    assert sample["mask"].shape == sample["image"].shape[-2:]
    assert set(sample["mask"].unique().tolist()) <= {0, 255}
    assert (sample["mask"] == 0).any()


def test_mosaic_of_files_equals_single_file(pair: Pair, tmp_path: Path) -> None:
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    write_tif(tiles / "a.tif", pair.pre_array[:, :, :128])
    write_tif(
        tiles / "b.tif", pair.pre_array[:, :, 128:], transform=from_origin(X0 + 128, Y0, 1, 1)
    )
    single = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change)
    mosaic = BiTemporalRasterDataset(tiles, pair.post, change=pair.change)
    assert len(mosaic.index) == 2
    q = window(100, 10, 64)
    assert torch.equal(single[q]["image"], mosaic[q]["image"])


def test_torchgeo_raster_dataset_inputs(pair: Pair) -> None:
    class Pre(RasterDataset):
        filename_glob = "pre.tif"

    class Post(RasterDataset):
        filename_glob = "post.tif"

    ds = BiTemporalRasterDataset(Pre(str(pair.root)), Post(str(pair.root)), change=pair.change)
    np.testing.assert_array_equal(
        ds[window(0, 0, 32)]["image"][0].numpy(), pair.pre_array[:, :32, :32]
    )


def test_torchgeo_samplers_and_collate(pair: Pair) -> None:
    ds = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change)
    loader = DataLoader(
        ds, sampler=RandomGeoSampler(ds, 64, 6), batch_size=3, collate_fn=stack_samples
    )
    batches = list(loader)
    assert len(batches) == 2
    assert batches[0]["image"].shape == (3, 2, 3, 64, 64)
    assert batches[0]["mask"].shape == (3, 64, 64)
    grid = list(DataLoader(ds, sampler=GridGeoSampler(ds, 128, 128), collate_fn=stack_samples))
    assert len(grid) == 4
    batch_loader = DataLoader(
        ds, batch_sampler=RandomBatchGeoSampler(ds, 32, 4, 8), collate_fn=stack_samples
    )
    assert [b["image"].shape[0] for b in batch_loader] == [4, 4]
    # roi: every window lies inside it.
    roi = shapely.box(X0, Y0 - 100, X0 + 100, Y0)
    for q in RandomGeoSampler(ds, 32, 20, roi=roi):
        b = ds[q]["bounds"]
        assert X0 <= b[0] and b[1] <= X0 + 100 and Y0 - 100 <= b[3] and b[4] <= Y0


def test_intersection_and_union_with_torchgeo(pair: Pair, tmp_path: Path) -> None:
    class ChangeMask(RasterDataset):
        filename_glob = "change.tif"
        is_image = False

    images = BiTemporalRasterDataset(pair.pre, pair.post)
    joined = images & ChangeMask(str(pair.root))
    sample = joined[window(90, 30, 64)]
    assert sample["image"].shape == (2, 3, 64, 64)
    np.testing.assert_array_equal(sample["mask"].numpy(), pair.change_array[30:94, 90:154])

    other = make_pair(tmp_path / "east", seed=1)
    for name in ("pre", "post"):
        with rasterio.open(getattr(other, name), "r+") as dst:
            dst.transform = from_origin(X0 + 256, Y0, 1.0, 1.0)
    east = BiTemporalRasterDataset(other.pre, other.post)
    both = images | east
    right = both[window(300, 0, 32)]
    np.testing.assert_array_equal(right["image"][0].numpy(), other.pre_array[:, :32, 44:76])


def test_roi_split_and_spatial_split(pair: Pair) -> None:
    ds = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change)
    stripes = spatial_split(ds, (0.5, 0.25, 0.25))
    assert [s.bounds for s in stripes] == [
        (X0, Y0 - 256, X0 + 128, Y0),
        (X0 + 128, Y0 - 256, X0 + 192, Y0),
        (X0 + 192, Y0 - 256, X0 + 256, Y0),
    ]
    train, val, _ = roi_split(ds, stripes)
    assert len(train.index) == 1 and train[window(0, 0, 32)]["image"].shape == (2, 3, 32, 32)
    for q in RandomGeoSampler(val, 32, 30):
        b = ds[q]["bounds"]
        assert X0 + 128 <= b[0] and b[1] <= X0 + 192
    with pytest.raises(ConfigurationError, match="sum to 1"):
        spatial_split(ds, (0.5, 0.2))
    with pytest.raises(ConfigurationError, match="smaller than min_size"):
        spatial_split(ds, (0.9, 0.1), min_size=64, layout="stripes")


def test_pickle_and_workers(pair: Pair) -> None:
    ds = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change)
    q = window(10, 10, 48)
    first = ds[q]  # opens handles in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.pre._handles == {}
    assert torch.equal(clone[q]["image"], first["image"])
    queries = [window(i * 20, i * 10, 48) for i in range(6)]
    serial = [ds[x]["image"] for x in queries]
    loader = DataLoader(ds, sampler=queries, num_workers=2, collate_fn=stack_samples)
    parallel = [b["image"][0] for b in loader]
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a, b)


def test_outside_query_raises(pair: Pair) -> None:
    ds = BiTemporalRasterDataset(pair.pre, pair.post)
    with pytest.raises(IndexError):
        ds[slice(X0 + 5000, X0 + 5032), slice(Y0 - 32, Y0)]


def test_vector_label_in_other_crs_and_format(pair: Pair, tmp_path: Path) -> None:
    # Change polygons delivered as GeoJSON in geographic coordinates are reprojected onto the
    # image grid: same mask as the raster label, up to pixels cut by reprojected edges.
    polygons = gpd.read_file(pair.change_vector).to_crs("EPSG:4326")
    geojson = tmp_path / "change_wgs84.geojson"
    polygons.to_file(geojson, driver="GeoJSON")
    raster = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change)
    vector = BiTemporalRasterDataset(pair.pre, pair.post, change=geojson)
    a = raster[window(0, 0, 256)]["mask"]
    b = vector[window(0, 0, 256)]["mask"]
    assert int(a.sum()) > 0
    assert int((a != b).sum()) <= 0.02 * int(a.sum())


def test_bands_and_resolution_arguments(pair: Pair) -> None:
    ds = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change, bands=[3, 1])
    sample = ds[window(90, 30, 64)]
    assert ds.in_channels == 2 and sample["image"].shape == (2, 2, 64, 64)
    np.testing.assert_array_equal(sample["image"][0].numpy(), pair.pre_array[[2, 0], 30:94, 90:154])
    coarse = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change, res=2.0)
    assert coarse.res == (2.0, 2.0)
    sample = coarse[window(0, 0, 128)]
    assert sample["image"].shape == (2, 3, 64, 64) and sample["mask"].shape == (64, 64)
    # Labels are resampled with nearest: still 0/1.
    assert set(sample["mask"].unique().tolist()) <= {0, 1}


def test_vector_label_in_a_styled_geopackage(pair: Pair, tmp_path: Path) -> None:
    """A GeoPackage with QGIS's layer_styles table is read from its feature layer, silently."""
    import shutil
    import warnings

    from geochange.io import StyleCategory, write_layer_style

    styled = tmp_path / "styled.gpkg"
    shutil.copy(pair.change_vector, styled)
    write_layer_style(
        styled, "change", "id", [StyleCategory("1", "one", (255, 0, 0))], description="test"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pyogrio warns "More than one layer found" otherwise
        ds = BiTemporalRasterDataset(pair.pre, pair.post, change=styled)
        mask = ds[window(0, 0, 256)]["mask"]
    assert int(mask.sum()) == int(pair.change_array.sum())
