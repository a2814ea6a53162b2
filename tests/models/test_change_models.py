"""Model-specific and registry tests; the contract every model keeps is in test_models.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geochange.errors import ConfigurationError
from geochange.losses import (
    BatchBalancedContrastiveLoss,
    BCEDiceLoss,
    masked_cross_entropy,
)
from geochange.models import (
    build_model,
    list_models,
    register_model,
)

BUILTIN = ["fusion_unet", "siam_diff", "siam_conc", "semantic_change"]
NUM_CLASSES = 5
# A shallow resnet18 (3 stages) keeps training-style tests fast.
SMALL = {"encoder_depth": 3, "decoder_channels": (64, 32, 16)}



def test_builtin_models_registered() -> None:
    assert set(BUILTIN) <= set(list_models())




def test_tiny_and_non_resnet_encoder() -> None:
    # A timm-universal encoder, 13 bands and an image smaller than the output stride.
    model = build_model("siam_diff", backbone="tu-resnet18", in_channels=13).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 2, 13, 17, 45))
    assert outputs["change"].shape == (1, 1, 17, 45)


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


def test_siam_diff_is_symmetric_in_dates() -> None:
    model = build_model("siam_diff").eval()
    x = torch.randn(1, 2, 3, 64, 64)
    with torch.no_grad():
        forward = model(x)["change"]
        backward = model(x.flip(1))["change"]
    # Only level 0 (ignored by the decoder) differs, so swapping dates changes nothing.
    torch.testing.assert_close(forward, backward)














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


def test_fusion_unet_caps_fusion_width() -> None:
    model = build_model("fusion_unet", backbone="resnet18", fusion_max_channels=128)
    widths = [stack[0][0].out_channels for stack in model.fusion]
    assert widths == [64, 64, 128, 128, 128]


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown model 'nope'"):
        build_model("nope")
    with pytest.raises(ConfigurationError, match="not_an_encoder"):
        build_model("fusion_unet", backbone="not_an_encoder")
    with pytest.raises(ConfigurationError, match="num_classes"):
        build_model("siam_diff", aux_semantic=True)
    with pytest.raises(ConfigurationError, match="invalid arguments"):
        build_model("siam_diff", no_such_option=1)
    model = build_model("siam_conc", in_channels=4).eval()
    with pytest.raises(ConfigurationError, match="4 bands but the input has 3"):
        model(torch.randn(1, 2, 3, 32, 32))
    with pytest.raises(ConfigurationError, match="two dates"):
        model(torch.randn(1, 4, 32, 32))


class _UserModel(nn.Module):
    def __init__(
        self, backbone: str, in_channels: int, num_classes: int | None, scale: float = 1.0
    ):
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(2 * in_channels, 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"change": self.scale * self.head(x.flatten(1, 2))}


def test_register_user_model() -> None:
    register_model("test_user_model", _UserModel, overwrite=True)
    model = build_model("test_user_model", in_channels=4, scale=2.0)
    assert model.scale == 2.0
    assert model.config == {
        "backbone": "resnet18",
        "in_channels": 4,
        "num_classes": None,
        "freeze_backbone": False,
        "scale": 2.0,
    }
    assert model(torch.randn(1, 2, 4, 8, 8))["change"].shape == (1, 1, 8, 8)
    with pytest.raises(ConfigurationError, match="already registered"):
        register_model("test_user_model", lambda **kw: nn.Identity())
    with pytest.raises(ConfigurationError, match="no 'encoder'"):
        build_model("test_user_model", freeze_backbone=True)

    @register_model("test_user_model_decorated", overwrite=True)
    class Decorated(_UserModel):
        pass

    assert isinstance(build_model("test_user_model_decorated"), Decorated)


def test_task_attribute() -> None:
    assert build_model("semantic_change", **SMALL).task == "semantic"
    assert build_model("siam_conc", **SMALL).task == "binary"
