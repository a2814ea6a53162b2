"""Tests for the semi-supervised (FixMatch / DiffMatch) change trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from geochange.errors import ConfigurationError, DataError
from geochange.trainers import ChangeTrainer, read_checkpoint_metadata
from geochange.trainers.semi import SemiSupervisedChangeTrainer, StrongPhotometric
from geochange.trainers.semi_diagnostics import DIAGNOSTICS
from geochange.transforms import ChangeAugmentation

SIZE = 32
# A small siamese model keeps every step well under a second on a loaded 2-core CPU.
SMALL = {"encoder_depth": 3, "decoder_channels": (32, 16, 8), "aux_decoder_channels": (16, 8, 8)}


@pytest.fixture(autouse=True)
def _one_thread(single_thread: None) -> None:
    """Two intra-op threads on a shared, loaded 2-core machine are ~30x slower than one."""


def make_pair_batch(batch: int, seed: int, *, labeled: bool = True) -> dict[str, torch.Tensor]:
    """Pairs where a building (class 0) appears in a square; pseudo maps mark it too."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 2, 3, SIZE, SIZE, generator=gen) * 0.3
    pre = torch.randint(1, 7, (batch, SIZE, SIZE), generator=gen)
    # Blocky backgrounds: per 8x8 cell one class (keeps CEG instances meaningful).
    pre = pre[:, ::8, ::8].repeat_interleave(8, 1).repeat_interleave(8, 2)
    post = pre.clone()
    mask = torch.zeros(batch, SIZE, SIZE, dtype=torch.long)
    for index in range(batch):
        y, x = torch.randint(0, SIZE - 12, (2,), generator=gen).tolist()
        post[index, y : y + 12, x : x + 12] = 0
        image[index, 1, :, y : y + 12, x : x + 12] += 2.0
        mask[index, y : y + 12, x : x + 12] = 1
    out = {"image": image, "pseudo_pre": pre, "pseudo_post": post}
    if labeled:
        out["mask"] = mask
    return out


def small_trainer(**kwargs: Any) -> SemiSupervisedChangeTrainer:
    kwargs.setdefault("model_kwargs", dict(SMALL))
    kwargs.setdefault("ceg_kwargs", {"min_instance_pixels": 4})
    return SemiSupervisedChangeTrainer("siam_diff", **kwargs)


def test_strong_view_keeps_geometry_and_weak_view_moves_maps_with_image() -> None:
    torch.manual_seed(0)
    strong = StrongPhotometric(jitter_p=1.0, blur_p=0.0, grayscale_p=0.0)
    image = torch.zeros(2, 2, 3, SIZE, SIZE)
    image[:, :, :, 4:10, 20:30] = 3.0
    out = strong(image)
    assert out.shape == image.shape
    assert not torch.allclose(out, image)
    # Photometry only: the bright box is still where it was, on both dates.
    inside = out[:, :, :, 4:10, 20:30].mean()
    outside = out[:, :, :, 12:, :12].mean()
    assert inside > outside + 1.0

    trainer = small_trainer(
        method="diffmatch",
        weak_augmentation=ChangeAugmentation(
            scale=None, brightness=0, contrast=0, saturation=0, hue=0, value_range=None
        ),
    )
    batch = make_pair_batch(4, seed=1, labeled=False)
    # Encode the pseudo maps into the image so we can check they moved together.
    batch["image"][:, 0, 0] = batch["pseudo_pre"].float()
    batch["image"][:, 1, 0] = batch["pseudo_post"].float()
    semantic = (batch["pseudo_pre"], batch["pseudo_post"])
    for _ in range(3):
        view = trainer._weak_view(batch, semantic)
        assert torch.equal(view["image"][:, 0, 0].round().long(), view["pseudo_pre"])
        assert torch.equal(view["image"][:, 1, 0].round().long(), view["pseudo_post"])


