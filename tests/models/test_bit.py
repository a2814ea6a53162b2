"""BIT specifics: tokenizer, transformer sizes, weights, training and scene prediction."""

from __future__ import annotations

from pathlib import Path

import rasterio
import torch

from geochange.models import BIT, build_model, fold_batch_norm
from tests.models.runs import fit_losses, predict_scene

SMALL = {"encoder_depth": 3, "decoder_layers": 2}


def test_tokens_and_their_attention() -> None:
    model = build_model("bit", num_tokens=6, **SMALL).eval()
    assert isinstance(model, BIT)
    features = torch.randn(2, 32, 9, 11)
    tokens, attention = model.tokenize(features)
    assert tokens.shape == (2, 6, 32)  # L tokens of C channels per date
    assert attention.shape == (2, 6, 9 * 11)  # one spatial attention map per token
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 6))
    # A token is the attention-weighted mean of the pixels' features.
    expected = attention[0, 2] @ features[0].flatten(1).T
    torch.testing.assert_close(tokens[0, 2], expected)
    assert model.token_position.shape == (1, 12, 32)  # both dates' tokens


def test_paper_defaults() -> None:
    model = build_model("bit")
    assert len(model.token_encoder) == 1 and len(model.token_decoder) == 8
    assert model.num_tokens == 4
    # resnet18 cut after layer3 (layer4 removed), dilated to stride 8.
    assert model.encoder.output_stride == 8
    assert not any(k.startswith("encoder.layer4.") for k in model.state_dict())
    prefixes = {k.split(".")[0] for k in model.state_dict()}
    assert prefixes == {
        "encoder", "reduce", "tokenizer", "token_position", "token_encoder", "token_decoder",
        "head",
    }  # fmt: skip
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 2, 3, 37, 45))
    assert out["change"].shape == (1, 1, 37, 45)


def test_identical_dates_reach_the_head_as_a_zero_difference() -> None:
    model = build_model("bit", **SMALL).eval()
    # Only the token positions tell the dates apart; without them, equal dates give |0|.
    with torch.no_grad():
        model.token_position.zero_()
    image = torch.randn(1, 1, 3, 32, 32)
    with torch.no_grad():
        change = model(torch.cat([image, image], dim=1))["change"]
        expected = model.head(torch.zeros(1, 32, 32, 32))
    torch.testing.assert_close(change, expected)


def test_weights_load_from_saved_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_model("bit", in_channels=4, **SMALL)
    path = tmp_path / "bit.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    loaded = build_model("bit", in_channels=4, weights=path, **SMALL).eval()
    x = torch.randn(1, 2, 4, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["change"], source.eval()(x)["change"])


def test_batchnorm_folds() -> None:
    model = build_model("bit", **SMALL)
    folded, count = fold_batch_norm(model, torch.randn(1, 2, 3, 64, 64))
    assert count > 0 and folded is not model


def test_trains_to_falling_loss_in_change_trainer(tmp_path: Path) -> None:
    losses = fit_losses(tmp_path, "bit", **SMALL)
    assert len(losses) == 20
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses


def test_predicts_a_scene(tmp_path: Path) -> None:
    change = predict_scene(build_model("bit", **SMALL), tmp_path)
    with rasterio.open(change) as ds:
        assert (ds.height, ds.width) == (150, 203)
        assert set(ds.read(1).ravel().tolist()) <= {0, 1, 255}


def test_fixmatch_loss_in_the_semi_supervised_trainer() -> None:
    from tests.models.recipes import fixmatch_terms

    terms = fixmatch_terms("bit", **SMALL)
    assert {"sup", "unsup", "loss"} <= set(terms)
    assert torch.isfinite(terms["loss"])
