"""Tests of geochange.synthetic.render: the images of both dates, block by block."""

from __future__ import annotations

import numpy as np

from geochange.synthetic import Scene
from geochange.synthetic.render import _HALO, _Renderer
from tests.builders import read_raster


def test_images_differ_by_nuisance_but_stay_alike(scene: Scene) -> None:
    pre, post = (
        read_raster(scene.pre).astype(np.float64),
        read_raster(scene.post).astype(np.float64),
    )
    unchanged = read_raster(scene.change, 1) == 0
    assert 0.3 <= float(np.hypot(*scene.shift)) <= 1.0
    difference = np.abs(pre - post)[:, unchanged].mean()
    assert difference > 5  # season, sun, noise, misregistration: not identical
    # Still the same place: unchanged pixels are strongly correlated across dates.
    grey_pre, grey_post = pre.mean(0)[unchanged], post.mean(0)[unchanged]
    assert np.corrcoef(grey_pre, grey_post)[0, 1] > 0.5
    # Textured land cover: no flat colour areas.
    assert pre[1].std() > 10


def test_a_block_renders_as_the_crop_of_a_bigger_block() -> None:
    renderer = _Renderer(4, 5)
    for date, shift in ((0, (0.0, 0.0)), (1, renderer.layout.shift)):
        big_grid = renderer.grid(0, 0, 512, 512, shift, _HALO)
        big = renderer.image(big_grid, date, _HALO, 0, 0)
        small_grid = renderer.grid(256, 256, 256, 256, shift, _HALO)
        small = renderer.image(small_grid, date, _HALO, 256, 256)
        assert small.shape == (5, 256, 256)
        np.testing.assert_array_equal(small, big[:, 256:, 256:])
        inner = (slice(_HALO, -_HALO), slice(_HALO, -_HALO))
        np.testing.assert_array_equal(
            small_grid.classes(date)[inner], big_grid.classes(date)[inner][256:, 256:]
        )
