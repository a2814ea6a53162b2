"""ChangePredictor: exactness vs whole-image inference, georeferencing, outputs, resume, errors.

The tile grid itself is tested in test_windows.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject

from geochange.errors import ConfigurationError, DataError, OutputError
from geochange.predict import ChangePredictor, TileGrid
from geochange.predict.predictor import SIDECAR_NAME
from tests.builders import (
    DifferenceModel,
    TinyConvBNChange,
    TinyConvChange,
    whole_image,
    write_raster,
)

NORM = {"mean": [0.0, 0.0, 0.0], "std": [1000.0, 1000.0, 1000.0]}


def exact_predictor(model: torch.nn.Module, **kwargs) -> ChangePredictor:
    options = {
        "tile_size": 64,
        "overlap": 16,
        "precision": "fp32",
        "probability_dtype": "float32",
        "normalization": NORM,
        "size_divisor": 1,
        "num_workers": 0,
        "progress": False,
        "batch_size": 3,
    }
    options.update(kwargs)
    return ChangePredictor(model, **options)


def read(path: Path | None) -> np.ndarray:
    assert path is not None
    with rasterio.open(path) as ds:
        return ds.read(1)


# --- exactness ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tile_size", "overlap", "blend"),
    [(64, 16, "cosine"), (64, 32, "gaussian"), (48, 20, "mean"), (80, 24, "center")],
)
def test_mosaic_equals_whole_image_inference(scene_pair, tile_size, overlap, blend) -> None:
    pre_path, post_path, pre, post = scene_pair
    model = TinyConvChange()
    predictor = exact_predictor(model, tile_size=tile_size, overlap=overlap, blend=blend)
    result = predictor.predict(pre_path, post_path, pre_path.parent / f"out_{tile_size}_{blend}")
    reference, _, _ = whole_image(model, pre, post)
    probability = read(result.probability)
    assert probability.shape == (173, 251)
    np.testing.assert_allclose(probability, reference, atol=1e-5, rtol=0)
    change = read(result.change)
    np.testing.assert_array_equal(change, (reference >= 0.5).astype(np.uint8))
    assert result.tiles == len(TileGrid(173, 251, tile_size, overlap, overlap // 4, blend))


@pytest.mark.parametrize("fold", [True, False])
def test_batchnorm_folding_keeps_the_mosaic_exact(scene_pair, fold: bool) -> None:
    pre_path, post_path, pre, post = scene_pair
    model = TinyConvBNChange()
    predictor = exact_predictor(model, fold_batchnorm=fold)
    result = predictor.predict(pre_path, post_path, pre_path.parent / f"out_fold_{fold}")
    # The reference is the unfolded model, run once on the whole scene.
    reference, _, _ = whole_image(model, pre, post)
    np.testing.assert_allclose(read(result.probability), reference, atol=1e-5, rtol=0)
    assert predictor._inferencer.folded_batchnorms == (1 if fold else 0)
    assert isinstance(model.bn, torch.nn.BatchNorm2d)  # the caller's model is not modified


def test_outputs_are_georeferenced_cogs(scene_pair) -> None:
    pre_path, post_path, _, _ = scene_pair
    result = exact_predictor(TinyConvChange(), probability_dtype="uint8").predict(
        pre_path, post_path, pre_path.parent / "out"
    )
    with rasterio.open(pre_path) as src:
        crs, transform, bounds = src.crs, src.transform, src.bounds
    for path in (result.change, result.probability):
        assert path is not None and path.exists()
        with rasterio.open(path) as ds:
            assert ds.crs == crs and ds.transform == transform and ds.bounds == bounds
            assert ds.dtypes[0] == "uint8" and ds.nodata == 255
            assert ds.profile["tiled"] and ds.compression is not None
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    change = read(result.change)
    assert set(np.unique(change)) <= {0, 1}
    probability = read(result.probability)
    assert probability.max() <= 254
    np.testing.assert_array_equal(change == 1, probability >= 127)
    # Nothing but the final files is left behind.
    assert sorted(p.name for p in (pre_path.parent / "out").iterdir()) == [
        "change.tif",
        "probability.tif",
    ]
    assert result.crs == crs and result.transform == transform


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


def test_semantic_outputs_class_tables_and_transitions(scene_pair) -> None:
    pre_path, post_path, pre, post = scene_pair
    model = TinyConvChange(semantic_classes=3, seed=1)
    names = ["building", "road", "water"]
    result = exact_predictor(model, class_names=names).predict(
        pre_path, post_path, pre_path.parent / "sem"
    )
    _, pre_ref, post_ref = whole_image(model, pre, post)
    assert result.class_names == names
    semantic_pre, semantic_post = read(result.semantic_pre), read(result.semantic_post)
    # argmax of blended probabilities == argmax of whole-image logits (up to float ties)
    assert (semantic_pre == pre_ref).mean() > 0.999
    assert (semantic_post == post_ref).mean() > 0.999
    change, transition = read(result.change), read(result.transition)
    changed = change == 1
    np.testing.assert_array_equal(
        transition[changed], semantic_pre[changed] * 3 + semantic_post[changed]
    )
    assert np.all(transition[~changed] == 254)
    for path in (result.semantic_pre, result.semantic_post, result.transition):
        with rasterio.open(path) as ds:
            assert json.loads(ds.tags()["GEOCHANGE_CLASS_NAMES"]) == names
            colormap = ds.colormap(1)
            assert colormap[0][:3] != colormap[1][:3]
    with rasterio.open(result.transition) as ds:
        table = json.loads(ds.tags()["GEOCHANGE_TRANSITION_NAMES"])
        assert table["5"] == "road -> water" and table["254"] == "no change"


def test_center_semantic_blend_is_exact_and_keeps_change(scene_pair) -> None:
    """``semantic_blend="center"``: class maps equal whole-image inference exactly."""
    pre_path, post_path, pre, post = scene_pair
    model = TinyConvChange(semantic_classes=3, seed=1)
    blended = exact_predictor(model).predict(pre_path, post_path, pre_path.parent / "prob")
    center = exact_predictor(model, semantic_blend="center").predict(
        pre_path, post_path, pre_path.parent / "center"
    )
    _, pre_ref, post_ref = whole_image(model, pre, post)
    np.testing.assert_array_equal(read(center.semantic_pre), pre_ref)
    np.testing.assert_array_equal(read(center.semantic_post), post_ref)
    for key in ("probability", "change"):
        np.testing.assert_array_equal(read(getattr(center, key)), read(getattr(blended, key)))
    changed = read(center.change) == 1
    transition = read(center.transition)
    np.testing.assert_array_equal(transition[changed], pre_ref[changed] * 3 + post_ref[changed])
    with pytest.raises(ConfigurationError, match="semantic_blend"):
        exact_predictor(model, semantic_blend="vote")


def test_column_chunked_decoding_matches_one_chunk(scene_pair, monkeypatch) -> None:
    """Rows are normalized and decoded in column chunks; chunk seams must not show."""
    import geochange.predict.blend as blend_module

    pre_path, post_path, _, _ = scene_pair
    model = TinyConvChange(semantic_classes=3, seed=1)
    whole = exact_predictor(model).predict(pre_path, post_path, pre_path.parent / "one_chunk")
    monkeypatch.setattr(blend_module, "DECODE_CHUNK_WIDTH", 37)  # not a divisor of 251
    chunked = exact_predictor(model).predict(pre_path, post_path, pre_path.parent / "chunks")
    for key in ("probability", "change", "semantic_pre", "semantic_post", "transition"):
        np.testing.assert_array_equal(
            read(getattr(chunked, key)), read(getattr(whole, key)), err_msg=key
        )


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


# --- georeferencing, nodata, reprojection -----------------------------------------------------


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


# --- resume -----------------------------------------------------------------------------------


class Interrupt(RuntimeError):
    pass


class FailingAfter(TinyConvChange):
    """The same tiny model (same weights), raising after ``calls`` tile batches (a crash)."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls

    def forward(self, x: torch.Tensor):
        if x.shape[-1] > 40:  # let the 32-px channel probe through
            self.calls -= 1
            if self.calls < 0:
                raise Interrupt("simulated crash")
        return super().forward(x)


