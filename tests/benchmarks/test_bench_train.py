"""benchmarks/bench_train.py's realism runs: one training per model, scored on every test kind."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_train  # noqa: E402


def test_each_model_is_trained_once_and_scored_on_every_test_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained: list[tuple[str, str, int]] = []
    scored: list[tuple[str, str]] = []

    def scene(root: Path, size: int, seed: int, realism: str = "none") -> str:
        return realism

    def train_and_score(
        task: str, args: Any, train: str, test: str, *, seed: int, augment: str, out: Path
    ) -> bench_train.Trained:
        trained.append((train, augment, seed))
        scored.append((train, test))
        # Scores that identify the pair, so the table rows can be checked.
        scores = {"f1": seed + 0.1 * len(test), "iou_change": 0.0, "precision": 0.0,
                  "recall": 0.0}  # fmt: skip
        return bench_train.Trained(None, object(), scores, {"mean": [0.0], "std": [1.0]})

    def evaluate(module: object, test: str, normalization: Any, tile: int, out: Path) -> dict:
        assert normalization == {"mean": [0.0], "std": [1.0]}
        scored.append(("again", test))
        return {"f1": 0.1 * len(test), "iou_change": 0.0, "precision": 0.0, "recall": 0.0}

    monkeypatch.setattr(bench_train, "scene", scene)
    monkeypatch.setattr(bench_train, "train_and_score", train_and_score)
    monkeypatch.setattr(bench_train, "evaluate", evaluate)
    args = argparse.Namespace(
        data_dir=str(tmp_path), size=64, eval_size=32, budget_min=0.1, eval_tile=32,
        realism=["none", "levir"], train_realism=["none"], test_realism=["levir"],
        augment=["default"], seeds=[0, 1],
    )  # fmt: skip
    rows = bench_train.realism_benchmark(args)
    # Two kinds x two seeds trained; the clean model is not trained again for the preset.
    assert sorted(trained) == [("levir", "default", 0), ("levir", "default", 1),
                               ("none", "default", 0), ("none", "default", 1)]  # fmt: skip
    assert scored.count(("again", "levir")) == 2
    assert [(r["train"], r["test"]) for r in rows] == [
        ("none", "none"), ("levir", "levir"), ("none", "levir")
    ]  # fmt: skip
    assert rows[2]["f1"] == [0.5, 0.5]  # scored by evaluate, not by the clean test's training


def test_augment_names_build_the_augmentations_they_document() -> None:
    from geochange.transforms import ChangeAugmentation

    args = argparse.Namespace(shift_px=2.0)
    assert bench_train.augmentation("none", args) is False
    assert bench_train.augmentation("default", args) is True
    assert bench_train.augmentation("shift", args) is True  # with ChangeDataModule's shift
    radiometric = bench_train.augmentation("radiometric", args)
    assert isinstance(radiometric, ChangeAugmentation)
    assert (radiometric.band_gain, radiometric.gamma, radiometric.haze) == (0.15, 0.2, 0.25)
    assert radiometric.per_date_shift == 0 and radiometric.value_range == 255.0
    robust = bench_train.augmentation("robust", args)
    assert (robust.band_gain, robust.per_date_shift) == (0.15, 2.0)
    assert (robust.per_date_rotation, robust.per_date_scale) == (1.0, 0.02)
    with pytest.raises(ValueError, match="unknown augmentation"):
        bench_train.augmentation("mixup", args)
