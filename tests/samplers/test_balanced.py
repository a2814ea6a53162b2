"""The change-balanced sampler (geochange.samplers.balanced); both samplers in an L-shaped ROI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
import torch

from geochange.datasets import BiTemporalRasterDataset
from geochange.errors import ConfigurationError, DataError
from geochange.samplers import ChangeBalancedGeoSampler, InsideGridGeoSampler
from tests.builders import ORIGIN, Pair, make_pair, write_tif

X0, Y0 = ORIGIN


@pytest.fixture
def sparse(tmp_path: Path) -> BiTemporalRasterDataset:
    """512 x 512 scene with ~0.4% change in two small blobs."""
    pair = make_pair(tmp_path / "base", size=512)
    change = np.zeros((512, 512), np.uint8)
    change[30:60, 400:430] = 1
    change[450:470, 60:80] = 1
    label = write_tif(tmp_path / "sparse_change.tif", change, nodata=255)
    return BiTemporalRasterDataset(pair.pre, pair.post, change=label)


def _has_change(ds: BiTemporalRasterDataset, q: tuple[slice, slice, slice]) -> bool:
    return bool((ds[q]["mask"] == 1).any())


def test_density_counts_every_change_pixel(pair: Pair) -> None:
    ds = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change)
    counts, transform = ds.change_density(32, block_cells=3)
    assert counts.shape == (8, 8)
    expected = pair.change_array.reshape(8, 32, 8, 32).sum(axis=(1, 3))
    np.testing.assert_array_equal(counts, expected)
    assert counts[1, 3] == 24 * 28  # rows 40-63 x cols 100-127 of the first changed box
    assert transform.c == X0 and transform.f == Y0 and transform.a == 32


def test_balanced_fraction(sparse: BiTemporalRasterDataset) -> None:
    gen = torch.Generator().manual_seed(0)
    balanced = ChangeBalancedGeoSampler(sparse, 64, 200, change_fraction=0.6, generator=gen)
    uniform = ChangeBalancedGeoSampler(
        sparse, 64, 200, change_fraction=0.0, generator=torch.Generator().manual_seed(0)
    )
    hit_balanced = np.mean([_has_change(sparse, q) for q in balanced])
    hit_uniform = np.mean([_has_change(sparse, q) for q in uniform])
    assert hit_balanced >= 0.6 - 0.08
    assert hit_uniform < 0.2


def test_windows_aligned_inside_roi_and_reproducible(sparse: BiTemporalRasterDataset) -> None:
    roi = shapely.box(X0 + 100, Y0 - 300, X0 + 500, Y0 - 10)

    def draw(seed: int) -> list[tuple[float, float, float, float]]:
        sampler = ChangeBalancedGeoSampler(
            sparse,
            48,
            100,
            change_fraction=0.8,
            roi=roi,
            generator=torch.Generator().manual_seed(seed),
        )
        assert len(sampler) == 100
        return [(x.start, x.stop, y.start, y.stop) for x, y, _ in sampler]

    windows = draw(1)
    assert windows == draw(1) and windows != draw(2)
    for x0, x1, y0, y1 in windows:
        assert x1 - x0 == 48 and y1 - y0 == 48
        assert X0 + 100 <= x0 and x1 <= X0 + 500 and Y0 - 300 <= y0 and y1 <= Y0 - 10
        assert float(x0).is_integer() and float(y1).is_integer()  # on the 1 m pixel grid


def test_sampler_errors(pair: Pair) -> None:
    images_only = BiTemporalRasterDataset(pair.pre, pair.post)
    with pytest.raises(DataError, match="change label"):
        ChangeBalancedGeoSampler(images_only, 32, 10, change_fraction=0.5)
    ChangeBalancedGeoSampler(images_only, 32, 10, change_fraction=0.0)
    labeled = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change)
    with pytest.raises(ConfigurationError, match="change_fraction"):
        ChangeBalancedGeoSampler(labeled, 32, 10, change_fraction=1.5)
    with pytest.raises(ConfigurationError, match="smaller than one"):
        ChangeBalancedGeoSampler(labeled, 512, 10)


def test_samplers_stay_inside_an_l_shaped_roi(pair: Pair) -> None:
    # A block split region: two rectangles whose bounding box holds a notch of another split.
    ds = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change)
    roi = shapely.union_all(
        [
            shapely.box(X0, Y0 - 256, X0 + 128, Y0),
            shapely.box(X0 + 128, Y0 - 256, X0 + 256, Y0 - 128),
        ]
    )
    notch = shapely.box(X0 + 128, Y0 - 128, X0 + 256, Y0)
    for sampler in (
        ChangeBalancedGeoSampler(
            ds, 64, 300, change_fraction=0.5, roi=roi, generator=torch.Generator().manual_seed(0)
        ),
        InsideGridGeoSampler(ds, 64, roi=roi),
    ):
        windows = [shapely.box(x.start, y.start, x.stop, y.stop) for x, y, _ in sampler]
        assert all(w.intersection(notch).area == 0 for w in windows)
        assert all(roi.contains(w) for w in windows)
        # Both rectangles are sampled.
        assert any(w.bounds[0] >= X0 + 128 for w in windows)
        assert any(w.bounds[3] > Y0 - 128 for w in windows)
    grid = InsideGridGeoSampler(ds, 64, roi=roi)
    assert len(grid) == 2 * 4 + 2 * 2  # 2 x 4 windows in the tall part, 2 x 2 in the low one
