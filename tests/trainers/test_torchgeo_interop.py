"""TorchGeo interop of the trainers: its [B, 1, H, W] masks, its task, its mean/std convention."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torchgeo.datasets import stack_samples
from torchgeo.tasks import ChangeDetection

from geochange import ChangeDataModule
from geochange.errors import NormalizationWarning
from geochange.losses import BCEDiceLoss
from geochange.metrics import BinaryChangeMetrics, SemanticChangeMetrics
from geochange.predict import ChangePredictor
from geochange.trainers import ChangeTrainer, read_checkpoint_metadata
from tests.builders import Pair, TinyChangeDataset
from tests.trainers.conftest import TINY_MODEL, TinyUserModel, quick_trainer


class LevirLike(Dataset[dict[str, torch.Tensor]]):
    """Samples laid out as TorchGeo's LEVIRCD returns them: mask long ``[1, H, W]``."""

    def __init__(self, length: int, seed: int = 0) -> None:
        self.samples = [
            {**s, "mask": s["mask"].clamp(max=1).unsqueeze(0)}
            for s in TinyChangeDataset(length, seed=seed).samples
        ]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.samples[index]


class TorchGeoLikeDataModule(pl.LightningDataModule):
    """A TorchGeo-style datamodule: LEVIRCD-like batches, normalization in ``mean``/``std``."""

    def __init__(self, **attributes: Any) -> None:
        super().__init__()
        for key, value in attributes.items():
            setattr(self, key, value)

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(LevirLike(4), batch_size=2, collate_fn=stack_samples)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(LevirLike(2, seed=1), batch_size=2, collate_fn=stack_samples)


def test_metrics_and_losses_accept_both_mask_layouts() -> None:
    pred = torch.tensor([[[1, 0], [1, 1]]])
    target = torch.tensor([[[1, 0], [0, 255]]])
    scores = []
    for p, t in ((pred, target), (pred, target[:, None]), (pred[:, None], target)):
        metric = BinaryChangeMetrics()
        metric.update(p, t)
        scores.append(float(metric.compute()["iou_change"]))
    assert scores == [0.5, 0.5, 0.5]
    semantic = SemanticChangeMetrics(3)
    maps = torch.tensor([[[0, 1], [2, 1]]])
    semantic.update(maps, maps, pred, maps[:, None], maps[:, None], target[:, None])
    assert int(semantic.compute()["semantic_iou"].numel()) == 3
    logits = torch.randn(1, 1, 2, 2)
    loss = BCEDiceLoss()
    assert torch.allclose(loss(logits, target), loss(logits, target[:, None]))


def test_change_trainer_validates_on_torchgeo_batches(tmp_path: Path) -> None:
    datamodule = TorchGeoLikeDataModule(in_channels=3, mean=torch.tensor(0.5), std=torch.tensor(2))
    module = ChangeTrainer(model=TinyUserModel(), loss="bce", lr=1e-2)
    trainer = quick_trainer(tmp_path, max_steps=2)
    # Used to fail in validation: prediction shape (2,32,32) differs from target (2,1,32,32).
    trainer.fit(module, datamodule=datamodule)
    assert {"val/loss", "val/f1", "val/iou_change"} <= set(trainer.callback_metrics)
    # TorchGeo's mean/std (one value for every band) reach the checkpoint, per band.
    trainer.save_checkpoint(tmp_path / "tg.ckpt")
    meta = read_checkpoint_metadata(tmp_path / "tg.ckpt")
    assert meta["normalization"] == {"mean": [0.5] * 3, "std": [2.0] * 3}


def test_missing_normalization_warns_at_training_and_prediction(tmp_path: Path) -> None:
    module = ChangeTrainer(model="fusion_unet", **TINY_MODEL, lr=1e-2)
    trainer = quick_trainer(tmp_path, max_steps=1)
    trainer.fit(module, datamodule=TorchGeoLikeDataModule(in_channels=3))
    with pytest.warns(NormalizationWarning, match="no normalization"):
        trainer.save_checkpoint(tmp_path / "raw.ckpt")
    assert read_checkpoint_metadata(tmp_path / "raw.ckpt")["normalization"] is None
    with pytest.warns(NormalizationWarning, match="raw pixel values"):
        ChangePredictor.from_checkpoint(tmp_path / "raw.ckpt", value_range="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NormalizationWarning)
        ChangePredictor.from_checkpoint(
            tmp_path / "raw.ckpt", value_range="ignore",
            normalization={"mean": [0.0] * 3, "std": [1.0] * 3},
        )  # fmt: skip


def test_torchgeo_task_trains_on_geochange_batches(pair: Pair, tmp_path: Path) -> None:
    data = ChangeDataModule(
        pre=pair.pre, post=pair.post, change=pair.change, patch_size=64, batch_size=2,
        samples_per_epoch=4, splits=(0.5, 0.5, 0.0), stats_samples=4, mask_layout="torchgeo",
    )  # fmt: skip
    data.setup("fit")
    batch = data.apply_batch_transforms(next(iter(data.train_dataloader())), train=True)
    assert batch["image"].shape == (2, 2, 3, 64, 64) and batch["mask"].shape == (2, 1, 64, 64)
    task = ChangeDetection(model="unet", backbone="resnet18", weights=None, in_channels=3,
                           task="binary", loss="bce")  # fmt: skip
    trainer = quick_trainer(tmp_path, max_steps=2, limit_val_batches=1)
    trainer.fit(task, datamodule=data)
    assert torch.isfinite(trainer.callback_metrics["train_loss"])
    assert "val_loss" in trainer.callback_metrics
    # The same datamodule trains ChangeTrainer too: both layouts are accepted.
    module = ChangeTrainer(model=TinyUserModel(), loss="bce", lr=1e-2)
    quick_trainer(tmp_path, max_steps=1, limit_val_batches=1).fit(module, datamodule=data)