# ---------------------------------------------------------------------- training steps
def test_diffmatch_terms_and_gradients_reach_every_branch() -> None:
    torch.manual_seed(0)
    trainer = small_trainer(
        method="diffmatch",
        confidence_threshold=0.5,
        change_confidence_threshold=0.5,
        feature_dropout=0.5,
    )
    terms = trainer.semi_supervised_losses(
        make_pair_batch(2, seed=0), make_pair_batch(3, seed=1, labeled=False)
    )
    expected = {
        "sup", "unsup", "feature_perturbation", "contrast_sup", "contrast_unsup",
        "generated_labeled", "generated_weak", "generated_strong", "aux_semantic_labeled",
        "aux_semantic_weak", "aux_semantic_strong", "confident_fraction", "generated_weight",
    }  # fmt: skip
    assert expected <= set(terms)
    assert all(torch.isfinite(value).all() for value in terms.values())
    # Threshold 0.5: every pixel is confident.
    assert terms["confident_fraction"].item() == pytest.approx(1.0)
    # Outside a Lightning run lambda stays at its start value; check the total formula.
    weight = terms["generated_weight"].item()
    assert weight == pytest.approx(1.0)  # lambda at its start (generated_weight_start)
    guidance = sum(
        terms[f"{kind}_{view}"]
        for kind in ("generated", "aux_semantic")
        for view in ("labeled", "weak", "strong")
    )
    total = (
        (terms["sup"] + terms["unsup"]) / 2
        + 0.1 * (terms["contrast_sup"] + terms["contrast_unsup"]) / 2
        + weight / 6 * guidance
    )
    assert terms["loss"].item() == pytest.approx(float(total), rel=1e-5)
    terms["loss"].backward()
    model: Any = trainer.model
    for module in (
        model.change_head,
        model.generated_head,
        model.aux_head_pre,
        model.aux_head_post,
    ):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_few_semi_supervised_steps_reduce_the_losses() -> None:
    torch.manual_seed(0)
    trainer = small_trainer(method="diffmatch", confidence_threshold=0.7)
    labeled = make_pair_batch(4, seed=0)
    unlabeled = make_pair_batch(4, seed=1, labeled=False)
    optimizer = torch.optim.Adam(trainer.parameters(), lr=3e-3)

    def evaluate() -> dict[str, float]:
        # Same augmentation draws each time, so the terms are comparable.
        torch.manual_seed(123)
        with torch.no_grad():
            terms = trainer.semi_supervised_losses(labeled, unlabeled)
        return {name: float(value) for name, value in terms.items()}

    before = evaluate()
    for _ in range(12):
        terms = trainer.semi_supervised_losses(labeled, unlabeled)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
    after = evaluate()
    for name in ("loss", "sup", "generated_labeled", "aux_semantic_labeled", "contrast_sup"):
        assert after[name] < before[name], (name, before[name], after[name])


def test_ceg_kwargs_accept_the_old_min_instance_area_with_a_warning() -> None:
    new = small_trainer(ceg_kwargs={"min_instance_pixels": 4})
    with pytest.warns(DeprecationWarning, match="min_instance_pixels") as caught:
        old = small_trainer(ceg_kwargs={"min_instance_area": 4})
    assert caught[0].filename == __file__
    assert old.ceg_kwargs == new.ceg_kwargs == {"min_instance_pixels": 4}
    batch = make_pair_batch(2, seed=0)
    pre, post = batch["pseudo_pre"], batch["pseudo_post"]
    labels = new._generated_labels(pre, post)
    assert (labels == 1).any()
    torch.testing.assert_close(old._generated_labels(pre, post), labels)


def test_fixmatch_has_no_guidance_terms_and_validates_inputs() -> None:
    torch.manual_seed(0)
    trainer = small_trainer(method="fixmatch")
    assert not hasattr(trainer.model, "aux_head_pre") and trainer.model.generated_head is None
    labeled = make_pair_batch(2, seed=0)
    unlabeled = {"image": make_pair_batch(2, seed=1)["image"]}  # no pseudo maps needed
    terms = trainer.semi_supervised_losses(labeled, unlabeled)
    losses = {name for name in terms if name not in DIAGNOSTICS}
    assert losses == {"sup", "unsup", "loss"}
    # Without a truth on the unlabeled batch, only the confidence diagnostics are there.
    assert {"confident_fraction", "pseudo_change_fraction"} <= set(terms) - losses
    assert "pseudo_recall" not in terms
    assert terms["loss"].item() == pytest.approx(
        float((terms["sup"] + terms["unsup"]) / 2), rel=1e-6
    )
    with pytest.raises(DataError, match="unlabeled batch 'image'"):
        trainer.semi_supervised_losses(labeled, {"image": torch.zeros(2, 3, SIZE, SIZE)})

    diffmatch = small_trainer(method="diffmatch")
    with pytest.raises(DataError, match="pseudo semantic maps"):
        diffmatch.semi_supervised_losses(labeled, unlabeled)
    bad = make_pair_batch(2, seed=1, labeled=False)
    bad["pseudo_pre"] = bad["pseudo_pre"] + 20
    with pytest.raises(DataError, match="outside"):
        diffmatch.semi_supervised_losses(labeled, bad)
    # On-the-fly pseudo maps through a callable.
    fn_trainer = small_trainer(
        method="diffmatch",
        pseudo_semantic_fn=lambda b: (b["image"][:, 0, 0] > 0).long(),  # wrong: one map
    )
    with pytest.raises((DataError, ValueError, TypeError)):
        fn_trainer.semi_supervised_losses(labeled, unlabeled)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "meanteacher"}, "method"),
        ({"confidence_threshold": 1.0}, "confidence_threshold"),
        ({"feature_dropout": 1.5}, "feature_dropout"),
        ({"cutmix_area": (0.5, 0.2)}, "cutmix_area"),
        ({"change_classes": (9,)}, "change_classes"),
        ({"contrastive_weight": -1.0}, "contrastive_weight"),
        ({"task": "semantic"}, "binary"),
    ],
)
def test_configuration_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        small_trainer(**kwargs)


