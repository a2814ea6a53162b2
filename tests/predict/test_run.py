"""One prediction run (geochange.predict.run): an interrupted run resumes where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geochange.predict.run import SIDECAR_NAME
from tests.builders import TinyConvChange, write_raster
from tests.predict.helpers import (
    BINARY_OUTPUT_FILES,
    FailingAfter,
    Interrupt,
    exact_predictor,
    read,
)


def test_interrupted_run_leaves_nothing_complete_and_resumes(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    pre = rng.integers(0, 1000, size=(3, 1100, 130)).astype(np.uint16)
    post = rng.integers(0, 1000, size=(3, 1100, 130)).astype(np.uint16)
    pre_path = write_raster(tmp_path / "pre.tif", pre)
    post_path = write_raster(tmp_path / "post.tif", post)
    model = TinyConvChange()
    out = tmp_path / "out"
    full = exact_predictor(model, tile_size=128, overlap=32).predict(
        pre_path, post_path, tmp_path / "ref"
    )
    # 1100 rows, stride 96: 12 tile rows of 2 tiles; batches of 2 tiles = one tile row each.
    failing = FailingAfter(calls=8)
    with pytest.raises(Interrupt):
        exact_predictor(failing, tile_size=128, overlap=32, batch_size=2).predict(
            pre_path, post_path, out
        )
    assert not (out / "change.tif").exists() and not (out / "probability.tif").exists()
    state = json.loads((out / SIDECAR_NAME).read_text())
    assert state["rows_done"] == 512  # one whole block row flushed before the crash
    resumed = exact_predictor(model, tile_size=128, overlap=32, batch_size=2).predict(
        pre_path, post_path, out, resume=True
    )
    assert 0 < resumed.tiles < full.tiles
    np.testing.assert_array_equal(read(resumed.probability), read(full.probability))
    np.testing.assert_array_equal(read(resumed.change), read(full.change))
    assert not (out / SIDECAR_NAME).exists()
    assert sorted(p.name for p in out.iterdir()) == BINARY_OUTPUT_FILES
    # A new run that fails in the same folder leaves the earlier, complete maps as they were:
    # outputs are replaced only by complete new ones (test_output_safety.py).
    before = {name: (out / name).read_bytes() for name in ("change.tif", "probability.tif")}
    with pytest.raises(Interrupt):
        exact_predictor(FailingAfter(calls=8), tile_size=128, overlap=32, batch_size=2).predict(
            pre_path, post_path, out
        )
    assert {name: (out / name).read_bytes() for name in before} == before


def test_resume_inside_a_later_stripe(tmp_path: Path, monkeypatch) -> None:
    import geochange.predict.tiles as tiles_module

    monkeypatch.setattr(tiles_module, "MIN_STRIPE_TILES", 2)
    rng = np.random.default_rng(3)
    pre = rng.integers(0, 1000, size=(3, 700, 400)).astype(np.uint16)
    post = rng.integers(0, 1000, size=(3, 700, 400)).astype(np.uint16)
    pre_path = write_raster(tmp_path / "pre.tif", pre)
    post_path = write_raster(tmp_path / "post.tif", post)
    options = {"tile_size": 128, "overlap": 32, "batch_size": 1, "band_memory_mb": 0.1}
    full = exact_predictor(TinyConvChange(), **options).predict(pre_path, post_path, tmp_path / "r")
    # Tile columns start at 0, 96, 192, 272; 256-px bands give three stripes of two columns
    # (stripes 1 and 2 start with a warm-up column). 700 rows are 7 tile rows (starts 0, 96,
    # ..., 480, 572). Crash in stripe 1 right after entering tile row 6, which flushed 512 rows.
    out = tmp_path / "out"
    with pytest.raises(Interrupt):
        exact_predictor(FailingAfter(calls=14 + 13), **options).predict(pre_path, post_path, out)
    state = json.loads((out / SIDECAR_NAME).read_text())
    assert (state["stripe"], state["rows_done"]) == (1, 512)
    resumed = exact_predictor(TinyConvChange(), **options).predict(
        pre_path, post_path, out, resume=True
    )
    assert resumed.tiles == 2 * 2 + 7 * 2  # tile rows 5-6 of stripe 1, all of stripe 2
    np.testing.assert_array_equal(read(resumed.probability), read(full.probability))
    np.testing.assert_array_equal(read(resumed.change), read(full.change))
