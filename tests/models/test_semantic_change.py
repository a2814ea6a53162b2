"""The ClearSCD-style semantic change network (geochange.models.semantic_change)."""

from __future__ import annotations

import torch

from geochange.models import build_model
from tests.models.helpers import NUM_CLASSES


def test_semantic_training_outputs() -> None:
    model = build_model(
        "semantic_change", in_channels=4, num_classes=NUM_CLASSES, projection_dim=24
    ).train()
    outputs = model(torch.randn(2, 2, 4, 66, 70))
    assert outputs["embedding_pre"].shape == (2, 24, 66, 70)
    assert outputs["embedding_post"].shape == (2, 24, 66, 70)
    assert outputs["semantic_features_pre"].shape == (2, 32, 66, 70)
    assert outputs["semantic_features_post"].shape == (2, 32, 66, 70)


def test_semantic_change_branch_is_in_posterior_space() -> None:
    # The CVAPS branch only sees |logits_pre - logits_post|: identical dates -> identical
    # change logits everywhere up to the effect of padding-free convs on a constant input.
    model = build_model("semantic_change", num_classes=NUM_CLASSES).eval()
    image = torch.randn(1, 1, 3, 64, 64)
    with torch.no_grad():
        outputs = model(torch.cat([image, image], dim=1))
    assert torch.equal(outputs["semantic_pre"], outputs["semantic_post"])
    zero_vector = torch.zeros(1, NUM_CLASSES, 64, 64)
    with torch.no_grad():
        expected = model.cvaps(zero_vector)
    torch.testing.assert_close(outputs["change"], expected)


def test_semantic_change_concat_fusion_and_stride() -> None:
    model = build_model(
        "semantic_change", num_classes=NUM_CLASSES, fusion="concat", cvaps_stride=4
    ).eval()
    assert model.cvaps[0][0].in_channels == 2 * NUM_CLASSES
    with torch.no_grad():
        outputs = model(torch.randn(1, 2, 3, 50, 70))
    assert outputs["change"].shape == (1, 1, 50, 70)