# ---------------------------------------------------------------------- Lightning
class _PairSet(Dataset[dict[str, torch.Tensor]]):
    def __init__(self, length: int, seed: int, labeled: bool) -> None:
        batch = make_pair_batch(length, seed, labeled=labeled)
        self.items = [{k: v[i] for k, v in batch.items()} for i in range(length)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.items[index]


class _SemiDataModule(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.in_channels = 3
        self.task = "binary"
        self.patch_size = SIZE
        self.normalization = {"mean": [0.0] * 3, "std": [1.0] * 3}

    def train_dataloader(self) -> CombinedLoader:
        return CombinedLoader(
            {
                "labeled": DataLoader(_PairSet(2, 0, True), batch_size=2),
                "unlabeled": DataLoader(_PairSet(6, 1, False), batch_size=2),
            },
            mode="max_size_cycle",
        )

    def val_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
        return DataLoader(_PairSet(2, 2, True), batch_size=2)


def test_lightning_fit_with_combined_loader_and_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = small_trainer(method="diffmatch", generated_weight_start=1.0)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=_SemiDataModule())
    assert trainer.global_step == 3  # the unlabeled loader (3 batches) drives the epoch
    logged = trainer.callback_metrics
    for key in ("train/loss", "train/loss_unsup", "train/loss_generated_strong", "val/f1"):
        assert key in logged, sorted(logged)
    # lambda decays linearly over the 3 estimated steps: 1 -> 1/3 at the last step.
    assert logged["train/generated_weight"].item() == pytest.approx(1 / 3, abs=1e-6)
    path = tmp_path / "semi.ckpt"
    trainer.save_checkpoint(path)
    metadata = read_checkpoint_metadata(path)
    assert metadata["model"] == "siam_diff" and metadata["task"] == "binary"
    assert metadata["model_kwargs"]["dual_head"] and metadata["model_kwargs"]["aux_semantic"]
    # The plain ChangeTrainer loader (used by the predictor) rebuilds the same network.
    loaded = ChangeTrainer.load_from_checkpoint(path, map_location="cpu")
    loaded.eval()
    module.eval()
    image = make_pair_batch(1, seed=5)["image"]
    with torch.no_grad():
        assert torch.allclose(loaded(image)["change"], module(image)["change"], atol=1e-5)
    reloaded = SemiSupervisedChangeTrainer.load_from_checkpoint(path, map_location="cpu")
    assert isinstance(reloaded, SemiSupervisedChangeTrainer) and reloaded.method == "diffmatch"


def test_binary_semi_checkpoint_with_unused_num_classes_reads(tmp_path: Path) -> None:
    # num_classes is ignored by binary registry models; the hyper-parameters keep it anyway.
    import lightning

    module = SemiSupervisedChangeTrainer(model="siam_diff", method="fixmatch", num_classes=7)
    assert module.hparams["num_classes"] == 7 and module.num_classes is None
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "semi.ckpt")
    assert read_checkpoint_metadata(tmp_path / "semi.ckpt")["num_classes"] is None


def test_old_import_paths_re_export_the_building_blocks() -> None:
    # The cutmix, consistency-loss and schedule tests import these from their homes; the trainer
    # modules keep re-exporting them (their old public paths).
    import geochange.trainers.change as change
    import geochange.trainers.semi as semi
    from geochange.losses.consistency import confidence_weighted_bce
    from geochange.trainers.schedules import linear_schedule, lr_factor
    from geochange.transforms.cutmix import apply_cutmix, cutmix_boxes

    assert semi.apply_cutmix is apply_cutmix and semi.cutmix_boxes is cutmix_boxes
    assert semi.confidence_weighted_bce is confidence_weighted_bce
    assert semi.linear_schedule is linear_schedule and change.lr_factor is lr_factor
