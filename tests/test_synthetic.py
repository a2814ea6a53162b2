"""Tests of the synthetic scene generator (geochange.synthetic) and of ``geochange synth``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
import shapely

from geochange.errors import ConfigurationError, DataError
from geochange.synthetic import CLASS_NAMES, Scene, make_scene

# Seed and size chosen so that the scene holds new and demolished buildings, every class, and a
# size that is not a multiple of the block size (partial edge blocks).
SEED = 4
HEIGHT, WIDTH = 768, 1100


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    return make_scene(tmp_path_factory.mktemp("scene"), HEIGHT, WIDTH, seed=SEED, block_size=512)


def read(path, band=None):
    with rasterio.open(path) as ds:
        return ds.read(band) if band else ds.read()


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
    frame = pyogrio.read_dataframe(scene.changed_buildings)
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
    classes = read(out.semantic_pre, 1).astype(np.float64)
    red, nir = image[0].astype(np.float64), image[3].astype(np.float64)
    trees, bare = classes == 4, classes == 3
    assert trees.any() and bare.any()
    assert (nir - red)[trees].mean() > 80
    assert abs((nir - red)[bare].mean()) < 60


def test_change_equals_semantic_transitions(scene: Scene) -> None:
    pre, post, change = (
        read(scene.semantic_pre, 1),
        read(scene.semantic_post, 1),
        read(scene.change, 1),
    )
    np.testing.assert_array_equal(change, (pre != post).astype(np.uint8))
    assert set(np.unique(pre)) <= set(range(7)) and set(np.unique(post)) <= set(range(7))
    assert len(np.unique(pre)) >= 5  # a varied scene, not a single class
    fraction = change.mean()
    assert 0.002 < fraction < 0.3
    assert scene.stats["changed_pixels"] == int(change.sum())
    # Transitions are the documented ones only.
    moved = pre != post
    pairs = set(zip(pre[moved].tolist(), post[moved].tolist(), strict=True))
    building, bare, tree, crop = 0, 3, 4, 5
    allowed_land_cover = {(crop, bare), (tree, crop)}
    for before, after in pairs:
        assert before == building or after == building or (before, after) in allowed_land_cover, (
            before,
            after,
        )
    assert (building, bare) in pairs  # demolished buildings leave bare land


def test_deterministic_for_a_seed_and_seed_dependent(scene: Scene, tmp_path) -> None:
    again = make_scene(tmp_path / "again", HEIGHT, WIDTH, seed=SEED)  # other block size
    for name in ("pre", "post", "semantic_pre", "semantic_post", "change"):
        np.testing.assert_array_equal(read(getattr(again, name)), read(getattr(scene, name)), name)
    first = pyogrio.read_dataframe(scene.changed_buildings).sort_values("building_id")
    second = pyogrio.read_dataframe(again.changed_buildings).sort_values("building_id")
    assert list(first["building_id"]) == list(second["building_id"])
    assert all(
        a.equals_exact(b, 1e-9) for a, b in zip(first.geometry, second.geometry, strict=True)
    )
    other = make_scene(tmp_path / "other", 256, 256, seed=SEED + 1)
    assert not np.array_equal(read(other.pre), read(scene.pre)[:, :256, :256])


def test_parallel_workers_write_identical_files(scene: Scene, tmp_path) -> None:
    parallel = make_scene(tmp_path, HEIGHT, WIDTH, seed=SEED, block_size=512, workers=2)
    for name in ("pre", "post", "semantic_pre", "semantic_post", "change"):
        np.testing.assert_array_equal(read(getattr(parallel, name)), read(getattr(scene, name)))
    assert parallel.stats["new_buildings"] == scene.stats["new_buildings"]


def test_images_differ_by_nuisance_but_stay_alike(scene: Scene) -> None:
    pre, post = read(scene.pre).astype(np.float64), read(scene.post).astype(np.float64)
    unchanged = read(scene.change, 1) == 0
    assert 0.3 <= float(np.hypot(*scene.shift)) <= 1.0
    difference = np.abs(pre - post)[:, unchanged].mean()
    assert difference > 5  # season, sun, noise, misregistration: not identical
    # Still the same place: unchanged pixels are strongly correlated across dates.
    grey_pre, grey_post = pre.mean(0)[unchanged], post.mean(0)[unchanged]
    assert np.corrcoef(grey_pre, grey_post)[0, 1] > 0.5
    # Textured land cover: no flat colour areas.
    assert pre[1].std() > 10


def test_changed_buildings_match_change_pixels(scene: Scene) -> None:
    frame = pyogrio.read_dataframe(scene.changed_buildings)
    assert set(frame["change_type"]) == {"new building", "demolished building"}
    assert {"building_id", "from_class", "to_class", "area_m2"} <= set(frame.columns)
    pre, post, change = (
        read(scene.semantic_pre, 1),
        read(scene.semantic_post, 1),
        read(scene.change, 1),
    )
    pixel_area = 0.6 * 0.6
    with rasterio.open(scene.change) as ds:
        transform, shape = ds.transform, ds.shape
    for row in frame.itertuples():
        inside = rasterio.features.geometry_mask(
            [row.geometry], out_shape=shape, transform=transform, invert=True
        )
        if row.change_type == "new building":
            changed = inside & (change == 1) & (post == 0) & (pre != 0)
            assert row.to_class == "building" and row.from_class in CLASS_NAMES
        else:
            changed = inside & (change == 1) & (pre == 0) & (post != 0)
            assert row.from_class == "building"
        # Area agreement within one pixel along the perimeter.
        tolerance = row.geometry.length * 0.6
        assert abs(changed.sum() * pixel_area - row.geometry.area) <= tolerance, row
        assert row.area_m2 == pytest.approx(row.geometry.area)
        assert shapely.get_num_coordinates(row.geometry) == 5  # a rotated rectangle
    # Every changed building pixel belongs to one of the polygons.
    building_change = (pre == 0) != (post == 0)
    covered = rasterio.features.geometry_mask(
        list(frame.geometry), out_shape=shape, transform=transform, invert=True
    )
    assert (building_change & ~covered).sum() <= 0.01 * building_change.sum()


def test_load_reopens_the_scene(scene: Scene, tmp_path) -> None:
    loaded = Scene.load(scene.root)
    assert loaded == scene
    assert loaded.bounds == scene.bounds and loaded.shift == scene.shift
    with pytest.raises(DataError, match="no synthetic scene"):
        Scene.load(tmp_path)


def test_tiny_scene_without_changed_buildings_has_a_valid_empty_layer(tmp_path) -> None:
    tiny = make_scene(tmp_path, 64, 64, seed=0)
    frame = pyogrio.read_dataframe(tiny.changed_buildings)
    assert len(frame) == 0 and {"change_type", "building_id"} <= set(frame.columns)
    info = pyogrio.read_info(tiny.changed_buildings)
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


def test_cli_writes_a_scene(tmp_path, capsys) -> None:
    from geochange.cli import main

    out = tmp_path / "cli"
    argv = ["synth", str(out), "--size", "200x300", "--seed", "3", "--res", "0.5", "--quiet"]
    assert main(argv) == 0
    assert "Mpixel/s" in capsys.readouterr().out
    scene = Scene.load(out)
    assert (scene.height, scene.width, scene.res, scene.seed) == (200, 300, 0.5, 3)
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", str(out), "--size", "20O0x3"])
    assert exit_info.value.code == 2 and "HEIGHTxWIDTH" in capsys.readouterr().err
    # Library errors become a clean message and exit code 1.
    assert main(["synth", str(tmp_path / "bad"), "--size", "64x64", "--bands", "2"]) == 1
    assert "bands" in capsys.readouterr().err


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
