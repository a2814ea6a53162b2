"""Consistency losses of semi-supervised training (geochange.losses.consistency)."""

from __future__ import annotations

import pytest
import torch

from geochange.losses.consistency import confidence_weighted_bce


def test_confidence_masking_and_fraction_weighting() -> None:
    logits = torch.tensor([[[2.0, -1.0], [0.5, 3.0]]], requires_grad=True)
    pseudo = torch.tensor([[[1, 0], [1, 255]]])
    confidence = torch.tensor([[[0.99, 0.96], [0.7, 0.99]]])
    loss = confidence_weighted_bce(logits, pseudo, confidence, threshold=0.95)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    # Two confident pixels; the denominator counts the three valid pixels (confident fraction).
    expected = (
        bce(torch.tensor(2.0), torch.tensor(1.0)) + bce(torch.tensor(-1.0), torch.tensor(0.0))
    ) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad is not None
    # No gradient through the unconfident pixel nor the ignored one.
    assert logits.grad[0, 1, 0] == 0 and logits.grad[0, 1, 1] == 0
    assert logits.grad[0, 0, 0] != 0 and logits.grad[0, 0, 1] != 0
    # Nothing confident: zero loss; everything ignored: zero loss, not NaN.
    low = torch.full_like(confidence, 0.6)
    assert confidence_weighted_bce(logits, pseudo, low, 0.95).item() == 0.0
    ignored = torch.full_like(pseudo, 255)
    assert confidence_weighted_bce(logits, ignored, confidence, 0.95).item() == 0.0


def test_class_aware_thresholds_let_moderately_confident_change_pixels_in() -> None:
    from geochange.losses.consistency import pseudo_label_thresholds

    # The issue-22 diagnosis in miniature: change pixels at p = 0.85 never pass one 0.95
    # threshold, so L_unsup only ever says "no change".
    pseudo = torch.tensor([[[1, 1, 0, 0]]])
    confidence = torch.tensor([[[0.85, 0.7, 0.99, 0.97]]])
    single = pseudo_label_thresholds(pseudo, 0.95)
    assert torch.allclose(single, torch.full((1, 1, 4), 0.95))
    aware = pseudo_label_thresholds(pseudo, 0.95, 0.8)
    assert torch.allclose(aware, torch.tensor([[[0.8, 0.8, 0.95, 0.95]]]))
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0]]])
    # BCE(0, y) = log 2 for every pixel: the loss counts the confident pixels over the 4 valid.
    log2 = float(torch.log(torch.tensor(2.0)))
    assert confidence_weighted_bce(logits, pseudo, confidence, single).item() == pytest.approx(
        2 * log2 / 4
    )
    assert confidence_weighted_bce(logits, pseudo, confidence, aware).item() == pytest.approx(
        3 * log2 / 4
    )


def test_change_balanced_bce_gives_each_class_half_the_weight() -> None:
    # 1 confident change pixel, 3 confident "no change" pixels, 1 unconfident: fraction 4/5.
    logits = torch.tensor([[[-2.0, 1.0, 1.0, 1.0, 0.0]]])
    pseudo = torch.tensor([[[1, 0, 0, 0, 0]]])
    confidence = torch.tensor([[[0.99, 0.99, 0.99, 0.99, 0.6]]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    change = bce(torch.tensor(-2.0), torch.tensor(1.0)).item()
    no_change = bce(torch.tensor(1.0), torch.tensor(0.0)).item()
    plain = confidence_weighted_bce(logits, pseudo, confidence, 0.95)
    assert plain.item() == pytest.approx((change + 3 * no_change) / 5, rel=1e-6)
    balanced = confidence_weighted_bce(logits, pseudo, confidence, 0.95, balance=True)
    assert balanced.item() == pytest.approx(4 / 5 * (change + no_change) / 2, rel=1e-6)
    # One class only: its mean times the confident fraction (as without balance).
    only = torch.zeros_like(pseudo)
    value = confidence_weighted_bce(logits, only, confidence, 0.95, balance=True).item()
    expected = 4 / 5 * (bce(torch.tensor(-2.0), torch.tensor(0.0)).item() + 3 * no_change) / 4
    assert value == pytest.approx(expected, rel=1e-6)


def test_generated_label_bce_reduction_over_all_pixels() -> None:
    from geochange.losses.consistency import generated_label_bce

    logits = torch.zeros(1, 1, 2, 2)
    labels = torch.tensor([[[1, 0], [255, 255]]])
    log2 = float(torch.log(torch.tensor(2.0)))
    assert generated_label_bce(logits, labels).item() == pytest.approx(log2)
    # DiffMatch's unlabeled reduction: the two uncertain pixels count in the denominator.
    assert generated_label_bce(logits, labels, over_all=True).item() == pytest.approx(log2 / 2)
    assert generated_label_bce(logits, torch.full_like(labels, 255)).item() == 0.0


def test_change_confidence_threshold_range_is_checked() -> None:
    from geochange.errors import ConfigurationError
    from geochange.losses.consistency import ConsistencyOptions

    with pytest.raises(ConfigurationError, match="change_confidence_threshold"):
        ConsistencyOptions(change_confidence_threshold=0.3)
    # Old checkpoints (no such hparams) read as one threshold, unbalanced.
    hparams = {
        "confidence_threshold": 0.9, "unsupervised_weight": 1.0, "contrastive_weight": 0.1,
        "generated_weight_start": 1.0, "generated_weight_end": 0.0, "feature_dropout": 0.0,
        "feature_perturbation_share": 0.5, "cutmix_probability": 0.5, "cutmix_area": (0.1, 0.2),
    }  # fmt: skip
    options = ConsistencyOptions.from_hparams(hparams)
    assert options.change_confidence_threshold is None and not options.balance_pseudo_labels
