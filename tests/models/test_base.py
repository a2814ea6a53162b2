"""Shared building blocks (geochange.models.base): encoders, DiffMatch heads, the task tag.

The contract every model keeps is in test_models.py.
"""

from __future__ import annotations

import pytest
import torch

from geochange.losses import BatchBalancedContrastiveLoss, BCEDiceLoss, masked_cross_entropy
from geochange.models import build_model
from tests.models.helpers import NUM_CLASSES, SMALL


def test_tiny_and_non_resnet_encoder() -> None:
    # A timm-universal encoder, 13 bands and an image smaller than the output stride.
    model = build_model("siam_diff", backbone="tu-resnet18", in_channels=13).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 2, 13, 17, 45))
    assert outputs["change"].shape == (1, 1, 17, 45)


@pytest.mark.parametrize("name", ["fusion_unet", "siam_diff", "siam_conc"])
def test_diffmatch_components(name: str) -> None:
    model = build_model(
        name, num_classes=NUM_CLASSES, dual_head=True, aux_semantic=True, **SMALL
    ).train()
    x = torch.randn(2, 2, 3, 70, 90)
    outputs = model(x)
    assert outputs["change"].shape == (2, 1, 70, 90)
    assert outputs["change_generated"].shape == (2, 1, 70, 90)
    assert outputs["aux_semantic_pre"].shape == (2, NUM_CLASSES, 70, 90)
    assert outputs["aux_semantic_post"].shape == (2, NUM_CLASSES, 70, 90)
    distance = outputs["feature_distance"]
    assert distance.shape == (2, 1, 70, 90)
    assert (distance >= 0).all()
    # The two heads are distinct parameters fed by one shared decoder.
    assert not torch.equal(outputs["change"], outputs["change_generated"])
    mask = torch.randint(0, 2, (2, 70, 90))
    labels = torch.randint(0, NUM_CLASSES, (2, 70, 90))
    loss = (
        BatchBalancedContrastiveLoss()(distance, mask)
        + masked_cross_entropy(outputs["aux_semantic_pre"], labels)
        + BCEDiceLoss()(outputs["change_generated"], mask)
    )
    loss.backward()
    grads = [p.grad for p in model.aux_decoder_pre.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.generated_head[0].weight.grad is not None
    model.eval()
    with torch.no_grad():
        assert set(model(x)) == {"change", "change_generated"}


def test_task_attribute() -> None:
    assert build_model("semantic_change", **SMALL).task == "semantic"
    assert build_model("siam_conc", **SMALL).task == "binary"
