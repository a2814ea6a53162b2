"""Tests of geochange.synthetic.noise: hashed uniforms, seed channels, value noise."""

from __future__ import annotations

import numpy as np

from geochange.synthetic.noise import _fbm, _Keys, _uniform, _value_noise


def test_uniform_is_a_keyed_function_of_the_coordinates() -> None:
    rows, cols = np.arange(-50, 50)[:, None], np.arange(200)[None, :]
    u = _uniform(11, rows, cols)
    assert u.shape == (100, 200) and u.dtype == np.float32
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(float(u.mean()) - 0.5) < 0.01
    np.testing.assert_array_equal(u, _uniform(11, rows, cols))
    np.testing.assert_array_equal(u[10:20, 5:9], _uniform(11, rows[10:20], cols[:, 5:9]))
    assert not np.array_equal(u, _uniform(12, rows, cols))


def test_seed_channels_are_distinct_and_use_the_whole_seed() -> None:
    keys = _Keys(3)
    assert len({keys(channel) for channel in range(100)}) == 100
    assert _Keys(3)(5) == keys(5)
    assert _Keys(3 + 2**32)(5) != keys(5)  # the high 32 bits of the seed count too


def test_value_noise_is_smooth_and_the_same_on_a_grid_and_at_points() -> None:
    y = np.arange(37, 140, dtype=np.float64)[:, None] + 0.5
    x = np.arange(-20, 75, dtype=np.float64)[None, :] + 0.5
    grid = _value_noise(123, y, x, 11.0)
    yy, xx = (a.ravel() for a in np.broadcast_arrays(y, x))
    np.testing.assert_allclose(grid.ravel(), _value_noise(123, yy, xx, 11.0), atol=1e-6)
    assert 0.0 <= grid.min() and grid.max() <= 1.0
    assert np.abs(np.diff(grid, axis=1)).max() < 0.3  # smooth at a scale of 11 px
    fbm = _fbm(123, y, x, 60.0, 3)
    assert 0.0 <= fbm.min() and fbm.max() <= 1.0 and fbm.std() > 0.01
