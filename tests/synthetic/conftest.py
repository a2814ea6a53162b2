"""The synthetic scene shared by the tests of geochange.synthetic (generated once per run)."""

from __future__ import annotations

import pytest

from geochange.synthetic import Scene, make_scene
from tests.synthetic import HEIGHT, SEED, WIDTH


@pytest.fixture(scope="package")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    """A 768 x 1100 scene of seed 4 written in 512-pixel blocks."""
    return make_scene(tmp_path_factory.mktemp("scene"), HEIGHT, WIDTH, seed=SEED, block_size=512)
