from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from scenes import Pair

from geochange.datamodules import ChangeDataModule
from geochange.errors import ConfigurationError, DataError


def test_geo_metadata_and_normalization(pair: Pair) -> None:
    dm = ChangeDataModule(
        pair.pre,
        pair.post,
        pair.change,
        semantic_pre=pair.semantic_pre,
        semantic_post=pair.semantic_post,
        patch_size=16,
        stats_samples=300,
    )
    assert dm.in_channels == 3 and dm.task == "semantic" and dm.patch_size == 16
    assert dm.num_classes == 7 and dm.class_names is not None and dm.class_names[4] == "tree"
    stats = dm.normalization
    train = dm.rois["train"].bounds
    cols = slice(0, int(train[2] - train[0]))
    both = np.concatenate([pair.pre_array[:, :, cols], pair.post_array[:, :, cols]], axis=2)
    mean = both.reshape(3, -1).mean(axis=1)
    std = both.reshape(3, -1).std(axis=1)
    np.testing.assert_allclose(stats["mean"], mean, rtol=0.03)
    np.testing.assert_allclose(stats["std"], std, rtol=0.05)
    given = ChangeDataModule(
        pair.pre, pair.post, patch_size=16, normalization={"mean": [1] * 3, "std": [2] * 3}
    )
    assert given.normalization == {"mean": [1] * 3, "std": [2] * 3}
    assert given.task == "binary" and given.num_classes is None


def test_geo_loaders_do_not_leak(pair: Pair) -> None:
    dm = ChangeDataModule(
        pair.pre,
        pair.post,
        pair.change,
        patch_size=32,
        batch_size=4,
        samples_per_epoch=12,
        splits=(0.6, 0.2, 0.2),
    )
    dm.setup("fit")
    train_x = dm.rois["train"].bounds
    batches = list(dm.train_dataloader())
    assert len(batches) == 3
    batch = batches[0]
    assert batch["image"].shape == (4, 2, 3, 32, 32) and batch["mask"].shape == (4, 32, 32)
    for b in batches:
        assert (b["bounds"][:, 0] >= train_x[0]).all() and (b["bounds"][:, 1] <= train_x[2]).all()
    val_x = dm.rois["val"].bounds
    val = list(dm.val_dataloader())
    assert val
    for b in val:
        assert (b["bounds"][:, 0] >= val_x[0]).all() and (b["bounds"][:, 1] <= val_x[2]).all()
    assert train_x[2] <= val_x[0]
    out = dm.apply_batch_transforms(batch, train=True)
    assert out["image"].shape == batch["image"].shape and out["image"].dtype == torch.float32
    stats = dm.normalization
    mean = torch.tensor(stats["mean"]).view(1, 1, 3, 1, 1)
    std = torch.tensor(stats["std"]).view(1, 1, 3, 1, 1)
    plain = dm.apply_batch_transforms(batch, train=False)
    torch.testing.assert_close(plain["image"], (batch["image"] - mean) / std)
    assert set(out["mask"].unique().tolist()) <= {0, 1, 255}


def test_geo_labeled_fraction(pair: Pair) -> None:
    dm = ChangeDataModule(
        pair.pre,
        pair.post,
        pair.change,
        patch_size=32,
        batch_size=2,
        samples_per_epoch=4,
        labeled_fraction=0.25,
        combine_unlabeled=True,
        splits=(0.6, 0.2, 0.2),
    )
    labeled, unlabeled = dm.rois["labeled"], dm.rois["unlabeled"]
    assert labeled.intersection(unlabeled).area == 0
    assert labeled.area == pytest.approx(0.25 * dm.rois["train"].area, rel=0.05)
    ub = next(iter(dm.unlabeled_dataloader()))
    assert "mask" not in ub and ub["image"].shape == (2, 2, 3, 32, 32)
    combined = dm.train_dataloader()
    batch, *_ = next(iter(combined))
    assert set(batch) == {"labeled", "unlabeled"}
    out = dm.on_after_batch_transfer(batch, 0)
    assert "mask" in out["labeled"] and "mask" not in out["unlabeled"]


