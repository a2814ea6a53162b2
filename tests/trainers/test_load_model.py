"""geochange.checkpoint.load_model on checkpoints saved by real (tiny) trainer fits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from geochange.checkpoint import load_model
from geochange.trainers import ChangeTrainer
from tests.trainers.conftest import TINY_MODEL

from .test_semi import _SemiDataModule, make_pair_batch, small_trainer


def _same_network(loaded: nn.Module, trained: nn.Module, x: torch.Tensor) -> None:
    """Same weights and, in eval mode, the same outputs as the trainer's model."""
    assert not loaded.training
    assert type(loaded) is type(trained)
    trained_state = trained.state_dict()
    assert set(loaded.state_dict()) == set(trained_state)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, trained_state[key]), key
    trained.eval()
    with torch.no_grad():
        ours, theirs = loaded(x), trained(x)
    assert set(ours) == set(theirs)
    for key, value in ours.items():
        torch.testing.assert_close(value, theirs[key], rtol=0, atol=0)


def test_load_model_after_binary_fit(tmp_path: Path, make_trainer: Any, make_dm: Any) -> None:
    module = ChangeTrainer(model="fusion_unet", **TINY_MODEL)
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, datamodule=make_dm())
    path = tmp_path / "binary.ckpt"
    trainer.save_checkpoint(path)
    model, metadata = load_model(path)
    assert metadata.task == "binary" and metadata.model == "fusion_unet"
    assert metadata.patch_size == 32 and metadata.bands == [1, 2, 3]
    assert metadata.normalization == {"mean": [0.5] * 3, "std": [0.25] * 3}
    assert metadata.model_kwargs["encoder_depth"] == 3
    _same_network(model, module.model, torch.randn(2, 2, 3, 32, 32))


def test_load_model_after_semantic_fit(tmp_path: Path, make_trainer: Any, make_dm: Any) -> None:
    module = ChangeTrainer(
        model="semantic_change", task="semantic", num_classes=3, class_names=["a", "b", "c"],
        loss_kwargs={"sacl_weight": 0.0}, **TINY_MODEL,
    )  # fmt: skip
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, datamodule=make_dm(num_classes=3))
    path = tmp_path / "semantic.ckpt"
    trainer.save_checkpoint(path)
    model, metadata = load_model(path)
    assert metadata.task == "semantic" and metadata.num_classes == 3
    assert metadata.class_names == ["a", "b", "c"]
    _same_network(model, module.model, torch.randn(1, 2, 3, 32, 32))


def test_load_model_after_semi_supervised_fit(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = small_trainer(method="diffmatch", generated_weight_start=1.0)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=_SemiDataModule())
    path = tmp_path / "semi.ckpt"
    trainer.save_checkpoint(path)
    model, metadata = load_model(path)
    assert metadata.trainer == "geochange.trainers.semi.SemiSupervisedChangeTrainer"
    assert metadata.model_kwargs["dual_head"] and metadata.model_kwargs["aux_semantic"]
    _same_network(model, module.model, make_pair_batch(1, seed=5)["image"])
