"""geochange.vectorize.writer: formats, layers, modes and atomic, streamed writing."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
import shapely
import shapely.geometry

from geochange.errors import ConfigurationError, OutputError
from geochange.vectorize import (
    SCHEMA,
    vectorize_changes,
    write_changes,
)

from .conftest import (
    CLASSES,
    CRS,
    stress_mask,
    whole_raster_polygons,
    write_raster,
)


@pytest.mark.parametrize("return_frame", [True, False])
def test_stale_partial_of_killed_run_is_not_reused(
    tmp_path: Path, stress_path: Path, return_frame: bool
) -> None:
    import geopandas as gpd

    out = tmp_path / "changes.gpkg"
    # What a run killed while writing leaves behind: its hidden work file, with a layer.
    stale = tmp_path / ".changes.gpkg.partial.gpkg"
    gpd.GeoDataFrame({"x": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs=CRS).to_file(
        stale, layer="stale_layer"
    )
    vectorize_changes(stress_path, out, block_size=16, workers=1, return_frame=return_frame)
    # The changes layer and QGIS's style table, nothing of the stale file.
    assert [str(row[0]) for row in pyogrio.list_layers(out)] == ["changes", "layer_styles"]
    expected = whole_raster_polygons((stress_mask() == 1).astype(np.uint8), 4)
    assert len(pyogrio.read_dataframe(out)) == len(expected)
    # Nothing of this run is left next to the output.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".changes.gpkg.partial.gpkg", out.name]


def test_gpkg_opens_with_crs_layer_fields(tmp_path: Path, semantic_paths: SimpleNamespace) -> None:
    out = tmp_path / "changes.gpkg"
    frame = vectorize_changes(semantic_paths, out, layer="buildings", workers=1)
    info = pyogrio.read_info(out, layer="buildings")
    assert info["crs"] == CRS
    assert info["features"] == len(frame) > 0
    assert info["geometry_type"] == "Polygon"
    types = dict(zip(info["fields"], info["ogr_types"], strict=True))
    assert types["change_id"] == "OFTInteger64"
    assert types["area_m2"] == "OFTReal" and types["mean_prob"] == "OFTReal"
    assert types["change_type"] == "OFTString"
    back = pyogrio.read_dataframe(out, layer="buildings")
    assert sorted(back["change_type"]) == sorted(frame["change_type"])
    # Spatial index present (GeoPackage R-tree table).
    sql = "SELECT count(*) AS n FROM sqlite_master WHERE name LIKE 'rtree_buildings_%'"
    rtree = pyogrio.read_dataframe(out, sql=sql, sql_dialect="SQLITE")
    assert int(rtree["n"].iloc[0]) > 0
    assert not (tmp_path / ".changes.gpkg.partial").exists()


@pytest.mark.parametrize("return_frame", [True, False])
def test_binary_change_type_and_nulls_in_file(
    tmp_path: Path, stress_path: Path, return_frame: bool
) -> None:
    # Binary polygons used to leave change_type NULL: they are "change" now, classes unknown.
    out = tmp_path / "binary.gpkg"
    vectorize_changes(stress_path, out, workers=1, return_frame=return_frame)
    back = pyogrio.read_dataframe(out, layer="changes")
    assert len(back) == len(whole_raster_polygons((stress_mask() == 1).astype(np.uint8), 4))
    assert back["change_type"].tolist() == ["change"] * len(back)
    assert back["mean_prob"].isna().all() and back["max_prob"].isna().all()
    assert back["from_class"].isna().all() and back["to_class"].isna().all()


@pytest.mark.parametrize("suffix", [".parquet", ".geojson", ".fgb"])
def test_other_formats_round_trip(tmp_path: Path, stress_path: Path, suffix: str) -> None:
    import geopandas as gpd

    out = tmp_path / f"changes{suffix}"
    frame = vectorize_changes(stress_path, out, workers=1)
    back = gpd.read_parquet(out) if suffix == ".parquet" else gpd.read_file(out)
    assert len(back) == len(frame)
    if suffix == ".geojson":  # RFC 7946: WGS84 on disk (see test_geojson_is_rfc7946)
        assert back.crs == "EPSG:4326"
        back = back.to_crs(frame.crs)
    assert back.crs == frame.crs
    rtol = 3e-2 if suffix == ".geojson" else 1e-7  # 7 decimals of a degree: ~1 cm
    np.testing.assert_allclose(sorted(back.geometry.area), sorted(frame.geometry.area), rtol=rtol)


def test_empty_result_writes_empty_layer_with_schema(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "none.tif", np.zeros((20, 30), np.uint8))
    out = tmp_path / "empty.gpkg"
    frame = vectorize_changes(path, out, workers=1)
    assert len(frame) == 0 and list(frame.columns) == [*SCHEMA, "geometry"]
    info = pyogrio.read_info(out)
    assert info["features"] == 0 and info["crs"] == CRS
    assert set(SCHEMA) <= set(info["fields"])


def test_layer_per_type_overwrite_and_append(
    tmp_path: Path, semantic_paths: SimpleNamespace
) -> None:
    out = tmp_path / "layers.gpkg"
    frame = vectorize_changes(semantic_paths, out, layer_per_type=True, workers=1)
    layers = {row[0] for row in pyogrio.list_layers(out)}
    assert {"changes_new_building", "changes_demolished_building"} <= layers
    assert "changes_cropland_to_road" in layers
    assert pyogrio.read_info(out, layer="changes_new_building")["features"] == 2
    # overwrite: replaces this layer only; append: adds features.
    vectorize_changes(semantic_paths, out, layer="extra", mode="overwrite", workers=1)
    vectorize_changes(semantic_paths, out, layer="extra", mode="append", workers=1)
    layers_after = {row[0] for row in pyogrio.list_layers(out)}
    assert layers <= layers_after and "extra" in layers_after
    assert pyogrio.read_info(out, layer="extra")["features"] == 2 * len(frame)
    vectorize_changes(semantic_paths, out, layer="extra", mode="overwrite", workers=1)
    assert pyogrio.read_info(out, layer="extra")["features"] == len(frame)
    vectorize_changes(semantic_paths, out, layer="only", workers=1)  # create: new file
    assert {row[0] for row in pyogrio.list_layers(out)} == {"only", "layer_styles"}


def test_streaming_write_matches_frame_write(
    tmp_path: Path, semantic_paths: SimpleNamespace, stress_path: Path
) -> None:
    # return_frame=False writes straight from WKB (Arrow stream): same file content.
    frame = vectorize_changes(semantic_paths, block_size=8, workers=1)
    out = tmp_path / "stream.gpkg"
    assert (
        vectorize_changes(semantic_paths, out, block_size=8, workers=1, return_frame=False) is None
    )
    back = pyogrio.read_dataframe(out)
    assert list(back.columns) == [*SCHEMA, "geometry"]
    assert back["change_id"].tolist() == frame["change_id"].tolist()
    assert back["change_type"].tolist() == frame["change_type"].tolist()
    np.testing.assert_allclose(back["mean_prob"], frame["mean_prob"].astype(float))
    assert back.geometry.geom_equals_exact(frame.geometry, tolerance=0).all()
    # Per-type layers and 8-connectivity multipolygons in streaming mode.
    layered = tmp_path / "layered.gpkg"
    vectorize_changes(semantic_paths, layered, layer_per_type=True, return_frame=False, workers=1)
    assert pyogrio.read_info(layered, layer="changes_new_building")["features"] == 2
    eight = tmp_path / "eight.gpkg"
    vectorize_changes(
        stress_path, eight, connectivity=8, block_size=8, return_frame=False, workers=1
    )
    info = pyogrio.read_info(eight)
    assert info["geometry_type"] == "MultiPolygon"
    reference = whole_raster_polygons((stress_mask() == 1).astype(np.uint8), 8)
    assert info["features"] == len(reference)
    assert pyogrio.read_dataframe(eight).geometry.is_valid.all()
    assert pyogrio.read_dataframe(eight)["mean_prob"].isna().all()


def test_check_vector_output_fails_before_work(tmp_path: Path) -> None:
    from geochange.vectorize import check_vector_output

    check_vector_output(tmp_path / "ok.gpkg")
    with pytest.raises(OutputError, match="unknown output format"):
        check_vector_output(tmp_path / "changes.txt")
    with pytest.raises(ConfigurationError, match="single layer"):
        check_vector_output(tmp_path / "changes.geojson", layer_per_type=True)


@pytest.fixture
def staircase_paths(tmp_path: Path) -> SimpleNamespace:
    """Semantic pair whose outlines post-processing visibly changes: a rotated (staircase) new
    building, an L-shaped demolished building and a new road (never regularized)."""
    pre = np.full((48, 48), 5, np.uint8)  # cropland
    pre[30:44, 4:10] = 0  # L-shaped building...
    pre[38:44, 10:20] = 0
    post = pre.copy()
    post[pre == 0] = 3  # ...demolished, bare land after
    rotated = shapely.affinity.rotate(shapely.box(14, 6, 38, 18), 30)
    post[rasterio.features.rasterize([rotated], out_shape=pre.shape) == 1] = 0  # new building
    post[:, 44:47] = 1  # new road along the east edge
    change = (pre != post).astype(np.uint8)
    prob = np.where(change == 1, 200, 0).astype(np.uint8)
    return SimpleNamespace(
        change=write_raster(tmp_path / "change.tif", change),
        probability=write_raster(tmp_path / "prob.tif", prob, nodata=None),
        semantic_pre=write_raster(tmp_path / "pre.tif", pre, class_names=CLASSES),
        semantic_post=write_raster(tmp_path / "post.tif", post, class_names=CLASSES),
        transition=None,
        class_names=None,
    )


def read_written(out: Path, layer_per_type: bool):
    """Every feature vectorize_changes wrote to ``out`` (all layers), as one GeoDataFrame."""
    import geopandas as gpd
    import pandas as pd

    if out.suffix == ".parquet":
        return gpd.read_parquet(out)
    layers = [str(name) for name, geometry in pyogrio.list_layers(out) if geometry is not None]
    assert layers == ["changes"] or layer_per_type
    frames = [pyogrio.read_dataframe(out, layer=name) for name in layers]
    written = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=frames[0].crs)
    if out.suffix == ".geojson":  # RFC 7946: WGS84 on disk; back to the raster's CRS here
        assert written.crs == "EPSG:4326"
        written = written.to_crs(CRS)
    return written


@pytest.mark.parametrize("return_frame", [True, False])
@pytest.mark.parametrize(
    ("name", "layer_per_type"),
    [
        ("changes.gpkg", False),
        ("changes.gpkg", True),
        ("changes.geojson", False),
        ("changes.fgb", False),
        ("changes.parquet", False),
    ],
)
@pytest.mark.parametrize(
    ("simplify", "regularize"),
    [(0.0, None), (0.5, None), (0.0, "rectangle"), (0.5, "rectangle"), (0.5, "orthogonal")],
)
def test_postprocessed_polygons_written_in_every_format(
    tmp_path: Path,
    staircase_paths: SimpleNamespace,
    simplify: float,
    regularize: str | None,
    name: str,
    layer_per_type: bool,
    return_frame: bool,
) -> None:
    # Simplified/regularized outlines used to reach the streaming (return_frame=False) writer
    # as shapely objects: "TypeError: expected bytes, Polygon found".
    out = tmp_path / name
    options = {"block_size": 16, "workers": 1, "simplify": simplify, "regularize": regularize}
    result = vectorize_changes(
        staircase_paths, out, layer_per_type=layer_per_type, return_frame=return_frame, **options
    )
    assert (result is None) == (not return_frame)
    written = read_written(out, layer_per_type).sort_values("change_id", ignore_index=True)
    assert written.crs == CRS
    # GeoJSON went through WGS84 at 7 decimals (~1 cm); the other formats are exact.
    tol, rtol = (0.02, 3e-2) if out.suffix == ".geojson" else (1e-6, 1e-6)

    def same(a: shapely.Geometry, b: shapely.Geometry) -> bool:  # same vertices, within tol
        count = shapely.get_num_coordinates
        return count(a) == count(b) and shapely.hausdorff_distance(a, b) <= tol

    assert sorted(written["change_type"]) == [
        "cropland → road",
        "demolished building",
        "new building",
    ]
    geoms = np.asarray(written.geometry.values, dtype=object)
    assert shapely.is_valid(geoms).all() and not shapely.is_empty(geoms).any()
    assert set(shapely.get_type_id(geoms)) == {shapely.GeometryType.POLYGON}
    # Area and perimeter fields describe the written (post-processed) outlines.
    np.testing.assert_allclose(written["area_m2"], shapely.area(geoms), rtol=rtol)
    np.testing.assert_allclose(written["perimeter_m"], shapely.length(geoms), rtol=rtol)
    plain = vectorize_changes(staircase_paths, block_size=16, workers=1)
    plain = plain.sort_values("change_id", ignore_index=True)
    assert written["pixel_count"].tolist() == plain["pixel_count"].tolist()
    np.testing.assert_allclose(written["mean_prob"].astype(float), 200 / 255, rtol=1e-9)
    # The options took effect: same result as the in-memory frame, and visible changes.
    frame = vectorize_changes(staircase_paths, **options).sort_values("change_id")
    assert all(same(a, b) for a, b in zip(geoms, frame.geometry.values, strict=True))
    by_type = {t: g for t, g in zip(written["change_type"], geoms, strict=True)}
    plain_by_type = dict(zip(plain["change_type"], plain.geometry.values, strict=True))
    # The road is never regularized and a straight strip has nothing to simplify.
    assert same(by_type["cropland → road"], plain_by_type["cropland → road"])
    building = by_type["new building"]
    staircase = plain_by_type["new building"]
    vertices = shapely.get_num_coordinates
    if regularize == "rectangle":
        assert vertices(building) == 5  # its oriented rectangle
    elif simplify > 0:
        assert vertices(building) < vertices(staircase)
    else:
        assert same(building, staircase)


def _default_styles(path: Path) -> dict[str, ET.Element]:
    """Layer -> parsed QML of its default style in the GeoPackage's layer_styles table."""
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT f_table_name, f_geometry_column, styleQML FROM layer_styles "
            "WHERE useAsDefault = 1"
        ).fetchall()
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    assert all(column == "geom" for _, column, _ in rows)
    return {table: ET.fromstring(qml.split("\n", 1)[1]) for table, _, qml in rows}


