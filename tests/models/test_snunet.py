"""SNUNet-CD: nested node grid, dense inputs, ECAM, key layout, weights, training, prediction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from geochange.errors import ConfigurationError
from geochange.models import SNUNet, build_model, fold_batch_norm
from geochange.models.snunet import EnsembleChannelAttention
from tests.models.recipes import fit_losses, fixmatch_terms, predict_pair

SMALL = {"encoder_depth": 3, "width": 16}


def test_nested_node_grid_of_the_paper() -> None:
    model = build_model("snunet")
    assert isinstance(model, SNUNet)
    assert model.node_count == 10  # X^{i,j}, j >= 1, i + j <= 4
    assert model.encoder.out_channels == [32, 64, 128, 256, 512]
    assert model.pad_multiple == 16
    # X^{0,4} sees both dates' X^{0,0}, X^{0,1..3} and the upsampled X^{1,3}: 5 * 32 + 64.
    first = model.nodes["x0_4"][0][0]  # type: ignore[index]
    assert first.in_channels == 5 * 32 + 64
    assert model.nodes["x3_1"][0][0].in_channels == 2 * 256 + 512  # type: ignore[index]
    assert model.classifier.in_channels == 4 * 32
    assert build_model("snunet", encoder_depth=3).node_count == 3  # type: ignore[union-attr]


def test_ecam_weights_the_ensemble() -> None:
    torch.manual_seed(0)
    ecam = EnsembleChannelAttention(channels=8, outputs=4, hidden=2)
    features = [torch.randn(2, 8, 6, 5) for _ in range(4)]
    out = ecam(features)
    assert out.shape == (2, 32, 6, 5)
    inter = ecam.inter(torch.cat(features, 1))
    intra = ecam.intra(sum(features)).repeat(1, 4, 1, 1)
    assert inter.shape == (2, 32, 1, 1) and ((inter > 0) & (inter < 1)).all()
    torch.testing.assert_close(out, inter * (torch.cat(features, 1) + intra))


def test_state_dict_prefixes_match_the_docs() -> None:
    keys = build_model("snunet", **SMALL).state_dict()
    assert {key.split(".")[0] for key in keys} == {"encoder", "nodes", "ecam", "classifier"}
    assert {key.split(".")[1] for key in keys if key.startswith("nodes.")} == {
        "x0_1", "x1_1", "x0_2"
    }  # fmt: skip
    assert any(key.startswith("ecam.intra.") for key in keys)
    assert any(key.startswith("ecam.inter.") for key in keys)


def test_backbone_is_validated() -> None:
    assert isinstance(build_model("snunet", backbone="snunet", **SMALL), SNUNet)
    with pytest.raises(ConfigurationError, match="own VGG-style encoder"):
        build_model("snunet", backbone="resnet18")
    with pytest.raises(ConfigurationError, match="no smp pretrained weights"):
        build_model("snunet", weights="imagenet")
    with pytest.raises(ConfigurationError, match="encoder_depth"):
        build_model("snunet", encoder_depth=6)


def test_weights_load_from_saved_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_model("snunet", in_channels=4, **SMALL).eval()
    path = tmp_path / "snunet.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}, path)
    torch.manual_seed(1)
    loaded = build_model("snunet", in_channels=4, weights=path, **SMALL).eval()
    x = torch.randn(1, 2, 4, 37, 41)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["change"], source(x)["change"])


def test_batchnorm_folding_folds_every_block() -> None:
    torch.manual_seed(0)
    model = build_model("snunet", **SMALL).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 2, 3, 32, 32)
    folded, count = fold_batch_norm(model, x)
    assert count == 2 * (3 + 3)  # two conv-BN per encoder level and per decoder node
    with torch.no_grad():
        torch.testing.assert_close(folded(x)["change"], model(x)["change"], rtol=1e-4, atol=1e-4)


def test_trains_to_falling_loss(tmp_path: Path) -> None:
    losses = fit_losses("snunet", tmp_path, **SMALL)
    assert len(losses) == 20
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5]), losses


def test_predicts_a_scene(tmp_path: Path) -> None:
    torch.manual_seed(0)
    result, _ = predict_pair(build_model("snunet", **SMALL), tmp_path)
    assert result.change is not None and result.change.name == "change.tif"


def test_fixmatch_loss_in_the_semi_supervised_trainer() -> None:
    terms = fixmatch_terms("snunet", **SMALL)
    assert {"sup", "unsup", "loss"} <= set(terms)
    assert torch.isfinite(terms["loss"])
