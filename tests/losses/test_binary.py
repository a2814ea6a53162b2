"""Binary change losses (geochange.losses.binary): hand values, ignore_index, argument errors."""

from __future__ import annotations

import math

import pytest
import torch

from geochange.errors import ConfigurationError, DataError
from geochange.losses import (
    BCEDiceLoss,
    CombinedIoULoss,
    DiceLoss,
    FocalLoss,
    MaskedBCEWithLogitsLoss,
    SoftIoULoss,
    build_change_loss,
    masked_cross_entropy,
)

LOG2 = math.log(2.0)
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def _binary() -> tuple[torch.Tensor, torch.Tensor]:
    # Four pixels: logits [0, 0, 0, 5], labels [1, 0, 1, ignore].
    logits = torch.tensor([0.0, 0.0, 0.0, 5.0]).reshape(1, 1, 2, 2).requires_grad_()
    target = torch.tensor([1, 0, 1, 255]).reshape(1, 2, 2)
    return logits, target


def test_bce_and_pos_weight_hand_values() -> None:
    logits = torch.tensor([0.0, 2.0, -1.0]).reshape(1, 1, 1, 3)
    target = torch.tensor([1, 0, 255]).reshape(1, 1, 3)
    expected = (LOG2 + math.log(1 + math.e**2)) / 2
    assert float(MaskedBCEWithLogitsLoss()(logits, target)) == pytest.approx(expected, rel=1e-6)
    weighted = (3 * LOG2 + math.log(1 + math.e**2)) / 2
    value = MaskedBCEWithLogitsLoss(pos_weight=3.0)(logits, target)
    assert float(value) == pytest.approx(weighted, rel=1e-6)


def test_dice_iou_focal_combined_hand_values() -> None:
    logits, target = _binary()
    # p = 0.5 on the three labelled pixels: Σpt = 1, Σp = 1.5, Σt = 2, smooth = 1.
    assert float(DiceLoss()(logits, target)) == pytest.approx(1 - 3 / 4.5, rel=1e-6)
    assert float(SoftIoULoss()(logits, target)) == pytest.approx(1 - 2 / 3.5, rel=1e-6)
    assert float(DiceLoss(smooth=0.0)(logits, target)) == pytest.approx(1 - 2 / 3.5, rel=1e-6)
    # Focal: p_t = 0.5 everywhere, (1 - p_t)^2 = 0.25; alpha_t = 0.25 (change), 0.75 (none).
    focal = (0.25 * 0.25 * LOG2 * 2 + 0.75 * 0.25 * LOG2) / 3
    assert float(FocalLoss()(logits, target)) == pytest.approx(focal, rel=1e-6)
    assert float(FocalLoss(alpha=None, gamma=0.0)(logits, target)) == pytest.approx(LOG2)
    combined = LOG2 + (1 - 2 / 3.5)
    assert float(CombinedIoULoss()(logits, target)) == pytest.approx(combined, rel=1e-6)
    both = 2 * LOG2 + 0.5 * (1 - 3 / 4.5)
    value = BCEDiceLoss(bce_weight=2.0, dice_weight=0.5)(logits, target)
    assert float(value) == pytest.approx(both, rel=1e-6)


@pytest.mark.parametrize("name", ["bce", "dice", "focal", "iou", "combined_iou", "bce_dice"])
def test_ignored_pixels_do_not_matter(name: str) -> None:
    loss = build_change_loss(name)
    logits, target = _binary()
    value = loss(logits, target)
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert float(logits.grad.reshape(-1)[3]) == 0.0  # the ignored pixel gets no gradient
    other = logits.detach().clone()
    other.reshape(-1)[3] = -30.0
    assert float(loss(other, target)) == pytest.approx(float(value), rel=1e-6)
    # A fully ignored batch: zero loss, zero (finite) gradient.
    empty = torch.zeros(1, 1, 2, 2, requires_grad=True)
    zero = loss(empty, torch.full((1, 2, 2), 255))
    zero.backward()
    assert float(zero) == 0.0 and torch.equal(empty.grad, torch.zeros_like(empty))


def test_loss_argument_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown change loss"):
        build_change_loss("hinge")
    with pytest.raises(ConfigurationError, match="pos_weight"):
        MaskedBCEWithLogitsLoss(pos_weight=-1.0)
    with pytest.raises(DataError, match="differ in shape"):
        DiceLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 3, dtype=torch.long))


def test_masked_cross_entropy() -> None:
    logits = torch.zeros(1, 4, 2, 2, requires_grad=True)
    labels = torch.tensor([[[0, 3], [255, 1]]])
    assert float(masked_cross_entropy(logits, labels)) == pytest.approx(math.log(4))
    empty = masked_cross_entropy(logits, torch.full((1, 2, 2), 255))
    empty.backward()
    assert float(empty) == 0.0 and torch.isfinite(logits.grad).all()