def test_semantic_maps_as_pseudo_labels_for_unlabeled(pair: Pair) -> None:
    # DiffMatch: per-date segmenter maps exist everywhere; only the change label is scarce.
    kwargs = dict(patch_size=32, batch_size=2, samples_per_epoch=4, labeled_fraction=0.25)
    kwargs.update(splits=(0.6, 0.2, 0.2))
    plain = ChangeDataModule(pair.pre, pair.post, pair.change, pair.semantic_pre,
                             pair.semantic_post, **kwargs)  # fmt: skip
    assert not {"mask_pre", "pseudo_pre"} & set(next(iter(plain.unlabeled_dataloader())))
    dm = ChangeDataModule(pair.pre, pair.post, pair.change, pair.semantic_pre,
                          pair.semantic_post, semantic_as_pseudo=True, **kwargs)  # fmt: skip
    ub = next(iter(dm.unlabeled_dataloader()))
    assert "mask" not in ub and "mask_pre" not in ub
    assert ub["pseudo_pre"].shape == ub["pseudo_post"].shape == (2, 32, 32)
    assert ub["pseudo_pre"].dtype == torch.long
    assert bool((ub["pseudo_pre"] != 255).any())  # real class ids, not an empty placeholder


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


def test_geo_0_255_label_needs_mask_values(pair: Pair, shared_data: Path, tmp_path: Path) -> None:
    # A real LEVIR-CD label (0/255 PNG) as a GeoTIFF on the scene's grid.
    from PIL import Image
    from scenes import write_tif

    levir = np.asarray(Image.open(shared_data / "levircd-samples/label/test_2_0000_0000.png"))
    assert set(np.unique(levir)) == {0, 255}
    label = write_tif(tmp_path / "levir_change.tif", levir)
    options = {"patch_size": 32, "batch_size": 4, "splits": (0.6, 0.2, 0.2)}
    with pytest.raises(DataError, match=r"levir_change\.tif.*0/255.*mask_values=\"0,255\""):
        ChangeDataModule(pair.pre, pair.post, label, **options)
    dm = ChangeDataModule(pair.pre, pair.post, label, mask_values="0,255", **options)
    assert dm.geo_dataset is not None
    change = dm.geo_dataset.read_change(tuple(dm.geo_dataset.overlap.bounds))
    np.testing.assert_array_equal(change, (levir == 255).astype(np.uint8))
    batch = next(iter(dm.train_dataloader()))
    assert set(batch["mask"].unique().tolist()) <= {0, 1} and (batch["mask"] == 1).any()
    # Values outside the convention fail when the datamodule is built, not at the first batch.
    seven = write_tif(tmp_path / "seven.tif", np.where(levir == 255, 7, 0).astype(np.uint8))
    with pytest.raises(DataError, match=r"seven\.tif.* holds value 7 outside"):
        ChangeDataModule(pair.pre, pair.post, seven, **options)


def test_bad_arguments(pair: Pair, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="labeled_fraction"):
        ChangeDataModule(pair.pre, pair.post, labeled_fraction=1.5)
    with pytest.raises(ConfigurationError, match="smaller than min_size"):
        ChangeDataModule(pair.pre, pair.post, patch_size=128, splits=(0.8, 0.1, 0.1))
    with pytest.raises(DataError, match="cannot find split 'train'"):
        ChangeDataModule.from_folder(tmp_path)


class _Probe(pl.LightningModule):
    """Checks that batches arrive normalized and augmented with the right shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Conv2d(6, 1, 1)
        self.means: list[float] = []

    def training_step(self, batch: dict[str, torch.Tensor], _: int) -> torch.Tensor:
        image = batch["image"]
        assert image.ndim == 5 and image.shape[1:3] == (2, 3)
        self.means.append(float(image.mean()))
        logits = self.layer(image.flatten(1, 2))[:, 0]
        target = (batch["mask"] == 1).float()
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, target)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_lightning_fit(pair: Pair) -> None:
    dm = ChangeDataModule(
        pair.pre,
        pair.post,
        pair.change,
        patch_size=32,
        batch_size=2,
        samples_per_epoch=4,
        splits=(0.6, 0.2, 0.2),
    )
    probe = _Probe()
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(probe, datamodule=dm)
    assert len(probe.means) == 2
    assert all(abs(m) < 1.0 for m in probe.means)  # raw uint8 values would average ~110
