"""Diagnostics of the semi-supervised trainer (geochange.trainers.semi_diagnostics) and options."""

from __future__ import annotations

import pytest
import torch

from geochange.datamodules.change import stack_unlabeled_with_truth
from geochange.errors import ConfigurationError
from geochange.keys import DIAGNOSTIC_CHANGE, PSEUDO_CHANGE
from geochange.trainers.semi_diagnostics import (
    generated_head_diagnostics,
    pseudo_label_diagnostics,
)
from geochange.trainers.semi_views import weak_view
from geochange.transforms import ChangeAugmentation
from tests.trainers.test_semi import make_pair_batch, small_trainer


@pytest.fixture(autouse=True)
def _one_thread(single_thread: None) -> None:
    """One intra-op thread on the shared CPU."""


def test_pseudo_label_diagnostics_per_class_and_against_truth() -> None:
    pseudo = torch.tensor([[[1, 1, 1, 0, 0, 0, 0, 0]]])
    confidence = torch.tensor([[[0.9, 0.9, 0.6, 0.99, 0.99, 0.99, 0.99, 0.7]]])
    truth = torch.tensor([[[1, 0, 1, 1, 0, 0, 0, 255]]])
    out = pseudo_label_diagnostics(pseudo, confidence, 0.8, truth)
    values = {k: round(float(v), 6) for k, v in out.items()}
    assert values == {
        "confident_fraction": 6 / 8,
        "pseudo_change_fraction": 3 / 8,
        "confident_fraction_change": round(2 / 3, 6),
        "confident_fraction_no_change": 4 / 5,
        # Confident change labels: pixels 0 (true) and 1 (false).
        "pseudo_precision": 0.5,
        # True change pixels 0, 2, 3: one confident change label among them; two change labels.
        "pseudo_recall": round(1 / 3, 6),
        "pseudo_recall_any_confidence": round(2 / 3, 6),
    }
    # No change label at all, no truth: undefined ratios are left out, not logged as 0.
    out = pseudo_label_diagnostics(torch.zeros_like(pseudo), confidence, 0.8)
    assert "confident_fraction_change" not in out and "pseudo_recall" not in out


def test_generated_head_diagnostics_where_ceg_says_change() -> None:
    generated = torch.tensor([[[1, 1, 0, 255]]])
    logit = torch.logit
    p_generated = torch.tensor([[[[0.9, 0.2, 0.8, 0.9]]]])
    p_change = torch.tensor([[[[0.1, 0.3, 0.5, 0.5]]]])
    out = generated_head_diagnostics(logit(p_generated), logit(p_change), generated)
    assert float(out["generated_change_fraction"]) == pytest.approx(0.5)
    assert float(out["generated_head_recall"]) == pytest.approx(0.5)
    assert float(out["generated_head_probability"]) == pytest.approx(0.55)
    assert float(out["change_head_probability_on_generated"]) == pytest.approx(0.2)
    none = generated_head_diagnostics(logit(p_generated), logit(p_change), generated * 0)
    assert set(none) == {"generated_change_fraction"}


def test_weak_view_moves_truth_and_ceg_labels_with_the_image() -> None:
    torch.manual_seed(3)
    image = torch.zeros(2, 2, 1, 16, 16)
    truth = torch.zeros(2, 16, 16, dtype=torch.long)
    truth[:, 2:6, 9:14] = 1
    truth[:, 0, :] = 255
    ceg = torch.zeros_like(truth)
    ceg[:, 3:5, 10:12] = 1
    ceg[:, 15, :] = 255
    # Encode the truth into the image to check the geometry afterwards.
    image[:, 0, 0] = truth.float()
    augmentation = ChangeAugmentation(
        scale=None, brightness=0, contrast=0, saturation=0, hue=0, value_range=None
    )
    batch = {"image": image, DIAGNOSTIC_CHANGE: truth, PSEUDO_CHANGE: ceg}
    for _ in range(4):
        view = weak_view(augmentation, batch, None)
        assert torch.equal(view[DIAGNOSTIC_CHANGE], view["image"][:, 0, 0].round().long())
        assert sorted(view[PSEUDO_CHANGE].unique().tolist()) == [0, 1, 255]
        assert int((view[PSEUDO_CHANGE] == 1).sum()) == 2 * 4
        assert int((view[DIAGNOSTIC_CHANGE] == 1).sum()) == 2 * 20


def test_unlabeled_truth_collate_and_trainer_logs_pseudo_recall() -> None:
    sample = {"image": torch.zeros(2, 3, 4, 4), "mask": torch.ones(4, 4, dtype=torch.long),
              "mask_pre": torch.zeros(4, 4, dtype=torch.long),
              "mask_post": torch.zeros(4, 4, dtype=torch.long)}  # fmt: skip
    batch = stack_unlabeled_with_truth([sample, sample], pseudo=True)
    assert set(batch) == {"image", DIAGNOSTIC_CHANGE, "pseudo_pre", "pseudo_post"}
    assert batch[DIAGNOSTIC_CHANGE].shape == (2, 4, 4) and int(batch[DIAGNOSTIC_CHANGE].sum()) == 32
    assert set(stack_unlabeled_with_truth([sample])) == {"image", DIAGNOSTIC_CHANGE}

    torch.manual_seed(0)
    trainer = small_trainer(method="diffmatch")
    unlabeled = make_pair_batch(3, seed=1)
    unlabeled[DIAGNOSTIC_CHANGE] = unlabeled.pop("mask")
    terms = trainer.semi_supervised_losses(make_pair_batch(2, seed=0), unlabeled)
    for name in ("pseudo_recall_any_confidence", "generated_change_fraction"):
        assert 0.0 <= float(terms[name]) <= 1.0
    # The squares are change in the CEG labels too: the generated-head diagnostics are there.
    assert float(terms["generated_change_fraction"]) > 0.05
    assert "generated_head_recall" in terms


def test_head_lr_multiplier_and_option_checks() -> None:
    trainer = small_trainer(method="fixmatch", head_lr_multiplier=10.0, lr=1e-3, warmup_steps=0)
    config = trainer.configure_optimizers()
    groups = config["optimizer"].param_groups
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-2])
    encoder = {id(p) for p in trainer.model.encoder.parameters()}
    assert all(id(p) in encoder for p in groups[0]["params"])
    assert not any(id(p) in encoder for p in groups[1]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(trainer.parameters()))
    assert config["lr_scheduler"]["scheduler"].optimizer is config["optimizer"]
    plain = small_trainer(method="fixmatch").configure_optimizers()
    assert len(plain["optimizer"].param_groups) == 1
    with pytest.raises(ConfigurationError, match="head_lr_multiplier"):
        small_trainer(head_lr_multiplier=0.0)
    with pytest.raises(ConfigurationError, match="generated_loss"):
        small_trainer(generated_loss="dice")  # type: ignore[arg-type]
