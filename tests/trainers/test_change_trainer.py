"""ChangeTrainer: training, metrics, checkpoints and bad input."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from geochange.errors import CheckpointError, ConfigurationError, DataError
from geochange.metrics import BinaryChangeMetrics
from geochange.trainers import METADATA_KEYS, ChangeTrainer, read_checkpoint_metadata
from geochange.trainers.change import lr_factor
from tests.builders import TinyChangeDataset

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


def test_lr_schedules() -> None:
    cosine = {"warmup": 2, "total": 10, "kind": "cosine", "floor": 0.0}
    assert lr_factor(0, **cosine) == pytest.approx(0.5)
    assert lr_factor(1, **cosine) == pytest.approx(1.0)
    assert lr_factor(2, **cosine) == pytest.approx(1.0)
    assert lr_factor(6, **cosine) == pytest.approx(0.5)  # halfway through the 8 decay steps
    assert lr_factor(10, **cosine) == pytest.approx(0.0, abs=1e-12)
    poly = {"warmup": 0, "total": 10, "kind": "poly", "power": 2.0, "floor": 0.1}
    assert lr_factor(5, **poly) == pytest.approx(0.1 + 0.9 * 0.25)


def test_scheduler_steps_during_fit(make_trainer: Any, make_dm: Any) -> None:
    module = ChangeTrainer(model=TinyUserModel(), loss="bce", lr=1e-2, warmup_steps=1)
    trainer = make_trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(module, datamodule=make_dm())
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    # 4 steps in all, cosine down to min_lr_ratio=0.01 at the end.
    assert scheduler.last_epoch == 4
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 * 0.01)


# ---------------------------------------------------------------------------- bad input
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


def test_unknown_loss_and_task() -> None:
    with pytest.raises(ConfigurationError, match="unknown change loss"):
        ChangeTrainer(model=TinyUserModel(), loss="nope")
    with pytest.raises(ConfigurationError, match="needs task='semantic'"):
        ChangeTrainer(model=TinyUserModel(), loss="scd")
    with pytest.raises(ConfigurationError, match="task must be"):
        ChangeTrainer(model=TinyUserModel(), task="multiclass")  # type: ignore[arg-type]


def test_corrupt_and_foreign_checkpoints(tmp_path: Path) -> None:
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint_metadata(missing)

    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint_metadata(corrupt)
    with pytest.raises(CheckpointError, match="corrupt"):
        ChangeTrainer.load_from_checkpoint(corrupt)

    bare = tmp_path / "bare.pt"
    torch.save(TinyUserModel().state_dict(), bare)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        read_checkpoint_metadata(bare)

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": TinyUserModel().state_dict(), "epoch": 3}, foreign)
    with pytest.raises(CheckpointError, match="not a geochange one"):
        ChangeTrainer.load_from_checkpoint(foreign)


def test_truncated_checkpoint(tmp_path: Path, make_trainer: Any, make_dm: Any) -> None:
    module = ChangeTrainer(model=TinyUserModel(), loss="bce")
    trainer = make_trainer(limit_train_batches=1)
    trainer.fit(module, datamodule=make_dm())
    path = tmp_path / "full.ckpt"
    trainer.save_checkpoint(path)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint_metadata(truncated)


def test_weights_that_do_not_fit(tmp_path: Path, make_trainer: Any, make_dm: Any) -> None:
    module = ChangeTrainer(model="fusion_unet", **TINY_MODEL)
    trainer = make_trainer(limit_train_batches=1, limit_val_batches=0)
    trainer.fit(module, datamodule=make_dm())
    path = tmp_path / "binary.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(CheckpointError, match="do not fit"):
        ChangeTrainer.load_from_checkpoint(path, model="siam_conc")


def test_figure_logged_to_tensorboard(tmp_path: Path, make_dm: Any) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    module = ChangeTrainer(model=TinyUserModel(), loss="bce", plot_every_n_epochs=1, plot_samples=2)
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=make_dm())
    accumulator = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    accumulator.Reload()
    assert "val/predictions" in accumulator.Tags()["images"]
    image = accumulator.Images("val/predictions")[0]
    assert image.width > 200 and image.height > 100
    assert "val/f1" in accumulator.Tags()["scalars"]


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


class _Opaque:
    pass


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "geochange": {}, "extra": _Opaque()}, path)
    with pytest.raises(CheckpointError, match="other than tensors"):
        read_checkpoint_metadata(path)


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


def test_random_bytes_checkpoint_is_not_reported_as_python_objects(tmp_path: Path) -> None:
    path = tmp_path / "random.ckpt"
    path.write_bytes(bytes((7 * i + 3) % 256 for i in range(4096)))
    for read in (read_checkpoint_metadata, ChangeTrainer.load_from_checkpoint):
        with pytest.raises(CheckpointError) as info:
            read(path)
        message = str(info.value)
        assert "random.ckpt" in message and "not a PyTorch checkpoint" in message
        assert "Python objects" not in message


def _saved(module: ChangeTrainer, path: Path, edit: Any = None) -> Path:
    """Save ``module`` as Lightning does (``edit`` may change the dict first)."""
    import lightning

    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    module.on_save_checkpoint(checkpoint)
    if edit is not None:
        edit(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_architecture_mismatch_message_lists_every_kind_of_problem(tmp_path: Path) -> None:
    module = ChangeTrainer(model="fusion_unet", **TINY_MODEL)
    keys = list(module.state_dict())
    dropped, reshaped = keys[0], keys[1]

    def damage(checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        del state[dropped]
        state[reshaped] = torch.zeros(2, 2)
        state["model.extra_head.weight"] = torch.zeros(1)

    path = _saved(module, tmp_path / "damaged.ckpt", damage)
    with pytest.raises(CheckpointError) as info:
        ChangeTrainer.load_from_checkpoint(path)
    message = str(info.value)
    assert "damaged.ckpt" in message and "do not fit" in message
    assert "1 missing" in message and dropped in message
    assert "1 unexpected" in message and "model.extra_head.weight" in message
    expected_shape = list(module.state_dict()[reshaped].shape)
    assert "1 key with another shape" in message and reshaped in message
    assert f"checkpoint [2, 2] vs model {expected_shape}" in message

    # Another architecture: every problem is counted, examples are listed, nothing is cut.
    conc = ChangeTrainer(model="siam_conc", **TINY_MODEL)
    other = _saved(conc, tmp_path / "conc.ckpt")
    with pytest.raises(CheckpointError) as info:
        ChangeTrainer.load_from_checkpoint(other, model="fusion_unet")
    message = str(info.value)
    missing = sorted(set(module.state_dict()) - set(conc.state_dict()))
    assert len(missing) > 5
    assert f"{len(missing)} missing keys" in message and f"and {len(missing) - 5} more" in message
    assert "keys with another shape" in message
    assert "\n" not in message and "Error(s) in loading" not in message


@pytest.mark.parametrize(
    ("key", "metadata_value", "hparams_value"),
    [("in_channels", 4, 3), ("model", "siam_conc", "fusion_unet"), ("task", "semantic", "binary"),
     ("patch_size", 64, 32)],
)  # fmt: skip
def test_metadata_is_cross_checked_against_hyper_parameters(
    tmp_path: Path, key: str, metadata_value: Any, hparams_value: Any
) -> None:
    module = ChangeTrainer(model="fusion_unet", **TINY_MODEL, patch_size=32)
    assert module.hparams[key] == hparams_value

    def edit(checkpoint: dict[str, Any]) -> None:
        checkpoint["geochange"][key] = metadata_value
        if key == "task":  # a consistent semantic record, so only the task disagrees
            checkpoint["geochange"]["num_classes"] = None

    path = _saved(module, tmp_path / "edited.ckpt", edit)
    for read in (read_checkpoint_metadata, ChangeTrainer.load_from_checkpoint):
        with pytest.raises(CheckpointError) as info:
            read(path)
        message = str(info.value)
        assert "edited.ckpt" in message and key in message
        assert repr(metadata_value) in message and repr(hparams_value) in message


def test_backbone_and_normalization_are_cross_checked(tmp_path: Path) -> None:
    module = ChangeTrainer(model="fusion_unet", **TINY_MODEL)

    def edit(checkpoint: dict[str, Any]) -> None:
        checkpoint["geochange"]["model_kwargs"]["backbone"] = "resnet34"

    with pytest.raises(CheckpointError, match=r"backbone.*'resnet34'.*'resnet18'"):
        read_checkpoint_metadata(_saved(module, tmp_path / "a.ckpt", edit))
    normalized = ChangeTrainer(model="fusion_unet", **TINY_MODEL,
                               normalization={"mean": [1.0] * 3, "std": [2.0] * 3})  # fmt: skip

    def edit_norm(checkpoint: dict[str, Any]) -> None:
        checkpoint["geochange"]["normalization"] = {"mean": [9.0] * 3, "std": [2.0] * 3}

    with pytest.raises(CheckpointError, match="normalization"):
        read_checkpoint_metadata(_saved(normalized, tmp_path / "b.ckpt", edit_norm))
    # A user-model checkpoint has no model hyper-parameter: nothing to compare, it reads fine.
    user = ChangeTrainer(model=TinyUserModel(), loss="bce")
    assert read_checkpoint_metadata(_saved(user, tmp_path / "c.ckpt"))["model"] == "TinyUserModel"


def test_hparams_file_overrides_saved_hyper_parameters(tmp_path: Path) -> None:
    import yaml

    module = ChangeTrainer(model="fusion_unet", **TINY_MODEL, lr=1e-3)
    path = _saved(module, tmp_path / "a.ckpt")
    hparams = dict(module.hparams, lr=0.05)
    (tmp_path / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    loaded = ChangeTrainer.load_from_checkpoint(path, hparams_file=tmp_path / "hparams.yaml")
    assert loaded.hparams["lr"] == 0.05
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(ConfigurationError, match="hparams_file"):
        ChangeTrainer.load_from_checkpoint(path, hparams_file=tmp_path / "hparams.json")
