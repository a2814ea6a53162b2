"""Tile grid of the predictor (geochange.predict.windows): starts, weights, column stripes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from geochange.errors import ConfigurationError
from geochange.predict import ChangePredictor, TileGrid, axis_weights, tile_starts
from geochange.predict.windows import column_stripes
from tests.builders import TinyConvChange


def test_tile_starts_clamp_last_tile_inside_scene() -> None:
    assert tile_starts(173, 64, 48) == [0, 48, 96, 109]
    assert tile_starts(64, 64, 48) == [0]
    assert tile_starts(40, 64, 48) == [0]
    assert tile_starts(160, 64, 48) == [0, 48, 96]


@pytest.mark.parametrize("mode", ["cosine", "gaussian", "mean", "center"])
def test_weights_zero_in_margin_of_inner_edges_only(mode: str) -> None:
    w = axis_weights(64, 32, 8, inner_start=True, inner_end=True, mode=mode)
    assert np.all(w[:8] == 0) and np.all(w[-8:] == 0)
    assert np.all(w[32:-32] == 1)
    assert np.all(np.diff(w[:32]) >= 0)
    border = axis_weights(64, 32, 8, inner_start=False, inner_end=True, mode=mode)
    assert np.all(border[:32] == 1) and np.all(border[-8:] == 0)
    grid = TileGrid(173, 251, 64, 32, 8, mode)
    assert np.all(grid.row_weight_sum() > 0) and np.all(grid.col_weight_sum() > 0)


def test_invalid_layouts_raise_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="larger than overlap"):
        ChangePredictor(TinyConvChange(), tile_size=64, overlap=64)
    with pytest.raises(ConfigurationError, match="margin"):
        ChangePredictor(TinyConvChange(), tile_size=64, overlap=16, margin=8)
    with pytest.raises(ConfigurationError, match="blend"):
        ChangePredictor(TinyConvChange(), blend="median")


@pytest.mark.parametrize(
    ("width", "tile", "overlap", "max_width"),
    [(251, 64, 16, 128), (1000, 64, 40, 200), (5000, 512, 128, 1500), (700, 64, 16, 10_000)],
)
def test_column_stripes_partition_the_width(width, tile, overlap, max_width) -> None:
    grid = TileGrid(100, width, tile, overlap, overlap // 4)
    starts = grid.col_starts
    stripes = column_stripes(grid, max_width)
    assert stripes[0].out_x0 == 0 and stripes[-1].out_x1 == width
    owned: list[int] = []
    for before, after in itertools.pairwise(stripes):
        assert before.out_x1 == after.out_x0 == starts[after.cols[after.warmup]]
    for stripe in stripes:
        owned += stripe.cols[stripe.warmup :]
        assert stripe.band_width <= max(max_width, 2 * tile) or len(stripe.cols) == 1
        assert stripe.band_x0 == starts[stripe.cols[0]]
        assert stripe.band_x1 == starts[stripe.cols[-1]] + tile
        # Every tile reaching into the stripe's output columns is computed by the stripe ...
        reaching = [
            c for c, s in enumerate(starts) if s < stripe.out_x1 and s + tile > stripe.out_x0
        ]
        assert set(reaching) <= set(stripe.cols)
    assert owned == list(range(len(starts)))  # ... and each tile column is owned once
    if width <= max_width:
        assert len(stripes) == 1 and stripes[0].warmup == 0
