"""The model contract, checked for every model in the registry (``list_models()``).

A model registered in ``geochange.models`` is picked up here without a new test: it must take
``[B, 2, C, H, W]`` with any band count and odd sizes, return ``change`` logits ``[B, 1, H, W]``
(and ``semantic_*`` logits for semantic models), train, pass gradients to every parameter, be
deterministic in eval mode and survive a rebuild from its config plus its state dict.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geochange.losses import BCEDiceLoss, SCDMultitaskLoss
from geochange.models import SEMANTIC_MODELS, build_model, list_models

#: Collected before any test registers its own models, so these are the library's models.
MODELS = list_models()
NUM_CLASSES = 5
# A shallow resnet18 (3 stages) keeps training-style tests fast; contract tests use defaults.
SMALL = {"encoder_depth": 3, "decoder_channels": (64, 32, 16)}
#: The small-config hook: models whose arguments differ from the UNet models' say here how
#: they are built small (the same role as ``SMALL``).
SMALL_CONFIGS: dict[str, dict[str, object]] = {
    "changeformer": {"encoder_depth": 3, "embed_dim": 64, "head_channels": 32},
    "snunet": {"encoder_depth": 3, "width": 16},
    "bit": {"encoder_depth": 3, "decoder_layers": 2},
}


def _small(name: str) -> dict[str, object]:
    return dict(SMALL_CONFIGS.get(name, SMALL))


def _build(name: str, **kwargs: object) -> nn.Module:
    if name in SEMANTIC_MODELS:
        kwargs.setdefault("num_classes", NUM_CLASSES)
    return build_model(name, **kwargs)  # type: ignore[arg-type]


def _synthetic_batch(bands: int = 3, size: int = 64) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    pre = torch.rand(2, bands, size, size, generator=generator)
    post = pre.clone()
    mask = torch.zeros(2, size, size, dtype=torch.long)
    post[:, :, 16:40, 20:44] += 1.5  # a bright new object
    mask[:, 16:40, 20:44] = 1
    mask[:, :4] = 255  # an unlabeled strip
    semantic_pre = torch.zeros(2, size, size, dtype=torch.long)
    semantic_post = semantic_pre.clone()
    semantic_post[:, 16:40, 20:44] = 2
    return {
        "image": torch.stack([pre, post], dim=1),
        "mask": mask,
        "mask_pre": semantic_pre,
        "mask_post": semantic_post,
    }


def _loss(
    name: str, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
) -> torch.Tensor:
    if name in SEMANTIC_MODELS:
        criterion = SCDMultitaskLoss(NUM_CLASSES, sacl_weight=0.0)
        return criterion(outputs, batch["mask"], batch["mask_pre"], batch["mask_post"])["loss"]
    return BCEDiceLoss()(outputs["change"], batch["mask"])


@pytest.mark.parametrize("name", MODELS)
class TestRegisteredModel:
    """The contract every registered model keeps (segmentation-models-pytorch style)."""

    @pytest.mark.parametrize("bands", [3, 4, 13])
    def test_output_contract_odd_size(self, name: str, bands: int) -> None:
        torch.manual_seed(0)
        model = _build(name, in_channels=bands).eval()
        x = torch.randn(1, 2, bands, 250, 310)
        with torch.no_grad():
            outputs = model(x)
        assert outputs["change"].shape == (1, 1, 250, 310)
        assert outputs["change"].dtype == torch.float32
        assert torch.isfinite(outputs["change"]).all()
        if name in SEMANTIC_MODELS:
            for key in ("semantic_pre", "semantic_post"):
                assert outputs[key].shape == (1, NUM_CLASSES, 250, 310)
            assert "embedding_pre" not in outputs  # training-only output
        else:
            assert set(outputs) == {"change"}

    def test_gradients_reach_every_parameter(self, name: str) -> None:
        torch.manual_seed(0)
        model = _build(name).train()
        # Every output (training-only ones included), so no head escapes the check.
        outputs = model(_synthetic_batch()["image"])
        sum(value.float().mean() for value in outputs.values()).backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, missing
        for param_name, param in model.named_parameters():
            assert torch.isfinite(param.grad).all(), param_name  # type: ignore[arg-type]

    def test_overfit_reduces_loss(self, name: str) -> None:
        torch.manual_seed(0)
        model = _build(name, **_small(name)).train()
        batch = _synthetic_batch()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        losses = []
        for _ in range(6):
            loss = _loss(name, model(batch["image"]), batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        assert losses[-1] < 0.8 * losses[0], losses

    def test_frozen_backbone_stays_frozen(self, name: str) -> None:
        torch.manual_seed(0)
        model = _build(name, freeze_backbone=True, **_small(name))
        model.train()
        assert not model.encoder.training  # BatchNorm statistics stay fixed
        assert all(not p.requires_grad for p in model.encoder.parameters())
        encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
        others_before = {
            k: v.clone() for k, v in model.state_dict().items() if not k.startswith("encoder.")
        }
        batch = _synthetic_batch()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        for _ in range(2):
            loss = _loss(name, model(batch["image"]), batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        for key, value in model.encoder.state_dict().items():
            assert torch.equal(value, encoder_before[key]), key
        after = model.state_dict()
        assert any(not torch.equal(after[k], v) for k, v in others_before.items())
        assert model.config["freeze_backbone"] is True

    def test_deterministic_under_seed(self, name: str) -> None:
        x = torch.randn(1, 2, 3, 64, 96)
        results = []
        for _ in range(2):
            torch.manual_seed(123)
            model = _build(name, **_small(name)).eval()
            with torch.no_grad():
                results.append((model.state_dict(), model(x)["change"]))
        (state_a, out_a), (state_b, out_b) = results
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
        assert torch.equal(out_a, out_b)

    def test_eval_forward_is_deterministic(self, name: str) -> None:
        torch.manual_seed(0)
        model = _build(name, **_small(name)).eval()
        x = torch.randn(2, 2, 3, 48, 40)
        with torch.no_grad():
            first, second = model(x), model(x)
        assert set(first) == set(second)
        for key in first:
            assert torch.equal(first[key], second[key]), key

    def test_rebuild_from_config(self, name: str) -> None:
        model = _build(name, in_channels=4, encoder_depth=4).eval()
        rebuilt = build_model(model.model_name, **model.config)
        rebuilt.load_state_dict(model.state_dict())  # strict: identical architecture
        assert model.config["in_channels"] == 4
        x = torch.randn(1, 2, 4, 40, 56)
        with torch.no_grad():
            expected, actual = model(x), rebuilt.eval()(x)
        assert set(expected) == set(actual)
        for key in expected:
            assert torch.equal(expected[key], actual[key]), key
