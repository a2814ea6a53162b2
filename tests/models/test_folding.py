"""BatchNorm folding: which layers fold, equal outputs, and no silent change of results."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geochange.models import build_model, fold_batch_norm


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, as after training."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
    return model.eval()


def count(model: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("fusion_unet", {"backbone": "resnet18"}),
        ("siam_diff", {"backbone": "resnet18", "encoder_depth": 3}),
        ("semantic_change", {"num_classes": 4, "encoder_depth": 3}),
    ],
)
def test_folded_model_matches_and_original_is_untouched(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(build_model(name, in_channels=3, **kwargs))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 2, 3, 64, 64)
    folded, n = fold_batch_norm(model, x[:1])
    bn_before = count(model, nn.BatchNorm2d)
    assert n > 0
    assert count(folded, nn.BatchNorm2d) == bn_before - n
    # The caller's model keeps its layers and weights.
    assert count(model, nn.BatchNorm2d) == bn_before
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.inference_mode():
        reference, result = model(x), folded(x)
    assert set(reference) == set(result)
    for key in reference:
        torch.testing.assert_close(result[key], reference[key], rtol=1e-4, atol=1e-5)


def test_shared_siamese_encoder_folds_every_encoder_batchnorm() -> None:
    model = randomize_batchnorm(build_model("siam_diff", backbone="resnet18"))
    encoder_bns = count(model.encoder, nn.BatchNorm2d)  # type: ignore[arg-type]
    folded, _ = fold_batch_norm(model, torch.randn(1, 2, 3, 64, 64))
    # Each encoder conv runs once per date and feeds the same BatchNorm both times.
    assert encoder_bns > 0
    assert count(folded.encoder, nn.BatchNorm2d) == 0  # type: ignore[arg-type]


class PreNormReused(nn.Module):
    """The conv output is used both through the BatchNorm and directly (not foldable)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


class SharedConvTwoNorms(nn.Module):
    """One conv feeding a different BatchNorm on each call (per-date norms)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn_pre = nn.BatchNorm2d(4)
        self.bn_post = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 4, 1)
        self.head_bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.bn_pre(self.conv(x[:, 0]))
        b = self.bn_post(self.conv(x[:, 1]))
        return self.head_bn(self.head(a - b))


def test_reused_pre_norm_activation_falls_back_to_original(caplog) -> None:
    model = randomize_batchnorm(PreNormReused())
    folded, n = fold_batch_norm(model, torch.randn(1, 3, 16, 16))
    assert n == 0 and folded is model
    assert "unfolded model" in caplog.text


def test_conv_shared_by_two_norms_is_not_folded() -> None:
    model = randomize_batchnorm(SharedConvTwoNorms())
    x = torch.randn(2, 2, 3, 16, 16)
    folded, n = fold_batch_norm(model, x[:1])
    # Only the head pair folds; the shared conv keeps both per-date BatchNorms.
    assert n == 1
    assert isinstance(folded.bn_pre, nn.BatchNorm2d) and isinstance(folded.bn_post, nn.BatchNorm2d)
    assert isinstance(folded.head_bn, nn.Identity)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


def test_batch_statistics_norms_are_left_alone() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    folded, n = fold_batch_norm(model, torch.randn(2, 3, 8, 8))
    assert n == 0 and folded is model
