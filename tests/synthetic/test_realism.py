"""Tests of geochange.synthetic.realism and .effects: each perturbation does what it says."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
from rasterio.transform import Affine

from geochange.classes import BARE_LAND, BUILDING, CROPLAND, ROAD, TREE, WATER
from geochange.errors import ConfigurationError
from geochange.synthetic import (
    PRESETS,
    Distractors,
    Lean,
    Misregistration,
    Phenology,
    Radiometry,
    Realism,
    Scene,
    SunAngle,
    make_scene,
    resolve_realism,
)
from geochange.synthetic.effects import warp_field
from geochange.synthetic.generate import _compute_block
from geochange.synthetic.layout import _EXISTING
from geochange.synthetic.render import _HALO, _Renderer
from tests.builders import read_raster

SEED = 7
# A 512-pixel urban block of seed 7 (roads, bare land, buildings) and a rural one with a lake.
URBAN, RURAL = (1536, 256), (1536, 1280)


def block(realism: Realism, at: tuple[int, int], size: int = 512) -> dict:
    """Labels and images of one block, as make_scene computes them."""
    renderer = _Renderer(SEED, 3, realism)
    scene = Scene(Path("."), 4096, 4096, "EPSG:32650", 0.6, Affine(0.6, 0, 0, 0, -0.6, 0))
    return _compute_block(renderer, scene, at[0], at[1], size, size)


def grey(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64).mean(0)


def correlation_peak(pre: np.ndarray, post: np.ndarray, reach: int = 5) -> tuple[int, int]:
    """Offset (dy, dx) maximising the correlation of post[r, c] with pre[r + dy, c + dx]."""
    a, b = np.gradient(grey(pre)), np.gradient(grey(post))
    best, peak = -np.inf, (0, 0)
    core = (slice(reach, -reach), slice(reach, -reach))
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            score = sum(
                np.corrcoef(np.roll(ga, (-dy, -dx), (0, 1))[core].ravel(), gb[core].ravel())[0, 1]
                for ga, gb in zip(a, b, strict=True)
            )
            if score > best:
                best, peak = score, (dy, dx)
    return peak


# ---- options ------------------------------------------------------------------------------


def test_realism_resolves_from_names_dicts_and_instances() -> None:
    assert resolve_realism(None) == resolve_realism("none") == Realism()
    assert not Realism().enabled and PRESETS["levir"].enabled
    assert resolve_realism("lean") == Realism(lean=PRESETS["levir"].lean)
    assert resolve_realism({"lean": {"strength": 0.3}, "sun": True}) == Realism(
        lean=Lean(strength=0.3), sun=SunAngle()
    )
    levir = PRESETS["levir"]
    assert Realism.from_dict(levir.to_dict()) == levir
    assert resolve_realism(levir) is levir


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("urban", "unknown realism 'urban'"),
        ({"shadow": True}, "unknown realism perturbation"),
        ({"lean": {"height": 2}}, "unknown parameter.*'height'"),
        ({"phenology": {"strength": 2}}, r"phenology.strength must be in \[0, 1\]"),
        (3, "realism must be None"),
    ],
)
def test_bad_realism_is_a_configuration_error(value: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        resolve_realism(value)  # type: ignore[arg-type]


# ---- whole scenes ------------------------------------------------------------------------


def test_levir_scene_is_block_size_invariant_and_recorded(tmp_path: Path) -> None:
    small = make_scene(tmp_path / "a", 512, 768, seed=SEED, block_size=256, realism="levir")
    large = make_scene(tmp_path / "b", 512, 768, seed=SEED, block_size=512, realism="levir")
    clean = make_scene(tmp_path / "c", 512, 768, seed=SEED, block_size=512)
    for name in ("pre", "post", "semantic_pre", "semantic_post", "change"):
        np.testing.assert_array_equal(
            read_raster(getattr(small, name)), read_raster(getattr(large, name)), err_msg=name
        )
    assert not np.array_equal(read_raster(small.post), read_raster(clean.post))
    assert Scene.load(small.root).realism == PRESETS["levir"].to_dict() == small.realism
    assert Scene.load(clean.root).realism == {}
    assert math.hypot(*small.shift) == pytest.approx(1.5)


def test_warped_post_block_is_the_crop_of_a_bigger_block() -> None:
    renderer = _Renderer(SEED, 4, Realism(misregistration=Misregistration(1.3, warp=2.5)))
    halo = renderer.post_halo
    big = renderer.image(renderer.grid(0, 0, 512, 512, renderer.shift, halo), 1, halo, 0, 0)
    small_grid = renderer.grid(256, 256, 256, 256, renderer.shift, halo)
    small = renderer.image(small_grid, 1, halo, 256, 256)
    np.testing.assert_array_equal(small, big[:, 256:, 256:])


# ---- each perturbation -------------------------------------------------------------------


def test_misregistration_moves_the_correlation_peak_to_the_set_shift() -> None:
    clean = block(Realism(), URBAN, 256)
    assert max(map(abs, correlation_peak(clean["pre"], clean["post"]))) <= 1
    shifted = block(Realism(misregistration=Misregistration(3.0, angle=90)), URBAN, 256)
    assert correlation_peak(shifted["pre"], shifted["post"]) == (3, 0)
    # Labels stay on the pre grid.
    np.testing.assert_array_equal(shifted["semantic_post"], clean["semantic_post"])
    np.testing.assert_array_equal(shifted["pre"], clean["pre"])


def test_misregistration_warp_varies_smoothly_over_the_scene() -> None:
    layout = _Renderer(SEED, 3).layout
    rows, cols = np.arange(0, 4096, 64)[:, None], np.arange(0, 4096, 64)[None, :]
    dy, dx = warp_field(layout, rows, cols, 2.0, 1500.0)
    assert float(np.abs(dy).max()) <= 2.0 and float(dy.max() - dy.min()) > 1.5
    assert float(np.abs(np.diff(dx, axis=1)).max()) < 0.5  # smooth: < 0.5 px per 64 px
    warped = block(Realism(misregistration=Misregistration(0.0, warp=4.0, warp_scale=1000)), URBAN)
    ry, rx = warp_field(
        layout, np.array([[URBAN[0] + 128]]), np.array([[URBAN[1] + 128]]), 4.0, 1000
    )
    crop = (slice(64, 192), slice(64, 192))
    peak = correlation_peak(warped["pre"][:, *crop], warped["post"][:, *crop])
    assert abs(peak[0] - float(ry[0, 0])) <= 1 and abs(peak[1] - float(rx[0, 0])) <= 1


def test_radiometry_changes_both_dates_per_band_but_keeps_the_structure() -> None:
    clean = block(Realism(), URBAN, 256)
    shifted = block(Realism(radiometry=Radiometry(gain=0.3, offset=20, gamma=0.3)), URBAN, 256)
    for date in ("pre", "post"):
        a, b = clean[date].astype(np.float64), shifted[date].astype(np.float64)
        band_means = b.mean(axis=(1, 2)) - a.mean(axis=(1, 2))
        assert np.abs(band_means).max() > 8
        assert np.ptp(band_means) > 2  # per band, not one global gain
        assert np.corrcoef(grey(a).ravel(), grey(b).ravel())[0, 1] > 0.9


def test_phenology_browns_the_post_vegetation_only() -> None:
    clean, seasonal = (
        block(Realism(), RURAL, 256),
        block(Realism(phenology=Phenology(1.0)), RURAL, 256),
    )
    np.testing.assert_array_equal(clean["pre"], seasonal["pre"])
    vegetation = np.isin(clean["semantic_post"], [CROPLAND, TREE])
    assert vegetation.mean() > 0.1

    def greenness(image: np.ndarray) -> float:
        r, g, b = image.astype(np.float64)
        return float((g - (r + b) / 2)[vegetation].mean())

    assert greenness(seasonal["post"]) < greenness(clean["post"]) - 10


def test_sun_rotates_and_lengthens_the_post_shadows() -> None:
    clean = _Renderer(SEED, 3)
    sun = _Renderer(SEED, 3, Realism(sun=SunAngle(rotation=90, length=2.0)))
    (cy, cx), (sy, sx) = clean.sun[1], sun.sun[1]
    assert math.hypot(sy, sx) == pytest.approx(2 * math.hypot(cy, cx))
    assert cy * sy + cx * sx == pytest.approx(0, abs=1e-9)  # rotated by 90 degrees
    assert sun.sun[0] == clean.sun[0]
    a, b = block(Realism(), URBAN, 256), block(Realism(sun=SunAngle(90, 2.0)), URBAN, 256)
    dark = [int((grey(x["post"]) < 60).sum()) for x in (a, b)]
    assert dark[1] > 1.3 * dark[0]  # longer shadows darken more ground


def test_lean_displaces_roofs_by_height_times_the_date_vector() -> None:
    lean = Lean(strength=0.25, angles=(0.0, 90.0))
    renderer = _Renderer(SEED, 3, Realism(lean=lean))
    g = renderer.grid(URBAN[0], URBAN[1], 256, 256, (0.0, 0.0), _HALO)
    for date, unit in ((0, (0.0, 1.0)), (1, (1.0, 0.0))):  # unit: (rows, cols) per height
        _, roof, wall = renderer.roofs(g, date)
        footprint = g.building
        checked = 0
        for j in np.unique(footprint[footprint > 0]):
            b = g.buildings
            if b["state"][j - 1] != _EXISTING or (footprint == j).sum() < 400:
                continue
            h = float(b["height"][j - 1])
            fr, fc = np.argwhere(footprint == j).mean(0)
            rr, rc = np.argwhere(roof == j).mean(0)
            assert (rr - fr, rc - fc) == pytest.approx(
                (0.25 * h * unit[0], 0.25 * h * unit[1]), abs=0.5
            )
            assert (wall == j).sum() > (roof == j).sum() * 0.05  # a facade shows
            checked += 1
        assert checked >= 3
    # Labels stay on the footprints.
    clean = block(Realism(), URBAN, 256)
    leaning = block(Realism(lean=lean), URBAN, 256)
    np.testing.assert_array_equal(leaning["semantic_pre"], clean["semantic_pre"])
    assert not np.array_equal(leaning["pre"], clean["pre"])


def test_distractors_change_images_and_classes_but_not_the_binary_map() -> None:
    for at in (URBAN, RURAL):
        clean = block(Realism(), at)
        noisy = block(Realism(distractors=Distractors(water_level=6.0)), at)
        np.testing.assert_array_equal(noisy["change"], clean["change"])
        np.testing.assert_array_equal(noisy["semantic_pre"], clean["semantic_pre"])
        # Cars come and go on both dates; nothing else changes the pre image (the optical
        # blur spreads a car up to 2 pixels beyond the road).
        pre_differs = (noisy["pre"] != clean["pre"]).any(0)
        near_road = scipy.ndimage.binary_dilation(clean["semantic_pre"] == ROAD, iterations=2)
        assert not (pre_differs & ~near_road).any()
        assert pre_differs.any() == (at == URBAN)
        moved = noisy["semantic_post"] != clean["semantic_post"]
        if at == RURAL:
            # Water-level change: the true classes (land before, water after), binary 0.
            assert moved.sum() > 200
            assert set(np.unique(noisy["semantic_post"][moved])) == {WATER}
            assert not noisy["change"][moved].any()
        else:
            assert not moved.any()
        differs = np.abs(grey(noisy["post"]) - grey(clean["post"])) > 15
        sem = clean["semantic_post"]
        unchanged = clean["change"] == 0
        for cls in (ROAD, BARE_LAND) if at == URBAN else (CROPLAND,):
            # Cars on roads, construction sites on bare land, crop rotation on cropland.
            assert (differs & unchanged & (sem == cls)).sum() > 100, cls


def test_reroofed_buildings_change_colour_but_stay_buildings_unchanged() -> None:
    clean = block(Realism(), URBAN)
    reroofed = block(Realism(distractors=Distractors(reroof=1.0, cars=0, construction=0)), URBAN)
    both = (clean["semantic_pre"] == BUILDING) & (clean["semantic_post"] == BUILDING)
    assert both.sum() > 2000
    difference = np.abs(reroofed["post"].astype(float) - clean["post"].astype(float)).sum(0)
    assert np.median(difference[both]) > 40
    assert not reroofed["change"][both].any()
    assert (reroofed["semantic_post"][both] == BUILDING).all()