def _categories(qml: ET.Element) -> dict[str, str]:
    renderer = qml.find("renderer-v2")
    assert renderer is not None and renderer.get("type") == "categorizedSymbol"
    assert renderer.get("attr") == "change_type"
    return {str(c.get("value")): str(c.get("label")) for c in renderer.iter("category")}


@pytest.mark.parametrize("return_frame", [True, False])
def test_gpkg_layers_open_styled_by_change_type(
    tmp_path: Path, semantic_paths: SimpleNamespace, stress_path: Path, return_frame: bool
) -> None:
    # The changes GeoPackage had no style: QGIS opened every polygon in one random colour.
    out = tmp_path / "changes.gpkg"
    frame = vectorize_changes(semantic_paths, out, workers=1, return_frame=return_frame)
    types = set(pyogrio.read_dataframe(out, layer="changes")["change_type"])
    # (the pixel with an unknown class before is "unknown → cropland")
    assert types == {"new building", "demolished building", "cropland → road", "unknown → cropland"}
    assert frame is None or set(frame["change_type"]) == types
    styles = _default_styles(out)
    assert set(styles) == {"changes"}
    assert _categories(styles["changes"]) == {t: t for t in types}
    # One layer per type: each layer styled with its own category.
    layered = tmp_path / "layered.gpkg"
    vectorize_changes(semantic_paths, layered, layer_per_type=True, workers=1)
    styles = _default_styles(layered)
    assert _categories(styles["changes_new_building"]) == {"new building": "new building"}
    assert set(styles) == {
        "changes_new_building",
        "changes_demolished_building",
        "changes_cropland_to_road",
        "changes_unknown_to_cropland",
    }
    # Appending binary polygons adds their category to the layer's one default style.
    vectorize_changes(stress_path, out, mode="append", workers=1, return_frame=return_frame)
    assert _categories(_default_styles(out)["changes"]) == {t: t for t in types | {"change"}}


