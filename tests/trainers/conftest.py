"""Tiny in-memory change datasets for the trainer tests."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, Dataset


class TinyChangeDataset(Dataset[dict[str, torch.Tensor]]):
    """Random pre/post images where a square changes; optional semantic labels."""

    def __init__(
        self,
        length: int = 8,
        size: int = 32,
        channels: int = 3,
        num_classes: int | None = None,
        seed: int = 0,
    ) -> None:
        self.samples: list[dict[str, torch.Tensor]] = []
        gen = torch.Generator().manual_seed(seed)
        for _ in range(length):
            pre = torch.rand(channels, size, size, generator=gen)
            post = pre.clone()
            change = torch.zeros(size, size, dtype=torch.long)
            y, x = torch.randint(0, size // 2, (2,), generator=gen).tolist()
            post[:, y : y + size // 3, x : x + size // 3] += 1.0
            change[y : y + size // 3, x : x + size // 3] = 1
            change[0, :4] = 255  # some unlabeled pixels
            sample = {"image": torch.stack([pre, post]), "mask": change}
            if num_classes is not None:
                mask_pre = torch.randint(0, num_classes, (size, size), generator=gen)
                mask_post = torch.where(change == 1, (mask_pre + 1) % num_classes, mask_pre)
                sample["mask_pre"] = mask_pre
                sample["mask_post"] = mask_post
            self.samples.append(sample)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.samples[index]


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
