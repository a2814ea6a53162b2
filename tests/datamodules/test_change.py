"""ChangeDataModule itself (geochange.datamodules.change).

Metadata and normalization, pseudo labels for unlabeled batches, argument errors, a Lightning fit.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from geochange.datamodules import ChangeDataModule
from geochange.errors import ConfigurationError, DataError
from tests.builders import Pair


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
    # The loader's batches are compact (uint8 rasters -> uint8 maps); the batch transforms
    # that run on the device give long maps with the same values.
    assert ub["pseudo_pre"].dtype == torch.uint8 and ub["image"].dtype == torch.uint8
    seen = dm.apply_batch_transforms(ub, train=False)
    assert seen["pseudo_pre"].dtype == torch.long and seen["image"].dtype == torch.float32
    assert torch.equal(seen["pseudo_pre"], ub["pseudo_pre"].long())
    assert bool((ub["pseudo_pre"] != 255).any())  # real class ids, not an empty placeholder


def test_bad_arguments(pair: Pair, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="labeled_fraction"):
        ChangeDataModule(pair.pre, pair.post, labeled_fraction=1.5)
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
