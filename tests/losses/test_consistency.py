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
