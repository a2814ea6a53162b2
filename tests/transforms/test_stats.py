"""Band statistics read inside a region of interest (geochange.transforms.stats)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely

from geochange.datasets import BiTemporalRasterDataset
from geochange.transforms import compute_band_statistics
from tests.builders import ORIGIN, write_tif


def test_band_statistics_read_only_inside_an_l_shaped_roi(tmp_path: Path) -> None:
    # The training region of a block split: its bounding box holds another split's pixels.
    x0, y0 = ORIGIN
    image = np.full((3, 256, 256), 10, np.uint8)
    image[:, :128, 128:] = 200  # the notch (top right), not in the roi
    pre = write_tif(tmp_path / "pre.tif", image)
    post = write_tif(tmp_path / "post.tif", image)
    ds = BiTemporalRasterDataset(pre, post)
    roi = shapely.union_all(
        [
            shapely.box(x0, y0 - 256, x0 + 128, y0),
            shapely.box(x0 + 128, y0 - 256, x0 + 256, y0 - 128),
        ]
    )
    stats = compute_band_statistics(ds, num_samples=40, patch_size=64, roi=roi)
    assert stats["mean"] == [10.0, 10.0, 10.0]
