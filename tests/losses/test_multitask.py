"""The semantic change multitask loss (geochange.losses.multitask): its terms and total."""

from __future__ import annotations

import pytest
import torch

from geochange.losses import BCEDiceLoss, SCDMultitaskLoss, masked_cross_entropy

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def test_scd_multitask_terms_and_total() -> None:
    torch.manual_seed(0)
    outputs = {
        "change": torch.randn(2, 1, 8, 8, requires_grad=True),
        "semantic_pre": torch.randn(2, 4, 8, 8, requires_grad=True),
        "semantic_post": torch.randn(2, 4, 8, 8, requires_grad=True),
        "semantic_features_pre": torch.randn(2, 6, 8, 8, requires_grad=True),
        "semantic_features_post": torch.randn(2, 6, 8, 8, requires_grad=True),
        "embedding_pre": torch.randn(2, 5, 8, 8, requires_grad=True),
        "embedding_post": torch.randn(2, 5, 8, 8, requires_grad=True),
    }
    mask = torch.randint(0, 2, (2, 8, 8))
    mask[:, 0] = 255
    mask_pre = torch.randint(0, 4, (2, 8, 8))
    mask_post = torch.randint(0, 4, (2, 8, 8))
    mask_pre[:, :, 0] = 255
    criterion = SCDMultitaskLoss(4, embedding_dim=5, sacl_weight=0.5, bscc_weight=0.25)
    terms = criterion(outputs, mask, mask_pre, mask_post)
    expected_ce = masked_cross_entropy(outputs["semantic_pre"], mask_pre)
    assert float(terms["semantic_pre"]) == pytest.approx(float(expected_ce), rel=1e-6)
    assert float(terms["change"]) == pytest.approx(
        float(BCEDiceLoss()(outputs["change"], mask)), rel=1e-6
    )
    total = (
        terms["semantic_pre"]
        + terms["semantic_post"]
        + terms["change"]
        + 0.25 * terms["bscc"]
        + 0.5 * terms["sacl"]
    )
    assert float(terms["loss"]) == pytest.approx(float(total), rel=1e-6)
    assert float(terms["sacl"]) > 0
    terms["loss"].backward()
    for tensor in outputs.values():
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
    # Change-only labels: semantic and SACL terms vanish.
    change_only = criterion({"change": outputs["change"]}, mask)
    assert float(change_only["loss"]) == pytest.approx(float(terms["change"]), rel=1e-6)
