"""geochange.io.vector_style: QGIS's layer_styles table in a GeoPackage that stays valid."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
import shapely

from geochange.errors import OutputError
from geochange.io import (
    LAYER_STYLES_TABLE,
    StyleCategory,
    categorized_qml,
    categorized_sld,
    distinct_values,
    polygon_layer,
    write_layer_style,
)

CATEGORIES = [
    StyleCategory("new building", "new building", (230, 50, 50)),
    StyleCategory("a & b → <c>", "odd & <named>", (1, 2, 3)),
    StyleCategory(None, "unknown", (128, 128, 128)),
]


@pytest.fixture
def gpkg(tmp_path: Path) -> Path:
    path = tmp_path / "layers.gpkg"
    frame = gpd.GeoDataFrame(
        {"kind": ["new building", "a & b → <c>", None]},
        geometry=[shapely.box(0, 0, 1, 1), shapely.box(2, 0, 3, 1), shapely.box(4, 0, 5, 1)],
        crs="EPSG:32631",
    )
    pyogrio.write_dataframe(frame, path, layer="changes", driver="GPKG")
    return path


def _rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT f_table_name, f_geometry_column, styleName, useAsDefault, styleQML, styleSLD, "
            "update_time FROM layer_styles ORDER BY id"
        ).fetchall()
    db.close()
    return rows


def test_qml_is_a_categorized_renderer_naming_every_category() -> None:
    root = ET.fromstring(categorized_qml("kind", CATEGORIES).split("\n", 1)[1])
    renderer = root.find("renderer-v2")
    assert renderer is not None
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "kind"
    categories = [
        (c.get("value"), c.get("label"), c.get("symbol")) for c in renderer.iter("category")
    ]
    # Escaped on write, the same text on read; NULL is the empty value.
    assert categories == [
        ("new building", "new building", "0"),
        ("a & b → <c>", "odd & <named>", "1"),
        ("", "unknown", "2"),
    ]
    symbols = renderer.find("symbols")
    assert symbols is not None
    colours = {
        s.get("name"): s.find("layer/Option/Option[@name='color']").get("value")  # type: ignore[union-attr]
        for s in symbols.iter("symbol")
    }
    assert colours == {"0": "230,50,50,128", "1": "1,2,3,128", "2": "128,128,128,128"}
    assert root.findtext("layerGeometryType") == "2"  # polygon


def test_sld_has_one_rule_per_category() -> None:
    root = ET.fromstring(categorized_sld("changes", "kind", CATEGORIES).split("\n", 1)[1])
    se = "{http://www.opengis.net/se}"
    ogc = "{http://www.opengis.net/ogc}"
    rules = list(root.iter(f"{se}Rule"))
    assert [r.findtext(f"{se}Name") for r in rules] == ["new building", "odd & <named>", "unknown"]
    assert [r.findtext(f".//{ogc}Literal") for r in rules[:2]] == ["new building", "a & b → <c>"]
    assert rules[2].find(f".//{ogc}PropertyIsNull") is not None


def test_style_is_the_layer_default_and_the_geopackage_stays_valid(gpkg: Path) -> None:
    assert distinct_values(gpkg, "changes", "kind") == ["a & b → <c>", "new building", None]
    write_layer_style(gpkg, "changes", "kind", CATEGORIES, description="test style")
    ((table, column, name, default, qml, sld, updated),) = _rows(gpkg)
    assert (table, column, name, default) == ("changes", "geom", "changes", 1)
    assert 'attr="kind"' in qml and "PropertyIsEqualTo" in sld
    assert updated.endswith("Z") and updated[:2] == "20"
    with sqlite3.connect(gpkg) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        contents = db.execute(
            "SELECT data_type, srs_id FROM gpkg_contents WHERE table_name = ?",
            (LAYER_STYLES_TABLE,),
        ).fetchall()
    db.close()
    assert contents == [("attributes", None)]
    # OGR still sees the feature layer first, and the style table as a table.
    assert [tuple(row) for row in pyogrio.list_layers(gpkg)] == [
        ("changes", "Polygon"),
        ("layer_styles", None),
    ]
    assert polygon_layer(gpkg) == "changes"
    assert len(pyogrio.read_dataframe(gpkg, layer="changes")) == 3
    styles = pyogrio.read_dataframe(gpkg, layer="layer_styles")
    assert styles["styleName"].tolist() == ["changes"]
    if shutil.which("ogrinfo"):  # GDAL's own tool, where installed
        listing = subprocess.run(
            ["ogrinfo", "-ro", "-q", str(gpkg)], capture_output=True, text=True, check=True
        ).stdout
        assert "changes (Polygon)" in listing and "layer_styles (None)" in listing


def test_rewriting_replaces_the_own_style_and_keeps_a_users_style(gpkg: Path) -> None:
    write_layer_style(gpkg, "changes", "kind", CATEGORIES, description="first")
    with sqlite3.connect(gpkg) as db:  # a style the user saved from QGIS
        db.execute(
            "INSERT INTO layer_styles (f_table_name, styleName, styleQML, useAsDefault) "
            "VALUES ('changes', 'mine', '<qgis/>', 1)"
        )
    db.close()
    write_layer_style(gpkg, "changes", "kind", CATEGORIES[:1], description="second")
    rows = {name: (default, qml) for _, _, name, default, qml, _, _ in _rows(gpkg)}
    assert set(rows) == {"mine", "changes"}
    assert rows["mine"][0] == 0 and rows["changes"][0] == 1
    assert rows["changes"][1].count("<category ") == 1
    with sqlite3.connect(gpkg) as db:
        count = db.execute(
            "SELECT count(*) FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchone()
    db.close()
    assert count == (1,)


def test_styling_a_missing_layer_names_file_and_layer(gpkg: Path) -> None:
    with pytest.raises(OutputError, match=r"layers\.gpkg.*no feature layer 'nope'"):
        write_layer_style(gpkg, "nope", "kind", CATEGORIES, description="x")


def test_polygon_layer_of_plain_files_is_left_to_ogr(gpkg: Path, tmp_path: Path) -> None:
    assert polygon_layer(gpkg) is None  # one layer, no style table yet
    assert polygon_layer(tmp_path / "missing.gpkg") is None
