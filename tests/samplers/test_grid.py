"""The inside-grid sampler (geochange.samplers.grid): windows stay inside the ROI, edges covered."""

from __future__ import annotations

import shapely

from geochange.datasets import BiTemporalRasterDataset
from geochange.samplers import InsideGridGeoSampler
from tests.builders import ORIGIN, Pair

X0, Y0 = ORIGIN


def test_inside_grid_never_leaves_roi(pair: Pair) -> None:
    ds = BiTemporalRasterDataset(pair.pre, pair.post, change=pair.change)
    roi = shapely.box(X0 + 10, Y0 - 200, X0 + 150, Y0)
    sampler = InsideGridGeoSampler(ds, 64, roi=roi)
    windows = [(x.start, x.stop, y.start, y.stop) for x, y, _ in sampler]
    assert len(sampler) == len(windows) == 3 * 4
    for x0, x1, y0, y1 in windows:
        assert X0 + 10 <= x0 and x1 <= X0 + 150 and Y0 - 200 <= y0 and y1 <= Y0
    # Edges are covered: the last column/row is flush with the roi.
    assert max(w[1] for w in windows) == X0 + 150 and min(w[2] for w in windows) == Y0 - 200
