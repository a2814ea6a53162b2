"""spatial_split: stripes when they fit, window-sized blocks when they would be too thin."""

from __future__ import annotations

import math
import warnings

import pytest
import shapely

from geochange.datasets import region_boxes, spatial_split
from geochange.errors import ConfigurationError

X0, Y0 = 500000.0, 4000000.0  # a UTM-like origin, so float edges are exercised


def _region(width_px: int, height_px: int, res: float) -> tuple[float, float, float, float]:
    return (X0, Y0 - height_px * res, X0 + width_px * res, Y0)


def _on_grid(value: float, origin: float, res: float) -> bool:
    steps = (value - origin) / res
    return abs(steps - round(steps)) < 1e-6


@pytest.mark.parametrize(
    ("size", "res", "patch"),
    [
        ((2048, 2048), 0.6, 256),  # the README quickstart scene: 8 x 8 windows
        ((768, 768), 1.0, 128),  # 6 x 6 windows
        ((768, 1536), 0.5, 256),  # tall: the split runs along y
    ],
)
def test_blocks_when_stripes_would_be_thinner_than_a_window(
    size: tuple[int, int], res: float, patch: int
) -> None:
    bounds = _region(*size, res)
    fractions = (0.8, 0.1, 0.1)
    window = patch * res
    # A 10 % stripe is narrower than one window here.
    assert 0.1 * max(size) < patch
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # these grids are fine enough: no share warning
        regions = spatial_split(bounds, fractions, min_size=window, pixel_size=res)
    total = (bounds[2] - bounds[0]) * (bounds[3] - bounds[1])
    cells = (size[0] // patch) * (size[1] // patch)
    for region, fraction in zip(regions, fractions, strict=True):
        assert region.is_valid and not region.is_empty
        # Shares as close to the fractions as whole blocks allow.
        assert abs(region.area / total - fraction) <= 1 / cells + 1e-9
        boxes = region_boxes(region)
        assert math.isclose(sum((b[2] - b[0]) * (b[3] - b[1]) for b in boxes), region.area)
        for box in boxes:
            assert box[2] - box[0] >= window - 1e-6 and box[3] - box[1] >= window - 1e-6
            assert region.buffer(1e-6).contains(shapely.box(*box))
            assert all(_on_grid(box[i], X0, res) for i in (0, 2))
            assert all(_on_grid(box[i], Y0, res) for i in (1, 3))
    # The regions tile the scene without overlapping.
    for i in range(3):
        for j in range(i + 1, 3):
            assert regions[i].intersection(regions[j]).area < 1e-6
    assert math.isclose(shapely.union_all(regions).area, total)


def test_stripes_unchanged_when_they_fit() -> None:
    bounds = _region(8192, 2048, 0.6)  # 32 windows of 256 px along x: 10 % = 3.2 windows
    stripes = spatial_split(bounds, (0.8, 0.1, 0.1), min_size=256 * 0.6, pixel_size=0.6)
    assert stripes == spatial_split(
        bounds, (0.8, 0.1, 0.1), min_size=256 * 0.6, pixel_size=0.6, layout="stripes"
    )
    # Full-height stripes, side by side, 80 / 10 / 10 % of the width on the pixel grid.
    edges = [X0, X0 + 6554 * 0.6, X0 + 7373 * 0.6, bounds[2]]
    for stripe, lo, hi in zip(stripes, edges, edges[1:], strict=False):
        assert stripe.bounds == pytest.approx((lo, bounds[1], hi, bounds[3]))
        assert region_boxes(stripe) == [pytest.approx(stripe.bounds)]


def test_layout_stripes_still_refuses_thin_stripes() -> None:
    with pytest.raises(ConfigurationError, match="smaller than min_size"):
        spatial_split(_region(2048, 2048, 0.6), min_size=153.6, layout="stripes")


def test_no_valid_split_says_what_would_work() -> None:
    bounds = _region(256, 200, 1.0)  # 2 x 1 windows of 128 px: three splits cannot fit
    with pytest.raises(ConfigurationError, match=r"2 x 1 blocks.*use min_size <= 100") as err:
        spatial_split(bounds, (0.8, 0.1, 0.1), min_size=128, pixel_size=1.0)
    assert "fewer non-zero fractions" in str(err.value)
    # Both suggestions work.
    assert len(spatial_split(bounds, (0.8, 0.1, 0.1), min_size=100, pixel_size=1.0)) == 3
    assert not spatial_split(bounds, (0.8, 0.2, 0.0), min_size=128, pixel_size=1.0)[1].is_empty


def test_coarse_grid_warns_about_the_shares() -> None:
    with pytest.warns(UserWarning, match=r"become shares \(0.5, 0.25, 0.25\) on a grid of 2 x 2"):
        regions = spatial_split(_region(256, 256, 1.0), (0.8, 0.1, 0.1), min_size=128)
    assert [r.area for r in regions] == [2 * 128**2, 128**2, 128**2]


def test_gap_separates_blocks_of_different_splits() -> None:
    regions = spatial_split(_region(768, 768, 1.0), (0.7, 0.15, 0.15), min_size=128, gap=10)
    for i in range(3):
        for j in range(i + 1, 3):
            assert regions[i].distance(regions[j]) >= 10 - 1e-6
        boxes = [b for b in region_boxes(regions[i]) if min(b[2] - b[0], b[3] - b[1]) >= 128]
        assert boxes  # every split keeps room for a window


def test_region_boxes() -> None:
    notch = shapely.box(0, 0, 300, 200).difference(shapely.box(200, 100, 300, 200))
    boxes = region_boxes(notch)
    assert sorted(boxes) == [(0.0, 0.0, 200.0, 200.0), (200.0, 0.0, 300.0, 100.0)]
    # Collinear vertices do not cut a rectangle; disjoint parts give one box each.
    cells = shapely.union_all([shapely.box(i * 10, 0, i * 10 + 10, 10) for i in range(4)])
    assert region_boxes(cells) == [(0.0, 0.0, 40.0, 10.0)]
    two = shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(5, 5, 7, 7)])
    assert region_boxes(two) == [(0.0, 0.0, 1.0, 1.0), (5.0, 5.0, 7.0, 7.0)]
    # Anything not rectilinear keeps its bounding box, as TorchGeo's samplers do.
    triangle = shapely.Polygon([(0, 0), (4, 0), (0, 4)])
    assert region_boxes(triangle) == [(0.0, 0.0, 4.0, 4.0)]
    assert region_boxes(shapely.Polygon()) == []
