"""Benchmark folders through the datamodule (geochange.datamodules.folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from geochange.datamodules import ChangeDataModule


def test_folder_datamodule(shared_data: Path) -> None:
    with pytest.warns(UserWarning, match="val split 'val' skipped"):
        dm = ChangeDataModule.from_folder(
            shared_data / "levircd-samples",
            train_split="demo",
            test_split=None,
            patch_size=128,
            batch_size=4,
            labeled_fraction=0.3,
        )
    assert dm.in_channels == 3 and dm.task == "binary" and dm.num_classes is None
    n = len(dm.folder_datasets["train"])  # type: ignore[arg-type]
    labeled = dm.folder_datasets["labeled"]
    unlabeled = dm.folder_datasets["unlabeled"]
    assert len(labeled) + len(unlabeled) == n  # type: ignore[arg-type]
    assert not set(labeled.indices) & set(unlabeled.indices)  # type: ignore[union-attr]
    assert dm.val_dataloader() == []
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 2, 3, 128, 128) and batch["mask"].shape == (4, 128, 128)
    assert "mask" not in next(iter(dm.unlabeled_dataloader()))
    assert 60 < dm.normalization["mean"][0] < 160
