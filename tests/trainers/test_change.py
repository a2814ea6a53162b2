"""ChangeTrainer: training, metrics, checkpoints and bad input."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from geochange.errors import CheckpointError, ConfigurationError
from geochange.metrics import BinaryChangeMetrics
from geochange.trainers import METADATA_KEYS, ChangeTrainer, read_checkpoint_metadata
from tests.trainers.conftest import TINY_MODEL, TinyUserModel


def test_binary_fit_validate_and_checkpoint(
    tmp_path: Path, make_trainer: Any, make_dm: Any
) -> None:
    dm = make_dm()
    module = ChangeTrainer(model="fusion_unet", **TINY_MODEL, lr=1e-3)
    trainer = make_trainer(limit_train_batches=2, limit_val_batches=2)
    trainer.fit(module, datamodule=dm)
    logged = trainer.logged_metrics
    for key in ("iou_change", "f1", "precision", "recall", "oa", "kappa"):
        value = float(logged[f"val/{key}"])
        assert 0.0 <= value <= 1.0 or key == "kappa"
    assert math.isfinite(float(logged["train/loss"]))

    path = tmp_path / "binary.ckpt"
    trainer.save_checkpoint(path)
    metadata = read_checkpoint_metadata(path)
    assert set(METADATA_KEYS) <= set(metadata)
    assert metadata["task"] == "binary"
    assert metadata["model"] == "fusion_unet"
    assert metadata["model_kwargs"]["backbone"] == "resnet18"
    assert metadata["model_kwargs"]["encoder_depth"] == 3
    assert metadata["in_channels"] == 3
    # Normalization, bands and tile size come from the datamodule.
    assert metadata["normalization"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
    assert metadata["bands"] == [1, 2, 3]
    assert metadata["patch_size"] == 32

    loaded = ChangeTrainer.load_from_checkpoint(path, map_location="cpu")
    assert loaded.normalization == metadata["normalization"]
    x = torch.randn(2, 2, 3, 32, 32)
    module.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(module(x)["change"], loaded(x)["change"], atol=1e-6)

    # The predictor rebuilds the model from the metadata alone.
    from geochange.models import build_model

    rebuilt = build_model(metadata["model"], **metadata["model_kwargs"])
    state = {
        k.removeprefix("model."): v
        for k, v in loaded.state_dict().items()
        if k.startswith("model.")
    }
    rebuilt.load_state_dict(state)


def test_validation_metrics_equal_metric_on_all_batches(make_trainer: Any, make_dm: Any) -> None:
    dm = make_dm()
    module = ChangeTrainer(model="siam_diff", **TINY_MODEL)
    trainer = make_trainer()
    results = trainer.validate(module, datamodule=dm, verbose=False)[0]
    reference = BinaryChangeMetrics()
    module.eval()
    with torch.no_grad():
        for batch in DataLoader(dm.val_set, batch_size=3):  # other batching, same pixels
            logits = module(batch["image"])["change"][:, 0]
            reference.update((logits > 0).long(), batch["mask"])
    expected = reference.compute()
    for key, value in expected.items():
        assert results[f"val/{key}"] == pytest.approx(float(value), abs=1e-6), key


def test_semantic_fit_logs_scd_metrics(tmp_path: Path, make_trainer: Any, make_dm: Any) -> None:
    dm = make_dm(num_classes=3)
    module = ChangeTrainer(
        model="semantic_change",
        task="semantic",
        num_classes=3,
        class_names=["a", "b", "c"],
        loss_kwargs={"sacl_weight": 0.1, "pixels_per_class": 8, "hard_queries_per_class": 4},
        **TINY_MODEL,
    )
    trainer = make_trainer(limit_train_batches=2)
    trainer.fit(module, datamodule=dm)
    logged = trainer.logged_metrics
    for key in ("miou", "sek", "fscd", "iou_change", "f1", "iou/a", "iou/c", "train/loss_sacl"):
        name = key if key.startswith("train/") else f"val/{key}"
        assert name in logged, name
        assert math.isfinite(float(logged[name]))
    path = tmp_path / "semantic.ckpt"
    trainer.save_checkpoint(path)
    metadata = read_checkpoint_metadata(path)
    assert metadata["task"] == "semantic"
    assert metadata["num_classes"] == 3
    assert metadata["class_names"] == ["a", "b", "c"]
    loaded = ChangeTrainer.load_from_checkpoint(path, map_location="cpu")
    assert loaded.task == "semantic"
    with pytest.raises(CheckpointError, match="'semantic' change checkpoint"):
        ChangeTrainer.load_from_checkpoint(path, map_location="cpu", task="binary")


def test_user_model_and_loss_module(tmp_path: Path, make_trainer: Any, make_dm: Any) -> None:
    from geochange.losses import DiceLoss

    module = ChangeTrainer(model=TinyUserModel(), loss=DiceLoss(), lr=1e-2)
    trainer = make_trainer(limit_train_batches=2)
    trainer.fit(module, datamodule=make_dm())
    path = tmp_path / "user.ckpt"
    trainer.save_checkpoint(path)
    assert read_checkpoint_metadata(path)["model"] == "TinyUserModel"
    with pytest.raises(CheckpointError, match="user model"):
        ChangeTrainer.load_from_checkpoint(path)
    loaded = ChangeTrainer.load_from_checkpoint(path, model=TinyUserModel(), loss=DiceLoss())
    assert torch.equal(loaded.model.head.weight, module.model.head.weight)


def test_scheduler_steps_during_fit(make_trainer: Any, make_dm: Any) -> None:
    module = ChangeTrainer(model=TinyUserModel(), loss="bce", lr=1e-2, warmup_steps=1)
    trainer = make_trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(module, datamodule=make_dm())
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    # 4 steps in all, cosine down to min_lr_ratio=0.01 at the end.
    assert scheduler.last_epoch == 4
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 * 0.01)


def test_unknown_loss_and_task() -> None:
    with pytest.raises(ConfigurationError, match="unknown change loss"):
        ChangeTrainer(model=TinyUserModel(), loss="nope")
    with pytest.raises(ConfigurationError, match="needs task='semantic'"):
        ChangeTrainer(model=TinyUserModel(), loss="scd")
    with pytest.raises(ConfigurationError, match="task must be"):
        ChangeTrainer(model=TinyUserModel(), task="multiclass")  # type: ignore[arg-type]


LEVIR = Path(__file__).parents[2] / ".." / "shared" / "data" / "levircd-samples"


@pytest.mark.skipif(not LEVIR.exists(), reason="shared LEVIR-CD samples not available")
def test_checkpoint_takes_metadata_from_real_datamodule(tmp_path: Path, make_trainer: Any) -> None:
    from geochange.datamodules import ChangeDataModule

    dm = ChangeDataModule.from_folder(
        LEVIR, train_split="demo", val_split=None, test_split=None, patch_size=64, batch_size=2
    )
    module = ChangeTrainer(model=TinyUserModel(), loss="bce")
    trainer = make_trainer(limit_train_batches=1)
    trainer.fit(module, datamodule=dm)
    path = tmp_path / "levir.ckpt"
    trainer.save_checkpoint(path)
    metadata = read_checkpoint_metadata(path)
    assert metadata["patch_size"] == 64
    assert metadata["in_channels"] == 3
    assert metadata["normalization"] == dm.normalization
    assert len(metadata["normalization"]["mean"]) == 3
    # Raw 8-bit pixel units, not [0, 1].
    assert 20 < metadata["normalization"]["mean"][0] < 235
    # The value range of the PNGs, for the predictor's check of scenes.
    record = metadata["input_range"]
    assert record == dm.input_range and record["dtype"] == "uint8"
    bounds = zip(record["min"], record["max"], strict=True)
    assert all(0 <= low < high <= 255 for low, high in bounds)
    assert max(record["max"]) > 200


def test_channels_last_training(make_trainer: Any, make_dm: Any) -> None:
    module = ChangeTrainer(model=TinyUserModel(), loss="bce", channels_last=True)
    make_trainer(limit_train_batches=1, limit_val_batches=1).fit(module, datamodule=make_dm())
    weight = module.model.encoder.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow  # inductor compiles C++ kernels on the CPU (~1 min)
def test_compiled_training_matches_eager(make_trainer: Any, make_dm: Any) -> None:
    """``compile_model=True`` trains through ``torch.compile`` and computes the same loss."""
    batch = next(iter(make_dm().train_dataloader()))
    torch.manual_seed(0)
    eager = ChangeTrainer(model=TinyUserModel(), loss="bce")
    compiled = ChangeTrainer(model=TinyUserModel(), loss="bce", compile_model=True)
    compiled.model.load_state_dict(eager.model.state_dict())
    compiled.setup("fit")
    assert compiled._forward_fn is not None and compiled._forward_fn is not compiled.model
    eager.train()
    compiled.train()
    loss_eager = eager.training_step(batch, 0)
    loss_compiled = compiled.training_step(batch, 0)
    torch.testing.assert_close(loss_compiled, loss_eager, rtol=1e-4, atol=1e-5)
    loss_compiled.backward()
    assert compiled.model.head.weight.grad is not None
    # A short fit through Lightning with the compiled forward.
    module = ChangeTrainer(model=TinyUserModel(), loss="bce", compile_model=True)
    make_trainer(limit_train_batches=2, limit_val_batches=1).fit(module, datamodule=make_dm())
    assert module._forward_fn is not None
