"""The model registry (geochange.models.registry): built-ins, build errors, user models.

Model-specific tests mirror their modules (test_base, test_siamese, test_semantic_change); the
contract every model keeps is in test_models.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geochange.errors import ConfigurationError
from geochange.models import build_model, list_models, register_model

BUILTIN = ["fusion_unet", "siam_diff", "siam_conc", "semantic_change"]


def test_builtin_models_registered() -> None:
    assert set(BUILTIN) <= set(list_models())


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
