"""Tests of geochange.vectorize: block-wise polygonization equals whole-raster polygonization."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from shapely.geometry import shape

from geochange.errors import ConfigurationError, DataError, OutputError
from geochange.vectorize import (
    SCHEMA,
    change_type_name,
    regularize_polygon,
    vectorize_changes,
)
from tests import builders

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
CRS = "EPSG:32650"
RES = 0.6
TRANSFORM = Affine(RES, 0.0, 500_000.0, 0.0, -RES, 4_000_000.0)
CLASSES = ["building", "road", "water", "bare land", "tree", "cropland", "others"]


# Rasters on this module's 0.6 m grid with nodata 255.
write_raster = partial(builders.write_raster, crs=CRS, transform=TRANSFORM, nodata=255)


def whole_raster_polygons(
    values: np.ndarray, connectivity: int, transform: Affine = TRANSFORM
) -> list[shapely.Geometry]:
    """The reference: polygonize the whole array at once (GDAL), valid geometries."""
    geoms = [
        shape(geojson)
        for geojson, _ in rasterio.features.shapes(
            values.astype(np.int32),
            mask=values > 0,
            connectivity=connectivity,
            transform=transform,
        )
    ]
    return [g if g.is_valid else shapely.make_valid(g) for g in geoms]


def sort_key(geom: shapely.Geometry) -> tuple[float, ...]:
    minx, miny, maxx, maxy = geom.bounds
    return (-maxy, minx, -miny, maxx, geom.area)


def assert_same_polygons(frame, reference: list[shapely.Geometry]) -> None:
    ours = sorted(frame.geometry, key=sort_key)
    ref = sorted(reference, key=sort_key)
    assert len(ours) == len(ref)
    assert shapely.is_valid(np.array(ours, dtype=object)).all()
    for mine, theirs in zip(ours, ref, strict=True):
        assert mine.equals(theirs), (mine.wkt, theirs.wkt)
        # Same vertices (up to ring start/orientation), not just the same point set.
        assert shapely.equals_exact(
            shapely.normalize(mine), shapely.normalize(theirs), tolerance=1e-6
        ), (mine.wkt, theirs.wkt)
    pixel_area = RES * RES
    np.testing.assert_allclose(frame.geometry.area, frame["pixel_count"] * pixel_area, rtol=1e-9)
    np.testing.assert_allclose(frame["area_m2"], frame["pixel_count"] * pixel_area, rtol=1e-9)


def stress_mask() -> np.ndarray:
    """A 53 x 61 mask (block size 8 does not divide it) with seam-crossing shapes."""
    m = np.zeros((53, 61), np.uint8)
    m[2:6, 5:12] = 1  # spans the vertical seam at x=8 (2 blocks)
    m[6:11, 14:19] = 1  # spans the corner (8, 16): 4 blocks
    m[18:31, 18:31] = 1  # ring with a hole crossing seams at 24
    m[20:29, 20:29] = 0
    m[23:26, 23:26] = 1  # island inside the hole (separate polygon)
    m[7, 31] = 1  # diagonal pair across the corner (8, 32)
    m[8, 32] = 1
    m[15, 39] = 1  # diagonal across a horizontal seam (y=16)
    m[16, 40] = 1
    m[0, 0:3] = 1  # raster border, top-left
    m[50:53, 58:61] = 1  # bottom-right corner (partial block)
    m[35:52, 2:4] = 1  # U shape: arms join below, through several blocks
    m[35:52, 12:14] = 1
    m[50:52, 2:14] = 1
    m[40:47, 44:56] = 1  # shape whose hole reaches the seam at x=48 with a 1-px gap
    m[42:45, 46:54] = 0
    m[43, 50] = 255  # nodata counts as no change
    return m


@pytest.fixture(scope="module")
def stress_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_raster(tmp_path_factory.mktemp("stress") / "change.tif", stress_mask())


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("block_size", [8, 16, 13, 4096])
def test_stress_mask_equals_whole_raster(
    stress_path: Path, connectivity: int, block_size: int
) -> None:
    frame = vectorize_changes(
        stress_path, block_size=block_size, connectivity=connectivity, workers=1
    )
    mask = stress_mask()
    reference = whole_raster_polygons((mask == 1).astype(np.uint8), connectivity)
    assert_same_polygons(frame, reference)
    assert str(frame.crs) == CRS
    assert frame["change_id"].tolist() == list(range(1, len(frame) + 1))
    # The ring keeps its hole: its area excludes the 9x9 hole.
    ring = frame[frame["pixel_count"] == 13 * 13 - 9 * 9]
    assert len(ring) == 1 and len(ring.geometry.iloc[0].interiors) == 1


def test_connectivity_changes_object_count(stress_path: Path) -> None:
    four = vectorize_changes(stress_path, block_size=8, connectivity=4, workers=1)
    eight = vectorize_changes(stress_path, block_size=8, connectivity=8, workers=1)
    # The two diagonal pairs are 4 objects under 4-connectivity and 2 under 8.
    assert len(four) - len(eight) == 2
    joined = eight[eight["pixel_count"] == 2]
    assert len(joined) == 2
    assert all(g.geom_type == "MultiPolygon" and g.is_valid for g in joined.geometry)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_random_noise_equals_whole_raster(tmp_path: Path, connectivity: int) -> None:
    # Dense noise: many objects touching seams, holes, diagonal contacts everywhere.
    rng = np.random.default_rng(7)
    mask = (rng.random((90, 77)) < 0.45).astype(np.uint8)
    path = write_raster(tmp_path / "noise.tif", mask)
    reference = whole_raster_polygons(mask, connectivity)
    for block_size in (7, 32):
        frame = vectorize_changes(path, block_size=block_size, connectivity=connectivity, workers=1)
        assert_same_polygons(frame, reference)


def test_process_pool_gives_same_result(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    mask = (rng.random((120, 100)) < 0.3).astype(np.uint8)
    path = write_raster(tmp_path / "noise.tif", mask)
    serial = vectorize_changes(path, block_size=32, workers=1)
    parallel = vectorize_changes(path, block_size=32, workers=2)
    assert len(serial) == len(parallel)
    assert serial.geometry.geom_equals_exact(parallel.geometry, tolerance=0).all()
    assert (serial["pixel_count"] == parallel["pixel_count"]).all()


def test_real_levircd_labels_equal_whole_raster(tmp_path: Path) -> None:
    labels = sorted((DATA / "levircd-samples" / "label").glob("*.png"))[:4]
    if len(labels) < 4:
        pytest.skip("shared LEVIR-CD samples not available")
    tiles = []
    for path in labels:
        with rasterio.open(path) as ds:
            tiles.append((ds.read(1) > 0).astype(np.uint8))
    mosaic = np.block([[tiles[0], tiles[1]], [tiles[2], tiles[3]]])
    path = write_raster(tmp_path / "levir.tif", mosaic)
    frame = vectorize_changes(path, block_size=100, workers=1)
    assert len(frame) > 10
    assert_same_polygons(frame, whole_raster_polygons(mosaic, 4))


def test_levircd_0_255_labels_need_mask_values(tmp_path: Path, capsys) -> None:
    from geochange.cli import main

    labels = sorted((DATA / "levircd-samples" / "label").glob("*.png"))[:2]
    if len(labels) < 2:
        pytest.skip("shared LEVIR-CD samples not available")
    raw = np.hstack([rasterio.open(path).read(1) for path in labels])
    assert set(np.unique(raw)) == {0, 255}
    binary = write_raster(tmp_path / "levir01.tif", (raw == 255).astype(np.uint8))
    expected = vectorize_changes(binary, block_size=100, workers=1)
    assert len(expected) >= 5
    for nodata in (None, 255):
        path = write_raster(tmp_path / f"levir_{nodata}.tif", raw, nodata=nodata)
        # Neither "every 255 is nodata: 0 polygons" nor "any non-zero value is change".
        with pytest.raises(DataError, match=r"levir_.*0/255 mask.*mask_values=\"0,255\""):
            vectorize_changes(path, workers=1)
        frame = vectorize_changes(path, block_size=100, workers=1, mask_values="0,255")
        assert frame.geometry.geom_equals_exact(expected.geometry, tolerance=0).all()
    out = tmp_path / "levir.gpkg"
    cli = ["vectorize", str(path), "--out", str(out), "--quiet", "--workers", "1"]
    assert main(cli) == 1
    err = capsys.readouterr().err
    assert err.startswith("geochange vectorize: error: ") and "--mask-values 0,255" in err
    assert "Traceback" not in err and not out.exists()
    assert main([*cli, "--mask-values", "0,255"]) == 0
    assert len(pyogrio.read_dataframe(out)) == len(expected)


@pytest.mark.parametrize("value", [2, 7, 128])
def test_out_of_range_change_values_are_rejected(tmp_path: Path, value: int) -> None:
    mask = stress_mask()
    mask[mask == 1] = value
    path = write_raster(tmp_path / "bad.tif", mask)
    with pytest.raises(DataError, match=rf"bad\.tif' holds value {value} outside"):
        vectorize_changes(path, workers=1)


def test_values_outside_the_open_time_sample_fail_in_their_block(
    tmp_path: Path, monkeypatch
) -> None:
    import geochange.io.raster

    mask = stress_mask()
    mask[-1, -1] = 7
    path = write_raster(tmp_path / "late.tif", mask)
    # Sample only the first strip when the file is opened: the block pass still finds the 7.
    monkeypatch.setattr(geochange.io.raster, "_MASK_SAMPLE_PIXELS", 1)
    with pytest.raises(DataError, match=r"late\.tif' holds value 7 outside"):
        vectorize_changes(path, block_size=16, workers=1)


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
    assert [str(row[0]) for row in pyogrio.list_layers(out)] == ["changes"]
    expected = whole_raster_polygons((stress_mask() == 1).astype(np.uint8), 4)
    assert len(pyogrio.read_dataframe(out)) == len(expected)
    # Nothing of this run is left next to the output.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".changes.gpkg.partial.gpkg", out.name]


def semantic_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """pre/post classes, change and probability with known building changes across seams."""
    pre = np.full((40, 40), 5, np.uint8)  # cropland
    post = pre.copy()
    pre[20:40, 30:40] = 3  # bare land in the south-east
    post[20:40, 30:40] = 3
    post[5:14, 5:14] = 0  # new building over a seam corner (block 8)
    post[30:36, 26:35] = 0  # new building over cropland and bare land
    pre[22:28, 2:12] = 0  # demolished building, becomes bare land
    post[22:28, 2:12] = 3
    post[5:14, 14:18] = 1  # new road touching the new building (stays a separate polygon)
    pre[0, 39] = 255  # nodata classes
    change = (pre != post).astype(np.uint8)
    prob = np.zeros((40, 40), np.uint8)
    prob[change == 1] = 200
    prob[6, 6] = 255
    return pre, post, change, prob


@pytest.fixture
def semantic_paths(tmp_path: Path) -> SimpleNamespace:
    pre, post, change, prob = semantic_scene()
    return SimpleNamespace(
        change=write_raster(tmp_path / "change.tif", change),
        probability=write_raster(tmp_path / "prob.tif", prob, nodata=None),
        semantic_pre=write_raster(tmp_path / "pre.tif", pre, class_names=CLASSES),
        semantic_post=write_raster(tmp_path / "post.tif", post, class_names=CLASSES),
        transition=None,
        class_names=None,
    )


def test_semantic_attributes_and_change_types(semantic_paths: SimpleNamespace) -> None:
    # A PredictionResult-like object (duck typing); class names from the rasters' tag.
    frame = vectorize_changes(semantic_paths, block_size=8, workers=1)
    assert list(frame.columns) == [*SCHEMA, "geometry"]
    by_type = frame.groupby("change_type")["pixel_count"].apply(sorted).to_dict()
    assert by_type["new building"] == [6 * 9, 9 * 9]
    assert by_type["demolished building"] == [6 * 10]
    assert by_type["cropland → road"] == [9 * 4]
    new = frame[frame["change_type"] == "new building"].sort_values("pixel_count")
    # The building over cropland and bare land: to building, from the majority (cropland 4x6
    # vs bare land 5x6 -> bare land).
    assert new["to_class"].tolist() == ["building", "building"]
    assert new["from_class"].tolist() == ["bare land", "cropland"]
    big = new.iloc[1]
    assert big["max_prob"] == pytest.approx(1.0)
    assert big["mean_prob"] == pytest.approx((200 * 80 + 255) / 81 / 255)
    demolished = frame[frame["change_type"] == "demolished building"].iloc[0]
    assert (demolished["from_class"], demolished["to_class"]) == ("building", "bare land")
    # Geometries equal whole-raster polygonization of the change-type regions.
    pre, post, change, _ = semantic_scene()
    codes = np.where(change == 1, 3 + pre.astype(np.int32) * 8 + post, 0)
    codes[(change == 1) & (post == 0)] = 1
    codes[(change == 1) & (pre == 0)] = 2
    codes[(change == 1) & (pre == 255)] = 3 + 7 * 8 + post[(change == 1) & (pre == 255)]
    assert_same_polygons(frame, whole_raster_polygons(codes, 4))


def test_group_by_change_merges_touching_types(semantic_paths: SimpleNamespace) -> None:
    frame = vectorize_changes(semantic_paths, block_size=8, workers=1, group_by="change")
    _, _, change, _ = semantic_scene()
    assert_same_polygons(frame, whole_raster_polygons(change, 4))
    merged = frame[frame["pixel_count"] == 81 + 36].iloc[0]  # building + road
    assert merged["change_type"] == "new building"


def test_change_classes_and_min_area(semantic_paths: SimpleNamespace) -> None:
    only_buildings = vectorize_changes(
        semantic_paths.change,
        semantic_pre=semantic_paths.semantic_pre,
        semantic_post=semantic_paths.semantic_post,
        change_classes=["building"],
        workers=1,
    )
    assert set(only_buildings["change_type"]) == {"new building", "demolished building"}
    large = vectorize_changes(semantic_paths.change, min_area=60 * RES * RES, workers=1)
    assert (large["pixel_count"] >= 60).all() and len(large) >= 1
    with pytest.raises(ConfigurationError, match="unknown class"):
        vectorize_changes(
            semantic_paths,
            change_classes=["castle"],
            workers=1,
        )


def test_explicit_class_names_override_tags(semantic_paths: SimpleNamespace) -> None:
    names = ["bâtiment", "route", "eau", "sol nu", "arbre", "culture", "autre"]
    frame = vectorize_changes(
        semantic_paths.change,
        semantic_pre=semantic_paths.semantic_pre,
        semantic_post=semantic_paths.semantic_post,
        class_names=names,
        workers=1,
    )
    assert "culture → route" in set(frame["change_type"])


def test_change_type_name() -> None:
    assert change_type_name("cropland", "building") == "new building"
    assert change_type_name("building", "road") == "demolished building"
    assert change_type_name("tree", "road") == "tree → road"
    assert change_type_name(None, None) is None


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


def test_binary_nulls_in_file(tmp_path: Path, stress_path: Path) -> None:
    out = tmp_path / "binary.gpkg"
    vectorize_changes(stress_path, out, workers=1)
    back = pyogrio.read_dataframe(out)
    assert back["mean_prob"].isna().all() and back["change_type"].isna().all()


@pytest.mark.parametrize("suffix", [".parquet", ".geojson", ".fgb"])
def test_other_formats_round_trip(tmp_path: Path, stress_path: Path, suffix: str) -> None:
    import geopandas as gpd

    out = tmp_path / f"changes{suffix}"
    frame = vectorize_changes(stress_path, out, workers=1)
    back = gpd.read_parquet(out) if suffix == ".parquet" else gpd.read_file(out)
    assert len(back) == len(frame)
    assert back.crs == frame.crs
    np.testing.assert_allclose(sorted(back.geometry.area), sorted(frame.geometry.area))


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
    assert {row[0] for row in pyogrio.list_layers(out)} == {"only"}


def test_simplify_keeps_valid_non_overlapping(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    mask = (rng.random((60, 60)) < 0.55).astype(np.uint8)
    path = write_raster(tmp_path / "noise.tif", mask)
    plain = vectorize_changes(path, block_size=16, workers=1)
    simple = vectorize_changes(path, block_size=16, workers=1, simplify=2 * RES)
    assert len(simple) == len(plain)
    assert simple.geometry.is_valid.all() and not simple.geometry.is_empty.any()
    assert (
        shapely.get_num_coordinates(simple.geometry.values).sum()
        < shapely.get_num_coordinates(plain.geometry.values).sum()
    )
    # No new overlaps between neighbouring polygons.
    union_area = shapely.union_all(simple.geometry.values).area
    assert union_area == pytest.approx(simple.geometry.area.sum(), rel=1e-9)


def test_regularize_rotated_building() -> None:
    rect = shapely.affinity.rotate(shapely.box(0, 0, 20, 10), 30, origin=(0, 0))
    staircase = rasterio.features.shapes(
        rasterio.features.rasterize(
            [rect], out_shape=(40, 40), transform=Affine.translation(-15, -5)
        ),
        connectivity=4,
        transform=Affine.translation(-15, -5),
    )
    pixels = max((shape(g) for g, v in staircase if v == 1), key=lambda g: g.area)
    square = regularize_polygon(pixels, "rectangle")
    assert square.is_valid and len(square.exterior.coords) == 5
    assert square.symmetric_difference(rect).area / rect.area < 0.15
    ortho = regularize_polygon(pixels, "orthogonal")
    assert ortho.is_valid
    coords = np.asarray(ortho.exterior.coords)
    edges = np.diff(coords, axis=0)
    angles = np.degrees(np.arctan2(edges[:, 1], edges[:, 0])) % 90
    assert np.all((np.abs(angles - angles[0]) < 1e-6) | (np.abs(angles - angles[0]) > 90 - 1e-6))
    assert len(coords) < len(pixels.exterior.coords)


def test_regularize_only_building_types(semantic_paths: SimpleNamespace) -> None:
    frame = vectorize_changes(semantic_paths, workers=1, regularize="rectangle")
    plain = vectorize_changes(semantic_paths, workers=1)
    road = frame[frame["change_type"] == "cropland → road"].geometry.iloc[0]
    assert road.equals(plain[plain["change_type"] == "cropland → road"].geometry.iloc[0])
    assert frame.geometry.is_valid.all()


def test_geographic_crs_area_in_square_metres(tmp_path: Path) -> None:
    transform = Affine(1e-4, 0, 10.0, 0, -1e-4, 45.0)
    mask = np.zeros((10, 10), np.uint8)
    mask[2:5, 2:5] = 1
    path = write_raster(tmp_path / "geo.tif", mask, transform=transform, crs="EPSG:4326")
    frame = vectorize_changes(path, workers=1)
    # 3 x 3 pixels of ~7.87 m x 11.1 m at 45° N.
    assert 700 < frame["area_m2"].iloc[0] < 850
    assert frame["pixel_count"].iloc[0] == 9


def test_bad_inputs(tmp_path: Path, stress_path: Path) -> None:
    multi = write_raster(tmp_path / "multi.tif", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DataError, match="2 bands"):
        vectorize_changes(multi)
    floats = write_raster(tmp_path / "float.tif", np.zeros((8, 8), np.float32), nodata=None)
    with pytest.raises(DataError, match="float32"):
        vectorize_changes(floats)
    other_grid = write_raster(tmp_path / "pre.tif", np.zeros((53, 60), np.uint8))
    with pytest.raises(DataError, match="not on the change raster's grid"):
        vectorize_changes(stress_path, semantic_pre=other_grid, semantic_post=other_grid)
    shifted = write_raster(
        tmp_path / "prob.tif",
        np.zeros((53, 61), np.uint8),
        transform=TRANSFORM @ Affine.translation(1, 0),
    )
    with pytest.raises(DataError, match="grid"):
        vectorize_changes(stress_path, probability=shifted)
    with pytest.raises(OutputError, match=r"\.shp"):
        vectorize_changes(stress_path, tmp_path / "out.shp")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not writable"):
        vectorize_changes(stress_path, blocker / "out.gpkg")
    with pytest.raises(DataError, match="not found"):
        vectorize_changes(tmp_path / "missing.tif")
    with pytest.raises(ConfigurationError, match="connectivity"):
        vectorize_changes(stress_path, connectivity=6)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="single layer"):
        vectorize_changes(stress_path, tmp_path / "x.fgb", layer_per_type=True)
    with pytest.raises(ConfigurationError, match="needs an output path"):
        vectorize_changes(stress_path, return_frame=False)
    with pytest.raises(ConfigurationError, match="together"):
        vectorize_changes(stress_path, semantic_pre=stress_path)


def test_cli_vectorize(tmp_path: Path, semantic_paths: SimpleNamespace) -> None:
    out = tmp_path / "cli.gpkg"
    cmd = [
        sys.executable,
        "-m",
        "geochange",
        "vectorize",
        str(semantic_paths.change),
        "--out",
        str(out),
        "--probability",
        str(semantic_paths.probability),
        "--semantic-pre",
        str(semantic_paths.semantic_pre),
        "--semantic-post",
        str(semantic_paths.semantic_post),
        "--min-area",
        "1",
        "--block-size",
        "16",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "new building" in done.stdout
    back = pyogrio.read_dataframe(out)
    assert (back["change_type"] == "new building").sum() == 2
    bad = subprocess.run(
        [*cmd[:5], "--out", str(tmp_path / "x.txt")], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 1 and "unknown output format" in bad.stderr


def test_synthetic_scene_recovers_changed_buildings(tmp_path: Path) -> None:
    synthetic = pytest.importorskip("geochange.synthetic")
    if not hasattr(synthetic, "make_scene"):
        pytest.skip("geochange.synthetic.make_scene not available yet")
    import geopandas as gpd

    scene = synthetic.make_scene(tmp_path / "scene", 1024, 1024, seed=5)
    frame = vectorize_changes(
        scene.change,
        semantic_pre=scene.semantic_pre,
        semantic_post=scene.semantic_post,
        block_size=256,
    )
    truth = gpd.read_file(scene.changed_buildings)
    assert len(truth) > 0
    ours = frame[frame["change_type"].isin(["new building", "demolished building"])]
    tree = shapely.STRtree(ours.geometry.values)
    matched = 0
    for geom, ctype in zip(truth.geometry, truth["change_type"], strict=True):
        best = 0.0
        best_type = None
        for i in tree.query(geom):
            candidate = ours.geometry.values[i]
            iou = geom.intersection(candidate).area / geom.union(candidate).area
            if iou > best:
                best, best_type = iou, ours["change_type"].values[i]
        matched += best >= 0.9 and best_type == ctype
    assert matched >= 0.99 * len(truth)


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


def test_predictor_probability_scale_tag(tmp_path: Path) -> None:
    # The predictor writes round(p * 254) with 255 as nodata and tags the scale.
    change = np.zeros((20, 20), np.uint8)
    change[2:6, 2:6] = 1
    change[10:14, 10:16] = 1
    prob = np.zeros((20, 20), np.uint8)
    prob[2:6, 2:6] = 254
    prob[10:14, 10:16] = 127
    prob_path = write_raster(tmp_path / "probability.tif", prob)
    with rasterio.open(prob_path, "r+") as ds:
        ds.update_tags(GEOCHANGE_PROBABILITY_SCALE="254")
    frame = vectorize_changes(
        write_raster(tmp_path / "change.tif", change), probability=prob_path, workers=1
    )
    by_size = frame.sort_values("pixel_count")
    assert by_size["max_prob"].tolist() == pytest.approx([1.0, 0.5])
    assert by_size["mean_prob"].tolist() == pytest.approx([1.0, 0.5])


def test_check_vector_output_fails_before_work(tmp_path: Path) -> None:
    from geochange.errors import ConfigurationError, OutputError
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
    layers = [str(row[0]) for row in pyogrio.list_layers(out)]
    assert layers == ["changes"] or layer_per_type
    frames = [pyogrio.read_dataframe(out, layer=name) for name in layers]
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=frames[0].crs)


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
    assert sorted(written["change_type"]) == [
        "cropland → road",
        "demolished building",
        "new building",
    ]
    geoms = np.asarray(written.geometry.values, dtype=object)
    assert shapely.is_valid(geoms).all() and not shapely.is_empty(geoms).any()
    assert set(shapely.get_type_id(geoms)) == {shapely.GeometryType.POLYGON}
    # Area and perimeter fields describe the written (post-processed) outlines.
    np.testing.assert_allclose(written["area_m2"], shapely.area(geoms), rtol=1e-6)
    np.testing.assert_allclose(written["perimeter_m"], shapely.length(geoms), rtol=1e-6)
    plain = vectorize_changes(staircase_paths, block_size=16, workers=1)
    plain = plain.sort_values("change_id", ignore_index=True)
    assert written["pixel_count"].tolist() == plain["pixel_count"].tolist()
    np.testing.assert_allclose(written["mean_prob"].astype(float), 200 / 255, rtol=1e-9)
    # The options took effect: same result as the in-memory frame, and visible changes.
    frame = vectorize_changes(staircase_paths, **options).sort_values("change_id")
    assert shapely.equals_exact(geoms, frame.geometry.values, tolerance=1e-6).all()
    by_type = {t: g for t, g in zip(written["change_type"], geoms, strict=True)}
    plain_by_type = dict(zip(plain["change_type"], plain.geometry.values, strict=True))
    # The road is never regularized and a straight strip has nothing to simplify.
    assert by_type["cropland → road"].equals(plain_by_type["cropland → road"])
    building = by_type["new building"]
    staircase = plain_by_type["new building"]
    vertices = shapely.get_num_coordinates
    if regularize == "rectangle":
        assert vertices(building) == 5  # its oriented rectangle
    elif simplify > 0:
        assert vertices(building) < vertices(staircase)
    else:
        assert building.equals(staircase)


def test_corrupt_block_is_a_data_error_naming_file_and_window(tmp_path: Path, capsys) -> None:
    from geochange.cli import main as cli_main

    values = np.zeros((64, 64), np.uint8)
    values[5:20, 5:20] = 1
    values[40:60, 30:50] = 1
    path = tmp_path / "change.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=64,
        width=64,
        count=1,
        dtype="uint8",
        crs=CRS,
        transform=TRANSFORM,
        nodata=255,
        tiled=True,
        blockxsize=16,
        blockysize=16,
        compress="deflate",
    ) as ds:
        ds.write(values, 1)
    with rasterio.open(path) as ds:  # zero the inside of block (row 2, col 2): rows 32-48
        offset = int(ds.get_tag_item("BLOCK_OFFSET_2_2", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_2_2", "TIFF", bidx=1))
    data = bytearray(path.read_bytes())
    data[offset + 2 : offset + size - 2] = bytes(size - 4)
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"cannot read {re.escape(repr(str(path)))} at rows 32-"):
        vectorize_changes(path, block_size=32, workers=1)
    code = cli_main(["vectorize", str(path), "--out", str(tmp_path / "x.gpkg"), "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "geochange vectorize: error: cannot read " in err
    assert not (tmp_path / "x.gpkg").exists()