def test_interrupted_run_leaves_nothing_complete_and_resumes(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    pre = rng.integers(0, 1000, size=(3, 1100, 130)).astype(np.uint16)
    post = rng.integers(0, 1000, size=(3, 1100, 130)).astype(np.uint16)
    pre_path = write_raster(tmp_path / "pre.tif", pre)
    post_path = write_raster(tmp_path / "post.tif", post)
    model = TinyConvChange()
    out = tmp_path / "out"
    full = exact_predictor(model, tile_size=128, overlap=32).predict(
        pre_path, post_path, tmp_path / "ref"
    )
    # 1100 rows, stride 96: 12 tile rows of 2 tiles; batches of 2 tiles = one tile row each.
    failing = FailingAfter(calls=8)
    with pytest.raises(Interrupt):
        exact_predictor(failing, tile_size=128, overlap=32, batch_size=2).predict(
            pre_path, post_path, out
        )
    assert not (out / "change.tif").exists() and not (out / "probability.tif").exists()
    state = json.loads((out / SIDECAR_NAME).read_text())
    assert state["rows_done"] == 512  # one whole block row flushed before the crash
    resumed = exact_predictor(model, tile_size=128, overlap=32, batch_size=2).predict(
        pre_path, post_path, out, resume=True
    )
    assert 0 < resumed.tiles < full.tiles
    np.testing.assert_array_equal(read(resumed.probability), read(full.probability))
    np.testing.assert_array_equal(read(resumed.change), read(full.change))
    assert not (out / SIDECAR_NAME).exists()
    assert sorted(p.name for p in out.iterdir()) == ["change.tif", "probability.tif"]
    # A new run that fails in the same folder leaves the earlier, complete maps as they were:
    # outputs are replaced only by complete new ones (test_output_safety.py).
    before = {name: (out / name).read_bytes() for name in ("change.tif", "probability.tif")}
    with pytest.raises(Interrupt):
        exact_predictor(FailingAfter(calls=8), tile_size=128, overlap=32, batch_size=2).predict(
            pre_path, post_path, out
        )
    assert {name: (out / name).read_bytes() for name in before} == before


def test_resume_inside_a_later_stripe(tmp_path: Path, monkeypatch) -> None:
    import geochange.predict.tiles as tiles_module

    monkeypatch.setattr(tiles_module, "MIN_STRIPE_TILES", 2)
    rng = np.random.default_rng(3)
    pre = rng.integers(0, 1000, size=(3, 700, 400)).astype(np.uint16)
    post = rng.integers(0, 1000, size=(3, 700, 400)).astype(np.uint16)
    pre_path = write_raster(tmp_path / "pre.tif", pre)
    post_path = write_raster(tmp_path / "post.tif", post)
    options = {"tile_size": 128, "overlap": 32, "batch_size": 1, "band_memory_mb": 0.1}
    full = exact_predictor(TinyConvChange(), **options).predict(pre_path, post_path, tmp_path / "r")
    # Tile columns start at 0, 96, 192, 272; 256-px bands give three stripes of two columns
    # (stripes 1 and 2 start with a warm-up column). 700 rows are 7 tile rows (starts 0, 96,
    # ..., 480, 572). Crash in stripe 1 right after entering tile row 6, which flushed 512 rows.
    out = tmp_path / "out"
    with pytest.raises(Interrupt):
        exact_predictor(FailingAfter(calls=14 + 13), **options).predict(pre_path, post_path, out)
    state = json.loads((out / SIDECAR_NAME).read_text())
    assert (state["stripe"], state["rows_done"]) == (1, 512)
    resumed = exact_predictor(TinyConvChange(), **options).predict(
        pre_path, post_path, out, resume=True
    )
    assert resumed.tiles == 2 * 2 + 7 * 2  # tile rows 5-6 of stripe 1, all of stripe 2
    np.testing.assert_array_equal(read(resumed.probability), read(full.probability))
    np.testing.assert_array_equal(read(resumed.change), read(full.change))


# --- bad input --------------------------------------------------------------------------------


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