def test_geojson_is_rfc7946_wgs84_without_crs_member(
    tmp_path: Path, semantic_paths: SimpleNamespace
) -> None:
    import json

    frame = vectorize_changes(semantic_paths, workers=1)
    expected = frame.to_crs("EPSG:4326")
    for return_frame in (True, False):
        out = tmp_path / f"changes_{return_frame}.geojson"
        vectorize_changes(semantic_paths, out, workers=1, return_frame=return_frame)
        data = json.loads(out.read_text())
        assert "crs" not in data  # RFC 7946 dropped the legacy member
        features = data["features"]
        assert [f["properties"]["change_id"] for f in features] == frame["change_id"].tolist()
        for feature, geometry in zip(features, expected.geometry, strict=True):
            coords = np.array(feature["geometry"]["coordinates"][0])
            lon, lat = coords[:, 0], coords[:, 1]
            assert ((lon >= -180) & (lon <= 180) & (lat >= -90) & (lat <= 90)).all()
            # The UTM 50N grid at (500000, 4000000) is near 117° E, 36.1° N.
            assert np.allclose(lon, 117.0, atol=0.01) and np.allclose(lat, 36.14, atol=0.01)
            written = shapely.geometry.shape(feature["geometry"])
            # GDAL writes 7 decimals (~1 cm) and the exterior ring counter-clockwise.
            assert shapely.hausdorff_distance(written, geometry) < 1e-6
            assert shapely.get_num_coordinates(written) == shapely.get_num_coordinates(geometry)
            assert written.exterior.is_ccw
        # Attributes keep the raster's metric measures.
        props = [f["properties"]["area_m2"] for f in features]
        np.testing.assert_allclose(props, frame["area_m2"], rtol=1e-9)
    # The other formats keep the raster's CRS.
    fgb = tmp_path / "changes.fgb"
    vectorize_changes(semantic_paths, fgb, workers=1)
    assert pyogrio.read_info(fgb)["crs"] == CRS


def test_geojson_of_a_raster_without_crs_is_refused_before_work(tmp_path: Path) -> None:
    change = np.zeros((16, 16), np.uint8)
    change[2:6, 2:6] = 1
    path = write_raster(tmp_path / "nocrs.tif", change, crs=None)
    out = tmp_path / "changes.geojson"
    with pytest.raises(OutputError, match=r"changes\.geojson.*no CRS"):
        vectorize_changes(path, out, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nocrs.tif"]
    frame = vectorize_changes(path, workers=1)
    with pytest.raises(OutputError, match="RFC 7946"):
        write_changes(frame, out)
    assert not out.exists()
    write_changes(frame, tmp_path / "changes.gpkg")  # formats with native coordinates are fine
