"""Encoders cut to the stages a model uses (geochange/models/truncate.py)."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch

from geochange.errors import ConfigurationError
from geochange.models.truncate import make_truncated_encoder


def test_unused_stages_are_removed_and_outputs_kept() -> None:
    torch.manual_seed(0)
    full = smp.encoders.get_encoder("resnet18", in_channels=4, depth=3)
    cut = make_truncated_encoder("resnet18", 4, 3)
    assert sum(p.numel() for p in cut.parameters()) < 0.1 * sum(
        p.numel() for p in full.parameters()
    )
    assert not any(k.startswith(("layer3.", "layer4.")) for k in cut.state_dict())
    # The kept keys are a subset of the full encoder's: its weights load into the cut one.
    cut.load_state_dict({k: full.state_dict()[k] for k in cut.state_dict()})
    x = torch.randn(1, 4, 64, 64)
    full.eval(), cut.eval()
    with torch.no_grad():
        for a, b in zip(full(x), cut(x), strict=True):
            assert torch.equal(a, b)


def test_dilated_stages_keep_the_stride() -> None:
    cut = make_truncated_encoder("resnet18", 3, 4, output_stride=8)
    assert cut.output_stride == 8
    with torch.no_grad():
        assert cut(torch.randn(1, 3, 64, 64))[-1].shape[-2:] == (8, 8)


def test_unknown_backbone_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        make_truncated_encoder("no-such-encoder", 3, 3)
