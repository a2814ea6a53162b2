"""`geochange evaluate` on the command line: report written, clean errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geochange.cli import main as cli_main
from tests.evaluate.scenes import (
    HandScene,
    write_raster,
)


def test_cli_writes_report(
    hand_scene: HandScene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(
        [
            "evaluate",
            "--prediction",
            str(hand_scene.directory),  # a prediction directory holding change.tif
            "--reference",
            str(hand_scene.ref),
            "--out-dir",
            str(tmp_path / "out"),
            "--workers",
            "1",
            "--quiet",
        ]
    )
    assert code == 0
    assert "2 TP, 4 FP, 4 misses" in capsys.readouterr().out
    assert (tmp_path / "out" / "report.json").exists()
    assert (tmp_path / "out" / "figures" / "overview.png").exists()


def test_cli_clean_error_on_grid_mismatch(
    hand_scene: HandScene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = write_raster(tmp_path / "small.tif", np.zeros((32, 32), np.uint8))
    code = cli_main(
        [
            "evaluate",
            *("--prediction", str(hand_scene.pred), "--reference", str(small)),
            *("--out-dir", str(tmp_path / "out"), "--quiet"),
        ]
    )
    assert code == 1
    assert "not on the evaluation grid" in capsys.readouterr().err


def test_cli_prediction_probability_fills_mean_prob(
    hand_scene: HandScene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyogrio

    prob = np.full(hand_scene.pred_array.shape, 0.25, np.float32)
    prob[:, 32:] = 0.75
    probability = write_raster(tmp_path / "prob.tif", prob, dtype="float32", nodata=None)
    code = cli_main(
        ["evaluate", "--prediction", str(hand_scene.pred), "--reference", str(hand_scene.ref),
         "--prediction-probability", str(probability), "--out-dir", str(tmp_path / "out"),
         "--workers", "1", "--quiet"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    predictions = pyogrio.read_dataframe(tmp_path / "out" / "objects.gpkg", layer="predictions")
    # Objects left of column 32 read 0.25, right of it 0.75; the split pair straddles it.
    left = predictions.geometry.bounds["maxx"] <= 500_000.0 + 32 * 0.5
    right = predictions.geometry.bounds["minx"] >= 500_000.0 + 32 * 0.5
    np.testing.assert_allclose(predictions.loc[left, "mean_prob"], 0.25, rtol=1e-6)
    np.testing.assert_allclose(predictions.loc[right, "mean_prob"], 0.75, rtol=1e-6)
    assert predictions["mean_prob"].notna().all() and left.any() and right.any()
