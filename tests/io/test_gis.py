"""What GIS clients read beside a raster: PAM sidecar (categories, RAT, colours), QGIS styles."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geochange.classes import CHANGE_PALETTE, CLASS_COLORS, LSSCD_CLASS_NAMES, PROBABILITY_RAMP
from geochange.errors import OutputError
from geochange.io import (
    change_categories,
    class_categories,
    paletted_qml,
    pam_xml,
    probability_qml,
    sidecar_paths,
    transition_categories,
    write_style_sidecars,
)

GDALINFO = shutil.which("gdalinfo")
needs_gdalinfo = pytest.mark.skipif(GDALINFO is None, reason="GDAL command-line tools absent")


def gdalinfo(path: Path) -> dict[str, Any]:
    """``gdalinfo -json`` of ``path`` (GDAL's own reading of the raster and its sidecar)."""
    assert GDALINFO is not None
    done = subprocess.run([GDALINFO, "-json", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def qml_root(text: str) -> ET.Element:
    assert text.startswith("<!DOCTYPE qgis")
    root = ET.fromstring(text)
    assert root.tag == "qgis" and root.get("version", "").startswith("3.")
    return root


def write_tif(path: Path, values: np.ndarray) -> Path:
    profile = {
        "driver": "GTiff", "count": 1, "height": values.shape[0], "width": values.shape[1],
        "dtype": values.dtype.name, "nodata": 255, "crs": "EPSG:32631",
        "transform": from_origin(500000.0, 4600000.0, 1.0, 1.0),
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(values, 1)
    return path


def test_categories_of_each_class_set() -> None:
    change = change_categories()
    assert [(c.value, c.name, c.rgba) for c in change] == [
        (0, "no change", (255, 255, 255, 0)),  # transparent over the imagery
        (1, "change", (255, 0, 255, 255)),
    ]
    classes = class_categories(LSSCD_CLASS_NAMES)
    assert [c.rgba[:3] for c in classes] == [CLASS_COLORS[i] for i in range(7)]
    assert all(c.rgba[3] == 255 for c in classes)
    transitions = transition_categories(["building", "road", "water"])
    by_value = {c.value: c for c in transitions}
    assert len(by_value) == 10 and by_value[5].name == "road -> water"
    assert by_value[5].rgba == (*CLASS_COLORS[2], 255)  # the destination class's colour
    assert by_value[254].name == "no change" and by_value[254].rgba[3] == 0
    many = {c.value: c for c in transition_categories([f"c{i}" for i in range(16)])}
    assert len(many) == 257 and many[65534].name == "no change"


def test_paletted_qml_is_a_qgis_paletted_style() -> None:
    root = qml_root(paletted_qml(class_categories(["building", "road", "water"])))
    renderer = root.find("pipe/rasterrenderer")
    assert renderer is not None
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = renderer.findall("colorPalette/paletteEntry")
    assert [e.attrib for e in entries] == [
        {"value": "0", "color": "#e63232", "alpha": "255", "label": "building"},
        {"value": "1", "color": "#8c8c8c", "alpha": "255", "label": "road"},
        {"value": "2", "color": "#2864e6", "alpha": "255", "label": "water"},
    ]
    # Class ids are never interpolated when zooming.
    resampling = root.find("pipe/provider/resampling")
    assert resampling is not None
    assert resampling.get("zoomedInResamplingMethod") == "nearestNeighbour"
    change = qml_root(paletted_qml(change_categories())).findall(".//paletteEntry")
    assert [(e.get("label"), e.get("color"), e.get("alpha")) for e in change] == [
        ("no change", "#ffffff", "0"),
        ("change", "#ff00ff", "255"),
    ]


def test_probability_qml_is_a_ramp_over_0_to_1() -> None:
    root = qml_root(probability_qml())
    renderer = root.find("pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "singlebandpseudocolor"
    assert (renderer.get("classificationMin"), renderer.get("classificationMax")) == ("0", "1")
    shader = renderer.find("rastershader/colorrampshader")
    assert shader is not None and shader.get("colorRampType") == "INTERPOLATED"
    items = shader.findall("item")
    assert [float(i.get("value", "nan")) for i in items] == [p for p, _ in PROBABILITY_RAMP]
    assert items[0].get("alpha") == "0" and items[-1].get("color") == "#fcfdbf"
    options = {o.get("name"): o.get("value") for o in shader.findall("colorramp/Option/Option")}
    assert options["color1"] == "0,0,4,0" and options["stops"].startswith("0.25;81,18,124,255:")


def test_pam_xml_of_a_uint8_transition_raster() -> None:
    root = ET.fromstring(pam_xml(transition_categories(["building", "road", "water"])))
    band = root.find("PAMRasterBand")
    assert root.tag == "PAMDataset" and band is not None and band.get("band") == "1"
    names = [c.text or "" for c in band.findall("CategoryNames/Category")]
    assert len(names) == 255 and names[5] == "road -> water" and names[254] == "no change"
    assert names[9] == ""  # not a code
    entries = band.findall("ColorTable/Entry")
    assert len(entries) == 256
    assert entries[254].attrib == {"c1": "255", "c2": "255", "c3": "255", "c4": "0"}
    assert entries[2].attrib == {"c1": "40", "c2": "100", "c3": "230", "c4": "255"}
    rat = band.find("GDALRasterAttributeTable")
    assert rat is not None and rat.get("tableType") == "thematic"
    fields = [f.findtext("Name") for f in rat.findall("FieldDefn")]
    assert fields == ["value", "class", "red", "green", "blue", "alpha"]
    rows = [[f.text for f in row.findall("F")] for row in rat.findall("Row")]
    assert len(rows) == 10 and rows[5] == ["5", "road -> water", "40", "100", "230", "255"]
    assert rows[-1] == ["254", "no change", "255", "255", "255", "0"]


def test_pam_xml_of_a_uint16_raster_has_only_the_rat() -> None:
    band = ET.fromstring(pam_xml(transition_categories([f"c{i}" for i in range(16)])))[0]
    # Category names and colour tables are indexed by value: 65535 entries would be absurd.
    assert band.find("CategoryNames") is None and band.find("ColorTable") is None
    rows = band.findall("GDALRasterAttributeTable/Row")
    assert len(rows) == 257 and rows[-1][0].text == "65534"


def test_sidecars_are_read_back_by_gdal(tmp_path: Path) -> None:
    raster = write_tif(tmp_path / "change.tif", np.array([[0, 1], [255, 1]], np.uint8))
    written = write_style_sidecars(raster, change_categories())
    assert (
        written
        == sidecar_paths(raster)
        == [
            tmp_path / "change.tif.aux.xml",
            tmp_path / "change.qml",
        ]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "change.qml",
        "change.tif",
        "change.tif.aux.xml",
    ]  # no temporary leftovers
    with rasterio.open(raster) as ds:  # rasterio reads the PAM colour table, opacity included
        colormap = ds.colormap(1)
        assert colormap[0] == CHANGE_PALETTE[0] == (255, 255, 255, 0)
        assert colormap[1] == CHANGE_PALETTE[1] and colormap[255][3] == 0
        assert ds.read(1).tolist() == [[0, 1], [255, 1]]  # values untouched


@needs_gdalinfo
def test_gdalinfo_shows_categories_and_rat(tmp_path: Path) -> None:
    raster = write_tif(tmp_path / "classes.tif", np.array([[0, 1, 2]], np.uint8))
    write_style_sidecars(raster, class_categories(["bâtiment", "road", "water"]))
    info = gdalinfo(raster)
    assert str(tmp_path / "classes.tif.aux.xml") in info["files"]
    assert info["bands"][0]["categories"] == ["bâtiment", "road", "water"]
    assert info["bands"][0]["colorTable"]["entries"][0] == [230, 50, 50, 255]
    rat = info["rat"]
    fields = [f["name"] for f in rat["fieldDefn"]]
    assert fields == ["value", "class", "red", "green", "blue", "alpha"]
    assert [r["f"][:2] for r in rat["row"]] == [[0, "bâtiment"], [1, "road"], [2, "water"]]


def test_probability_style_replaces_a_stale_pam_sidecar(tmp_path: Path) -> None:
    raster = write_tif(tmp_path / "probability.tif", np.array([[0, 254]], np.uint8))
    stale = tmp_path / "probability.tif.aux.xml"
    # e.g. the statistics ``gdalinfo -stats`` computed on the raster this one replaces
    stale.write_text(
        '<PAMDataset><PAMRasterBand band="1"><Metadata><MDI key="STATISTICS_MAXIMUM">9'
        "</MDI></Metadata></PAMRasterBand></PAMDataset>"
    )
    assert write_style_sidecars(raster) == [tmp_path / "probability.qml"]
    assert not stale.exists()
    with rasterio.open(raster) as ds:
        assert "STATISTICS_MAXIMUM" not in ds.tags(1)


def test_a_failed_sidecar_write_is_an_output_error_naming_it(tmp_path: Path) -> None:
    raster = write_tif(tmp_path / "change.tif", np.zeros((2, 2), np.uint8))
    (tmp_path / "change.qml").mkdir()  # cannot be replaced by a file
    with pytest.raises(OutputError, match=r"change\.qml"):
        write_style_sidecars(raster, change_categories())
    assert (tmp_path / "change.qml").is_dir()
    assert not list(tmp_path.glob(".*.partial"))


def test_transparent_categories_have_a_light_legend_swatch() -> None:
    """QGIS draws a paletted legend swatch at the layer's opacity, not the entry's alpha (seen in
    QGIS 3.22): a transparent "no change" must have an RGB that reads as empty there, not black."""
    for categories in (change_categories(), transition_categories(["building", "road"])):
        entries = qml_root(paletted_qml(categories)).findall(".//paletteEntry")
        hidden = [(e.get("label"), e.get("color")) for e in entries if e.get("alpha") == "0"]
        assert hidden == [("no change", "#ffffff")]
    assert CHANGE_PALETTE[0] == (255, 255, 255, 0)
