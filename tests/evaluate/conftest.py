"""Fixtures of the evaluation tests; the scenes behind them live in tests/evaluate/scenes.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.evaluate.scenes import HandScene, hand_arrays, write_raster


@pytest.fixture
def hand_scene(tmp_path: Path) -> HandScene:
    pred, ref = hand_arrays()
    return HandScene(
        pred=write_raster(tmp_path / "change.tif", pred),
        ref=write_raster(tmp_path / "reference.tif", ref),
        pred_array=pred,
        ref_array=ref,
        directory=tmp_path,
    )
