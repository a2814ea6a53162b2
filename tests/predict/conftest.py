"""Fixtures for the predictor tests: small georeferenced scene pairs and tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.builders import write_raster


@pytest.fixture
def scene_pair(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A 3-band 173 x 251 uint16 scene pair (sizes not divisible by any stride used)."""
    rng = np.random.default_rng(42)
    pre = rng.integers(0, 1000, size=(3, 173, 251)).astype(np.uint16)
    post = pre.copy()
    post[:, 40:90, 100:180] = rng.integers(0, 1000, size=(3, 50, 80))
    return (
        write_raster(tmp_path / "pre.tif", pre),
        write_raster(tmp_path / "post.tif", post),
        pre,
        post,
    )
