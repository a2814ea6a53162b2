"""TinyCD specifics: size, mixing, weights, training and scene prediction."""

from __future__ import annotations

from pathlib import Path

import rasterio
import torch

from geochange.models import TinyCD, build_model, fold_batch_norm
from geochange.models.tinycd import MixBlock
from tests.models.runs import fit_losses, predict_scene

PAPER = {"backbone": "timm-efficientnet-b4"}


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_backbone_is_tiny() -> None:
    model = build_model("tinycd", **PAPER)
    assert isinstance(model, TinyCD)
    # The early EfficientNet-B4 blocks only (down to 1/8): well under 1 M parameters.
    assert _parameters(model) < 400_000
    assert _parameters(model.encoder) < 300_000
    assert {k.split(".")[0] for k in model.state_dict()} == {"encoder", "mix", "up", "classifier"}
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 2, 3, 37, 45))
    assert out["change"].shape == (1, 1, 37, 45)


def test_mix_block_pairs_channels_of_the_two_dates() -> None:
    mix = MixBlock(4).eval()
    # One group per channel pair: output channel i sees channel i of both dates only.
    assert mix.conv.groups == 4 and mix.conv.weight.shape == (4, 2, 3, 3)
    pre, post = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    changed = post.clone()
    changed[:, 2] += 1.0
    with torch.no_grad():
        a, b = mix(pre, post), mix(pre, changed)
    assert torch.equal(a[:, [0, 1, 3]], b[:, [0, 1, 3]])
    assert not torch.equal(a[:, 2], b[:, 2])


def test_one_mamb_per_scale_and_any_band_count() -> None:
    model = build_model("tinycd", in_channels=13, encoder_depth=4)
    assert len(model.mix) == 5 and len(model.up) == 4  # input bands + 4 stages
    assert model.pad_multiple == 16
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 2, 13, 33, 50))
    assert out["change"].shape == (1, 1, 33, 50)


def test_weights_load_from_saved_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_model("tinycd", in_channels=4, **PAPER)
    path = tmp_path / "tinycd.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    loaded = build_model("tinycd", in_channels=4, weights=path, **PAPER).eval()
    x = torch.randn(1, 2, 4, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["change"], source.eval()(x)["change"])


def test_batchnorm_folds() -> None:
    model = build_model("tinycd", **PAPER)
    folded, count = fold_batch_norm(model, torch.randn(1, 2, 3, 64, 64))
    assert count > 10 and folded is not model


def test_trains_to_falling_loss_in_change_trainer(tmp_path: Path) -> None:
    # A tiny model takes a larger step than BIT's 3e-3 to fall as far in 20 steps.
    losses = fit_losses(tmp_path, "tinycd", lr=1e-2, **PAPER)
    assert len(losses) == 20
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses


def test_predicts_a_scene(tmp_path: Path) -> None:
    change = predict_scene(build_model("tinycd", **PAPER), tmp_path)
    with rasterio.open(change) as ds:
        assert (ds.height, ds.width) == (150, 203)
        assert set(ds.read(1).ravel().tolist()) <= {0, 1, 255}


def test_fixmatch_loss_in_the_semi_supervised_trainer() -> None:
    from tests.models.recipes import fixmatch_terms

    terms = fixmatch_terms("tinycd")
    assert {"sup", "unsup", "loss"} <= set(terms)
    assert torch.isfinite(terms["loss"])
