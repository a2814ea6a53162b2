"""Tests of geochange.synthetic.generate: make_scene's files, determinism, workers, memory."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely

from geochange.errors import ConfigurationError
from geochange.synthetic import CLASS_NAMES, Scene, make_scene
from tests.builders import read_raster
from tests.synthetic import HEIGHT, SEED, WIDTH


def test_georeferencing_and_file_layout(scene: Scene) -> None:
    expected_transform = scene.transform
    assert expected_transform.a == pytest.approx(0.6) and expected_transform.e == pytest.approx(
        -0.6
    )
    for path in (scene.pre, scene.post, scene.change, scene.semantic_pre, scene.semantic_post):
        with rasterio.open(path) as ds:
            assert ds.crs.to_epsg() == 32650
            assert ds.transform == expected_transform
            assert (ds.height, ds.width) == (HEIGHT, WIDTH)
            assert ds.res == pytest.approx((0.6, 0.6))
            assert tuple(ds.bounds) == pytest.approx(scene.bounds)
            assert ds.dtypes[0] == "uint8"
            assert ds.profile["tiled"] and ds.profile["blockxsize"] == 512
            assert ds.profile["compress"] == "zstd"
            assert ds.overviews(1) == [2]
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    # A plausible UTM 50N location (centre of the zone's area of use), 0.6 m pixels.
    left, bottom, right, top = scene.bounds
    assert 400_000 < left < 600_000 and 0 < bottom < 9_400_000
    assert right - left == pytest.approx(WIDTH * 0.6) and top - bottom == pytest.approx(
        HEIGHT * 0.6
    )
    with rasterio.open(scene.pre) as ds:
        assert ds.count == 3 and ds.nodata is None
    for path in (scene.semantic_pre, scene.semantic_post):
        with rasterio.open(path) as ds:
            assert ds.nodata == 255
            assert json.loads(ds.tags()["GEOCHANGE_CLASS_NAMES"]) == list(CLASS_NAMES)
            assert ds.colormap(1)[0][:3] == (230, 50, 50)
    with rasterio.open(scene.change) as ds:
        assert ds.nodata == 255
    frame = pyogrio.read_dataframe(scene.changed_buildings, layer="changed_buildings")
    assert frame.crs.to_epsg() == 32650
    assert scene.class_names == CLASS_NAMES


def test_custom_crs_resolution_origin_and_bands(tmp_path) -> None:
    out = make_scene(
        tmp_path, 384, 512, seed=1, crs="EPSG:3857", res=2.5, bands=5, origin=(1000.0, 9000.0)
    )
    with rasterio.open(out.pre) as ds:
        assert ds.crs.to_epsg() == 3857
        assert ds.count == 5
        assert tuple(ds.transform)[:6] == (2.5, 0.0, 1000.0, 0.0, -2.5, 9000.0)
        assert tuple(ds.bounds) == pytest.approx((1000.0, 9000.0 - 960.0, 2280.0, 9000.0))
        image = ds.read()
    # Band 4 is NIR-like: trees are much brighter than in red, bare land is not.
    classes = read_raster(out.semantic_pre, 1).astype(np.float64)
    red, nir = image[0].astype(np.float64), image[3].astype(np.float64)
    trees, bare = classes == 4, classes == 3
    assert trees.any() and bare.any()
    assert (nir - red)[trees].mean() > 80
    assert abs((nir - red)[bare].mean()) < 60


def test_deterministic_for_a_seed_and_seed_dependent(scene: Scene, tmp_path) -> None:
    again = make_scene(tmp_path / "again", HEIGHT, WIDTH, seed=SEED)  # other block size
    for name in ("pre", "post", "semantic_pre", "semantic_post", "change"):
        np.testing.assert_array_equal(
            read_raster(getattr(again, name)), read_raster(getattr(scene, name)), name
        )
    layer = "changed_buildings"
    first = pyogrio.read_dataframe(scene.changed_buildings, layer=layer).sort_values("building_id")
    second = pyogrio.read_dataframe(again.changed_buildings, layer=layer).sort_values("building_id")
    assert list(first["building_id"]) == list(second["building_id"])
    assert all(
        a.equals_exact(b, 1e-9) for a, b in zip(first.geometry, second.geometry, strict=True)
    )
    other = make_scene(tmp_path / "other", 256, 256, seed=SEED + 1)
    assert not np.array_equal(read_raster(other.pre), read_raster(scene.pre)[:, :256, :256])


def test_parallel_workers_write_identical_files(scene: Scene, tmp_path) -> None:
    parallel = make_scene(tmp_path, HEIGHT, WIDTH, seed=SEED, block_size=512, workers=2)
    for name in ("pre", "post", "semantic_pre", "semantic_post", "change"):
        np.testing.assert_array_equal(
            read_raster(getattr(parallel, name)), read_raster(getattr(scene, name))
        )
    assert parallel.stats["new_buildings"] == scene.stats["new_buildings"]


def test_tiny_scene_without_changed_buildings_has_a_valid_empty_layer(tmp_path) -> None:
    tiny = make_scene(tmp_path, 64, 64, seed=0)
    frame = pyogrio.read_dataframe(tiny.changed_buildings, layer="changed_buildings")
    assert len(frame) == 0 and {"change_type", "building_id"} <= set(frame.columns)
    info = pyogrio.read_info(tiny.changed_buildings, layer="changed_buildings")
    assert info["geometry_type"] == "Polygon" and info["crs"] == "EPSG:32650"
    assert tiny.stats["new_buildings"] == tiny.stats["demolished_buildings"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"height": 0}, "height"),
        ({"width": -5}, "width"),
        ({"res": 0.0}, "res"),
        ({"bands": 2}, "bands"),
        ({"crs": "EPSG:999999"}, "CRS"),
        ({"crs": "EPSG:4326", "res": 0.6, "height": 1000}, "degrees"),
        ({"block_size": 300}, "block_size"),
        ({"workers": 0}, "workers"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, kwargs, message) -> None:
    args = {"height": 64, "width": 64} | kwargs
    height, width = args.pop("height"), args.pop("width")
    with pytest.raises(ConfigurationError, match=message):
        make_scene(tmp_path, height, width, **args)
    assert not list(tmp_path.iterdir())  # rejected before writing anything


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import numpy, rasterio, geopandas, shapely, scipy.ndimage, tqdm
    from geochange.synthetic import make_scene
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    make_scene(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), seed=2)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "after_kib": after}))
    """
)


