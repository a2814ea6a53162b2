"""Fixtures of the pseudo-label tests: hand-built maps and one synthetic scene for the package."""

from __future__ import annotations

import numpy as np
import pytest

from tests.pseudo.scenes import hand_built_maps


@pytest.fixture
def scene_maps() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Hand-built 64 x 96 maps: one appearing, one disappearing, one shifted building."""
    return hand_built_maps()


@pytest.fixture(scope="package")
def synthetic_scene(tmp_path_factory):
    synthetic = pytest.importorskip("geochange.synthetic")
    # 1024^2, seed 0: ten new buildings and a demolished one among hundreds of stable ones.
    return synthetic.make_scene(tmp_path_factory.mktemp("scene"), 1024, 1024, seed=0)
