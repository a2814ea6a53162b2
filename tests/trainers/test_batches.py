"""Batch and datamodule checks of the trainers (geochange.trainers.batches): bad input is named."""

from __future__ import annotations

from typing import Any

import pytest
from torch import nn
from torch.utils.data import DataLoader

from geochange.errors import ConfigurationError, DataError
from geochange.trainers import ChangeTrainer
from tests.builders import TinyChangeDataset
from tests.trainers.conftest import TINY_MODEL, TinyUserModel


def test_in_channels_mismatch_with_datamodule(make_trainer: Any, make_dm: Any) -> None:
    module = ChangeTrainer(model="fusion_unet", in_channels=4, **TINY_MODEL)
    with pytest.raises(ConfigurationError, match="in_channels=4 but the data has 3 bands"):
        make_trainer(limit_train_batches=1).fit(module, datamodule=make_dm())


def test_in_channels_mismatch_in_batch(make_trainer: Any) -> None:
    module = ChangeTrainer(model=TinyUserModel(in_channels=4), in_channels=4, loss=nn.Identity())
    loader = DataLoader(TinyChangeDataset(2), batch_size=2)
    with pytest.raises(DataError, match=r"3 bands per date .* in_channels=4"):
        make_trainer(limit_train_batches=1).fit(module, train_dataloaders=loader)


def test_semantic_task_without_semantic_labels(make_trainer: Any, make_dm: Any) -> None:
    module = ChangeTrainer(model="semantic_change", task="semantic", num_classes=3, **TINY_MODEL)
    with pytest.raises(ConfigurationError, match="no semantic labels"):
        make_trainer(limit_train_batches=1).fit(module, datamodule=make_dm())
    loader = DataLoader(TinyChangeDataset(2), batch_size=2)
    with pytest.raises(DataError, match="no semantic labels"):
        make_trainer(limit_train_batches=1).fit(module, train_dataloaders=loader)
    with pytest.raises(ConfigurationError, match="needs num_classes"):
        ChangeTrainer(model="semantic_change", task="semantic")


def test_labels_out_of_range(make_trainer: Any) -> None:
    module = ChangeTrainer(model="semantic_change", task="semantic", num_classes=2, **TINY_MODEL)
    loader = DataLoader(TinyChangeDataset(2, num_classes=3), batch_size=2)
    with pytest.raises(DataError, match=r"holds class 2 but num_classes=2"):
        make_trainer(limit_train_batches=1).fit(module, train_dataloaders=loader)


def test_num_classes_mismatch_with_datamodule(make_trainer: Any, make_dm: Any) -> None:
    module = ChangeTrainer(model="semantic_change", task="semantic", num_classes=5, **TINY_MODEL)
    with pytest.raises(ConfigurationError, match="num_classes=5 but the datamodule has 3"):
        make_trainer(limit_train_batches=1).fit(module, datamodule=make_dm(num_classes=3))