def peak_rss_growth_mib(tmp_path, height: int, width: int) -> float:
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path), str(height), str(width)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return (figures["after_kib"] - figures["before_kib"]) / 1024


def test_block_writer_memory_is_bounded(tmp_path) -> None:
    # 2048 x 4096 px: the float32 render buffers of both dates (3 bands) alone would take
    # 2 * 3 * 4 B * 8.4 Mpx = 192 MiB, plus 72 MiB of uint8 outputs, if the scene were held whole.
    height, width = 2048, 4096
    assert (2 * 3 * 4 + 9) * height * width / 2**20 > 256
    assert peak_rss_growth_mib(tmp_path, height, width) < 200


@pytest.mark.slow
def test_block_writer_memory_is_bounded_at_300_mb_of_outputs(tmp_path) -> None:
    # 5632 x 5632 px: 9 bytes/px of outputs (two RGB images, three label rasters) = 272 MiB if
    # held whole; the block writer stays far below that.
    size = 5632
    assert size * size * 9 / 2**20 > 256
    assert peak_rss_growth_mib(tmp_path, size, size) < 200


# A 512 x 768 scene of seed 4 with 5 bands in 256-pixel blocks, as the generator wrote it before
# geochange/synthetic.py became a package: sha256 of each raster's pixels, the changed buildings'
# rows (area in m², 6 decimals) and the sha256 of their vertices rounded to 1e-6 m.
GOLDEN_PIXELS = {
    "pre": "fe3e848fbec5fa75a69d944ce83931edcd874a1fe9cd8783c582f0e0462d281f",
    "post": "edf985f3279cf762053b84c19aac539f225104f6cff4c75be0e6cfb76e2a5106",
    "semantic_pre": "6f79984e5b25890ca86f4462a9192403501883dab498c9ada8724e398527d649",
    "semantic_post": "e669bc69faf92c8bcfdf0788a32519475557c49eab70b5a08c85cb4f44b6d21d",
    "change": "73e6ca1ae949d44926c401690a21e36ced5edea36ea273242add203409d9782a",
}
GOLDEN_BUILDINGS = [
    ("demolished building", 35, "building", "bare land", 1884.958594),
    ("new building", 131, "bare land", "building", 662.887202),
    ("new building", 134, "bare land", "building", 369.055825),
    ("new building", 135, "bare land", "building", 631.510449),
    ("new building", 138, "bare land", "building", 346.384027),
    ("demolished building", 140, "building", "bare land", 345.31646),
    ("demolished building", 4194320, "building", "bare land", 201.713359),
    ("demolished building", 4194327, "building", "bare land", 438.367301),
    ("demolished building", 4194465, "building", "bare land", 564.808276),
]
GOLDEN_VERTICES = "1f4926ac5a634cc1c1c3008b787b577bd73b634c92320fc9155cc073f9165fef"


