"""ChangeFormer: MiT scales, difference modules, key layout, weights, training, prediction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from geochange.errors import ConfigurationError
from geochange.models import ChangeFormer, build_model, fold_batch_norm
from geochange.models.changeformer import DifferenceModule
from tests.models.recipes import fit_losses, fixmatch_terms, predict_pair

SMALL = {"encoder_depth": 3, "embed_dim": 64, "head_channels": 32}


def test_default_is_mit_b0_with_four_scales() -> None:
    model = build_model("changeformer")
    assert isinstance(model, ChangeFormer)
    assert type(model.encoder).__name__ == "MixVisionTransformerEncoder"
    assert model.config["backbone"] is None  # the model's own default, rebuilt as such
    widths = [m[0].in_channels // 2 for m in model.differences]  # type: ignore[index]
    assert widths == [32, 64, 160, 256]  # mit_b0 at strides 4, 8, 16, 32
    assert [m.out_channels for m in model.projections] == [256] * 4  # type: ignore[union-attr]
    assert model.pad_multiple == 32


def test_difference_module_is_conv_relu_bn_conv_relu() -> None:
    kinds = [type(layer) for layer in DifferenceModule(8, 4)]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.Conv2d, nn.ReLU]


def test_state_dict_prefixes_match_the_docs() -> None:
    model = build_model("changeformer", **SMALL)
    prefixes = {key.split(".")[0] for key in model.state_dict()}
    assert prefixes == {
        "encoder", "differences", "projections", "fuse", "upsample", "refine", "classifier"
    }  # fmt: skip


def test_cnn_backbone_and_band_count() -> None:
    model = build_model("changeformer", backbone="resnet18", in_channels=5, encoder_depth=4).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 2, 5, 45, 70))["change"]
    assert out.shape == (1, 1, 45, 70)


def test_invalid_arguments() -> None:
    with pytest.raises(ConfigurationError, match="encoder_depth"):
        build_model("changeformer", encoder_depth=2)
    with pytest.raises(ConfigurationError, match="cannot build encoder"):
        build_model("changeformer", backbone="mit_b9")


def test_weights_load_from_saved_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_model("changeformer", in_channels=4, **SMALL).eval()
    path = tmp_path / "changeformer.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    loaded = build_model("changeformer", in_channels=4, weights=path, **SMALL).eval()
    x = torch.randn(1, 2, 4, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["change"], source(x)["change"])


def test_batchnorm_folding_keeps_outputs() -> None:
    torch.manual_seed(0)
    model = build_model("changeformer", **SMALL).eval()
    with torch.no_grad():  # non-trivial running statistics
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 2, 3, 64, 64)
    folded, count = fold_batch_norm(model, x)
    # fuse (1) + refine (2); the difference modules' BatchNorms follow a ReLU and stay.
    assert count == 3
    with torch.no_grad():
        torch.testing.assert_close(folded(x)["change"], model(x)["change"], rtol=1e-4, atol=1e-4)


def test_trains_to_falling_loss(tmp_path: Path) -> None:
    losses = fit_losses("changeformer", tmp_path, **SMALL)
    assert len(losses) == 20
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5]), losses


def test_predicts_a_scene(tmp_path: Path) -> None:
    torch.manual_seed(0)
    result, _ = predict_pair(build_model("changeformer", **SMALL), tmp_path)
    assert result.change is not None and result.change.name == "change.tif"


def test_fixmatch_loss_in_the_semi_supervised_trainer() -> None:
    terms = fixmatch_terms("changeformer", **SMALL)
    assert {"sup", "unsup", "loss"} <= set(terms)
    assert torch.isfinite(terms["loss"])
