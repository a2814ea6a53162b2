"""Siamese models (geochange.models.siamese): FC-Siam-diff symmetry, FusionUNet fusion width."""

from __future__ import annotations

import torch

from geochange.models import build_model


def test_siam_diff_is_symmetric_in_dates() -> None:
    model = build_model("siam_diff").eval()
    x = torch.randn(1, 2, 3, 64, 64)
    with torch.no_grad():
        forward = model(x)["change"]
        backward = model(x.flip(1))["change"]
    # Only level 0 (ignored by the decoder) differs, so swapping dates changes nothing.
    torch.testing.assert_close(forward, backward)


def test_fusion_unet_caps_fusion_width() -> None:
    model = build_model("fusion_unet", backbone="resnet18", fusion_max_channels=128)
    widths = [stack[0][0].out_channels for stack in model.fusion]
    assert widths == [64, 64, 128, 128, 128]