def test_output_is_unchanged_for_a_seed(tmp_path) -> None:
    scene = make_scene(tmp_path, 512, 768, seed=4, bands=5, block_size=256)
    for name, digest in GOLDEN_PIXELS.items():
        pixels = read_raster(getattr(scene, name))
        assert hashlib.sha256(pixels.tobytes()).hexdigest() == digest, name
    frame = pyogrio.read_dataframe(scene.changed_buildings, layer="changed_buildings")
    rows = [(r.change_type, r.building_id, r.from_class, r.to_class) for r in frame.itertuples()]
    assert rows == [golden[:4] for golden in GOLDEN_BUILDINGS]
    np.testing.assert_allclose(frame["area_m2"], [g[4] for g in GOLDEN_BUILDINGS], atol=1e-6)
    vertices = np.round(shapely.get_coordinates(frame.geometry.values), 6)
    assert hashlib.sha256(vertices.tobytes()).hexdigest() == GOLDEN_VERTICES


def test_changed_buildings_open_styled_in_qgis(scene: Scene) -> None:
    """The GeoPackage carries a default QGIS style categorized by change_type, as predictions do."""
    import sqlite3
    import xml.etree.ElementTree as ET

    from geochange.classes import CHANGE_TYPE_COLORS
    from geochange.io import polygon_layer

    with sqlite3.connect(scene.changed_buildings) as db:
        rows = db.execute(
            "SELECT f_table_name, f_geometry_column, styleQML FROM layer_styles "
            "WHERE useAsDefault = 1"
        ).fetchall()
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    assert [(table, column) for table, column, _ in rows] == [("changed_buildings", "geom")]
    renderer = ET.fromstring(rows[0][2].split("\n", 1)[1]).find("renderer-v2")
    assert renderer is not None and renderer.get("type") == "categorizedSymbol"
    assert renderer.get("attr") == "change_type"
    types = ["new building", "demolished building"]
    categories = [(c.get("value"), c.get("label")) for c in renderer.iter("category")]
    assert categories == [(t, t) for t in types]
    fills = [o.get("value") for o in renderer.iter("Option") if o.get("name") == "color"]
    expected = [CHANGE_TYPE_COLORS[t] for t in types]
    assert fills[:2] == [",".join(map(str, (*rgb, 128))) for rgb in expected]
    # Reading "the" layer still means the buildings, not QGIS's style table.
    assert polygon_layer(scene.changed_buildings) == "changed_buildings"
    frame = pyogrio.read_dataframe(scene.changed_buildings, layer="changed_buildings")
    assert set(frame["change_type"]) == {"new building", "demolished building"}
