"""Every raster geochange writes, opened as a GIS client would: rasterio, gdalinfo, COG checks.

Descriptions, category names, attribute tables, colours with opacity, the probability's GDAL
scale, and the QGIS styles beside predicted COGs, synthetic label rasters and pseudo labels;
the predicted COGs stay valid COGs (rio-cogeo's validator, strict).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geochange.classes import CHANGE_PALETTE, CLASS_COLORS, LSSCD_CLASS_NAMES, class_palette
from geochange.io import PROBABILITY_SCALE
from geochange.synthetic import make_scene
from geochange.vectorize import vectorize_changes
from tests.builders import TinyConvChange
from tests.io.test_gis import gdalinfo, needs_gdalinfo
from tests.predict.helpers import exact_predictor, read

cog_validate = pytest.importorskip("rio_cogeo.cogeo").cog_validate

NAMES = ["building", "road", "water"]


@pytest.fixture
def semantic_result(scene_pair):
    pre_path, post_path, _, _ = scene_pair
    model = TinyConvChange(semantic_classes=3, seed=1)
    predictor = exact_predictor(model, class_names=NAMES, probability_dtype="uint8")
    return predictor.predict(pre_path, post_path, pre_path.parent / "out")


def palette_labels(qml: Path) -> dict[int, tuple[str, str, str]]:
    """value -> (label, colour, alpha) of a paletted QGIS style."""
    root = ET.parse(qml).getroot()
    renderer = root.find("pipe/rasterrenderer")
    assert root.tag == "qgis" and renderer is not None and renderer.get("type") == "paletted"
    return {
        int(e.get("value", "-1")): (e.get("label", ""), e.get("color", ""), e.get("alpha", ""))
        for e in renderer.findall("colorPalette/paletteEntry")
    }


def test_every_predicted_raster_carries_its_meaning(semantic_result) -> None:
    result = semantic_result
    out = result.change.parent
    classes = [
        f"{name}{suffix}"
        for name in ("change", "semantic_pre", "semantic_post", "transition")
        for suffix in (".tif", ".tif.aux.xml", ".qml")
    ]
    expected = sorted([*classes, "probability.qml", "probability.tif"])
    assert sorted(p.name for p in out.iterdir()) == expected
    descriptions = {
        "probability": "change probability",
        "change": "change",
        "semantic_pre": "class, first date",
        "semantic_post": "class, second date",
        "transition": "class transition (from * K + to)",
    }
    for key, description in descriptions.items():
        path = getattr(result, key)
        with rasterio.open(path) as ds:
            assert ds.descriptions == (description,), key
        is_valid, errors, warnings = cog_validate(str(path), strict=True)
        assert is_valid and not errors and not warnings, (key, errors, warnings)
    with rasterio.open(result.change) as ds:
        assert ds.colormap(1)[0] == CHANGE_PALETTE[0] == (255, 255, 255, 0)  # transparent
        assert ds.colormap(1)[1] == (255, 0, 255, 255)
    for path in (result.semantic_pre, result.semantic_post):
        with rasterio.open(path) as ds:
            assert {v: ds.colormap(1)[v] for v in range(3)} == class_palette(3)
    with rasterio.open(result.transition) as ds:
        assert ds.colormap(1)[254][3] == 0  # unchanged: transparent
        assert ds.colormap(1)[1 * 3 + 2] == (*CLASS_COLORS[2], 255)  # road -> water: water
    assert palette_labels(out / "change.qml") == {
        0: ("no change", "#ffffff", "0"),
        1: ("change", "#ff00ff", "255"),
    }
    assert [label for label, _, _ in palette_labels(out / "semantic_pre.qml").values()] == NAMES
    transitions = palette_labels(out / "transition.qml")
    assert transitions[5][0] == "road -> water"
    assert transitions[254] == ("no change", "#ffffff", "0")
    ramp = ET.parse(out / "probability.qml").getroot().find("pipe/rasterrenderer")
    assert ramp is not None and ramp.get("type") == "singlebandpseudocolor"


def test_uint8_probability_reads_0_to_1_in_gis_clients(semantic_result) -> None:
    with rasterio.open(semantic_result.probability) as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255
        assert ds.scales == (pytest.approx(1 / 254),) and ds.offsets == (0.0,)
        assert ds.tags()["GEOCHANGE_PROBABILITY_SCALE"] == str(PROBABILITY_SCALE)
        raw = ds.read(1)
    assert raw.max() <= 254  # geochange's own readers get the stored values


def test_clients_applying_the_scale_read_p(semantic_result) -> None:
    rioxarray = pytest.importorskip("rioxarray")
    raw = read(semantic_result.probability)
    scaled = rioxarray.open_rasterio(semantic_result.probability, mask_and_scale=True)
    values = scaled.values[0]
    valid = raw != 255
    np.testing.assert_allclose(values[valid], raw[valid] / 254, rtol=1e-6)
    assert 0.0 <= np.nanmin(values) and np.nanmax(values) <= 1.0
    assert np.isnan(values[~valid]).all()


def test_float32_probability_has_no_scale(scene_pair) -> None:
    pre_path, post_path, _, _ = scene_pair
    result = exact_predictor(TinyConvChange()).predict(pre_path, post_path, pre_path.parent / "f")
    with rasterio.open(result.probability) as ds:
        assert ds.dtypes[0] == "float32"
        assert ds.scales == (1.0,) and ds.offsets == (0.0,)
        assert ds.descriptions == ("change probability",)
    assert (result.probability.parent / "probability.qml").exists()
    assert not (result.probability.parent / "probability.tif.aux.xml").exists()


def test_vectorize_decodes_the_scaled_probability_once(semantic_result, tmp_path: Path) -> None:
    result = semantic_result
    frame = vectorize_changes(result, tmp_path / "changes.gpkg")
    assert len(frame) > 0
    raw = read(result.probability).astype(np.float64)
    changed = read(result.change) == 1
    # Pixels are all the same size: area-weighted mean_prob is the mean over changed pixels.
    weighted = float((frame["mean_prob"] * frame["area_m2"]).sum() / frame["area_m2"].sum())
    assert weighted == pytest.approx(raw[changed].mean() / PROBABILITY_SCALE, rel=1e-6)
    assert frame["mean_prob"].between(0.0, 1.0).all()


@needs_gdalinfo
def test_gdalinfo_shows_categories_scale_and_rat(semantic_result) -> None:
    info = gdalinfo(semantic_result.probability)
    band = info["bands"][0]
    assert band["description"] == "change probability"
    assert band["scale"] == pytest.approx(1 / 254) and band["offset"] == 0.0
    info = gdalinfo(semantic_result.change)
    assert info["bands"][0]["categories"] == ["no change", "change"]
    assert info["bands"][0]["colorTable"]["entries"][:2] == [[255, 255, 255, 0], [255, 0, 255, 255]]
    assert [r["f"][:2] for r in info["rat"]["row"]] == [[0, "no change"], [1, "change"]]
    info = gdalinfo(semantic_result.semantic_post)
    assert info["bands"][0]["categories"] == NAMES
    info = gdalinfo(semantic_result.transition)
    categories = info["bands"][0]["categories"]
    assert categories[5] == "road -> water" and categories[254] == "no change"


def test_synthetic_label_rasters_match_predicted_styles(tmp_path: Path) -> None:
    scene = make_scene(tmp_path / "scene", 256, 256, seed=3, block_size=256)
    with rasterio.open(scene.pre) as ds:
        assert ds.descriptions == ("red", "green", "blue")
    for path, description in (
        (scene.semantic_pre, "class, first date"),
        (scene.semantic_post, "class, second date"),
        (scene.change, "change"),
    ):
        with rasterio.open(path) as ds:
            assert ds.descriptions == (description,)
        is_valid, errors, _ = cog_validate(str(path), strict=True)
        assert is_valid, errors
    with rasterio.open(scene.change) as ds:
        assert {v: ds.colormap(1)[v] for v in (0, 1)} == CHANGE_PALETTE
    qml = palette_labels(scene.semantic_pre.with_suffix(".qml"))
    assert [label for label, _, _ in qml.values()] == list(LSSCD_CLASS_NAMES)
    assert palette_labels(scene.change.with_suffix(".qml"))[0] == ("no change", "#ffffff", "0")


def test_synthetic_image_bands_are_selected_by_description(tmp_path: Path) -> None:
    from geochange.io import band_indexes

    scene = make_scene(tmp_path / "scene", 256, 256, seed=3, bands=5, block_size=256)
    with rasterio.open(scene.post) as ds:
        assert ds.descriptions == ("red", "green", "blue", "nir", "red-nir mix 1")
        assert band_indexes(ds, ["nir", "red"]) == [4, 1]


@needs_gdalinfo
def test_gdalinfo_reads_synthetic_categories(tmp_path: Path) -> None:
    scene = make_scene(tmp_path / "scene", 256, 256, seed=3, block_size=256)
    info = gdalinfo(scene.semantic_pre)
    assert info["bands"][0]["categories"] == list(LSSCD_CLASS_NAMES)
    assert len(info["rat"]["row"]) == len(LSSCD_CLASS_NAMES)
    assert gdalinfo(scene.change)["bands"][0]["categories"] == ["no change", "change"]
