"""Tiles of a prediction (geochange.predict.tiles): column stripes are bit-identical."""

from __future__ import annotations

import numpy as np
import pytest

from geochange.predict import TileGrid
from tests.builders import TinyConvChange
from tests.predict.helpers import exact_predictor, read


@pytest.mark.parametrize("semantic_blend", [None, "probability", "center"])
def test_column_stripes_are_bit_identical(scene_pair, monkeypatch, semantic_blend) -> None:
    """A small band budget splits the scene into stripes without changing any pixel."""
    import geochange.predict.tiles as tiles_module

    pre_path, post_path, _, _ = scene_pair
    options = {} if semantic_blend is None else {"semantic_blend": semantic_blend}
    model = TinyConvChange(semantic_classes=0 if semantic_blend is None else 3, seed=1)
    whole = exact_predictor(model, **options).predict(pre_path, post_path, pre_path.parent / "w")
    monkeypatch.setattr(tiles_module, "MIN_STRIPE_TILES", 2)
    striped = exact_predictor(model, band_memory_mb=0.01, **options)
    grid = TileGrid(173, 251, 64, 16, 4)
    channels = 1 if semantic_blend is None else 7
    stripes = striped._stripes(grid, channels, 0 if semantic_blend is None else 3)
    assert len(stripes) >= 3
    result = striped.predict(pre_path, post_path, pre_path.parent / "s")
    warmup = sum(s.warmup for s in stripes) * len(grid.row_starts)
    assert result.tiles == whole.tiles + warmup
    keys = ["probability", "change"]
    if semantic_blend is not None:
        keys += ["semantic_pre", "semantic_post", "transition"]
    for key in keys:
        np.testing.assert_array_equal(
            read(getattr(result, key)), read(getattr(whole, key)), err_msg=key
        )
