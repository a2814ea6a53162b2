"""Tiny in-memory data, a tiny user model and quick Lightning trainers for the trainer tests."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from tests.builders import TinyChangeDataset

# A three-level fusion U-Net: small enough for a fit step in well under a second.
TINY_MODEL = {"backbone": "resnet18", "model_kwargs": {"encoder_depth": 3,
              "decoder_channels": [32, 16, 16]}}  # fmt: skip


class TinyUserModel(nn.Module):
    """A user model following the contract (no registry)."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(2 * in_channels, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"change": self.head(torch.relu(self.encoder(x.flatten(1, 2))))}


class TinyDataModule(pl.LightningDataModule):
    """Stand-in exposing the ChangeDataModule attributes the trainer reads."""

    def __init__(self, num_classes: int | None = None, channels: int = 3, **extra: Any) -> None:
        super().__init__()
        self.train_set = TinyChangeDataset(8, channels=channels, num_classes=num_classes)
        self.val_set = TinyChangeDataset(4, channels=channels, num_classes=num_classes, seed=1)
        self.in_channels = channels
        self.num_classes = num_classes
        self.task = "semantic" if num_classes else "binary"
        self.patch_size = 32
        self.normalization = {"mean": [0.5] * channels, "std": [0.25] * channels}
        self.bands = list(range(1, channels + 1))
        for key, value in extra.items():
            setattr(self, key, value)

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.train_set, batch_size=4, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.val_set, batch_size=2)

    def test_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.val_set, batch_size=2)


def quick_trainer(tmp_path: Any, **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {
        "max_epochs": 1,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path),
        "num_sanity_val_steps": 0,
    }
    options.update(kwargs)
    return pl.Trainer(**options)


@pytest.fixture
def tiny_binary_dm() -> TinyDataModule:
    return TinyDataModule()


@pytest.fixture
def tiny_semantic_dm() -> TinyDataModule:
    return TinyDataModule(num_classes=3)


@pytest.fixture
def make_trainer(tmp_path: Any) -> Any:
    return lambda **kwargs: quick_trainer(tmp_path, **kwargs)


@pytest.fixture
def make_dm() -> Any:
    return TinyDataModule
