"""Blending (geochange.predict.blend): mosaics equal whole-image inference, without seams."""

from __future__ import annotations

import numpy as np
import pytest

from geochange.errors import ConfigurationError
from geochange.predict import TileGrid
from tests.builders import TinyConvChange, whole_image
from tests.predict.helpers import exact_predictor, read


@pytest.mark.parametrize(
    ("tile_size", "overlap", "blend"),
    [(64, 16, "cosine"), (64, 32, "gaussian"), (48, 20, "mean"), (80, 24, "center")],
)
def test_mosaic_equals_whole_image_inference(scene_pair, tile_size, overlap, blend) -> None:
    pre_path, post_path, pre, post = scene_pair
    model = TinyConvChange()
    predictor = exact_predictor(model, tile_size=tile_size, overlap=overlap, blend=blend)
    result = predictor.predict(pre_path, post_path, pre_path.parent / f"out_{tile_size}_{blend}")
    reference, _, _ = whole_image(model, pre, post)
    probability = read(result.probability)
    assert probability.shape == (173, 251)
    np.testing.assert_allclose(probability, reference, atol=1e-5, rtol=0)
    change = read(result.change)
    np.testing.assert_array_equal(change, (reference >= 0.5).astype(np.uint8))
    assert result.tiles == len(TileGrid(173, 251, tile_size, overlap, overlap // 4, blend))


def test_center_semantic_blend_is_exact_and_keeps_change(scene_pair) -> None:
    """``semantic_blend="center"``: class maps equal whole-image inference exactly."""
    pre_path, post_path, pre, post = scene_pair
    model = TinyConvChange(semantic_classes=3, seed=1)
    blended = exact_predictor(model).predict(pre_path, post_path, pre_path.parent / "prob")
    center = exact_predictor(model, semantic_blend="center").predict(
        pre_path, post_path, pre_path.parent / "center"
    )
    _, pre_ref, post_ref = whole_image(model, pre, post)
    np.testing.assert_array_equal(read(center.semantic_pre), pre_ref)
    np.testing.assert_array_equal(read(center.semantic_post), post_ref)
    for key in ("probability", "change"):
        np.testing.assert_array_equal(read(getattr(center, key)), read(getattr(blended, key)))
    changed = read(center.change) == 1
    transition = read(center.transition)
    np.testing.assert_array_equal(transition[changed], pre_ref[changed] * 3 + post_ref[changed])
    with pytest.raises(ConfigurationError, match="semantic_blend"):
        exact_predictor(model, semantic_blend="vote")


def test_column_chunked_decoding_matches_one_chunk(scene_pair, monkeypatch) -> None:
    """Rows are normalized and decoded in column chunks; chunk seams must not show."""
    import geochange.predict.blend as blend_module

    pre_path, post_path, _, _ = scene_pair
    model = TinyConvChange(semantic_classes=3, seed=1)
    whole = exact_predictor(model).predict(pre_path, post_path, pre_path.parent / "one_chunk")
    monkeypatch.setattr(blend_module, "DECODE_CHUNK_WIDTH", 37)  # not a divisor of 251
    chunked = exact_predictor(model).predict(pre_path, post_path, pre_path.parent / "chunks")
    for key in ("probability", "change", "semantic_pre", "semantic_post", "transition"):
        np.testing.assert_array_equal(
            read(getattr(chunked, key)), read(getattr(whole, key)), err_msg=key
        )


def test_blending_windows_are_cached_read_only_and_equal_to_recomputed() -> None:
    """The band reuses a few read-only windows, each equal to the tile's own product."""
    from geochange.predict.blend import WEIGHT_CACHE_SIZE, _BandAssembler
    from geochange.predict.tiles import _tile_weights

    grid = TileGrid(500, 430, 64, 16, 4, "cosine")
    band = _BandAssembler(grid, 1, lambda p, v, lab: {}, lambda top, arrays, col: None)
    for row in range(len(grid.row_starts)):
        for col in range(len(grid.col_starts)):
            weights = band._weights(row, col)
            assert weights.dtype == np.float32 and weights.shape == (64, 64)
            assert not weights.flags.writeable
            np.testing.assert_array_equal(weights, _tile_weights(grid, row, col))
    assert 4 <= len(band._weights_cache) <= WEIGHT_CACHE_SIZE
