"""Batch augmentation and normalization (geochange.transforms.augmentation)."""

from __future__ import annotations

import torch

from geochange.transforms import ChangeAugmentation, NormalizeChange


def _batch(b: int = 6, size: int = 32) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    pre = torch.randint(0, 256, (b, 3, size, size), generator=gen).float()
    mask = (pre[:, 0] > 127.5).long()
    mask[:, :4] = 255  # ignored rows must stay ignored, wherever they move
    return {
        "image": torch.stack([pre, pre.clone()], dim=1),
        "mask": mask,
        "mask_pre": (pre[:, 1] > 99.5).long(),
        "mask_post": (pre[:, 2] > 49.5).long() + 2,
        "bounds": torch.arange(b * 9, dtype=torch.float64).view(b, 9),
    }


def test_geometry_is_shared_by_dates_and_masks() -> None:
    torch.manual_seed(1)
    aug = ChangeAugmentation(scale=None, brightness=0, contrast=0, saturation=0, hue=0)
    batch = _batch()
    out = aug(batch)
    assert out["image"].shape == batch["image"].shape
    assert torch.equal(out["image"][:, 0], out["image"][:, 1])
    # Masks moved exactly like the image: recompute them from the transformed image.
    valid = out["mask"] != 255
    assert torch.equal(out["mask"][valid], (out["image"][:, 0, 0] > 127.5).long()[valid])
    assert int((out["mask"] == 255).sum()) == int((batch["mask"] == 255).sum())
    assert torch.equal(out["mask_post"], (out["image"][:, 0, 2] > 49.5).long() + 2)
    assert out["mask"].dtype == torch.long
    # Something actually moved in some sample, and the input is untouched.
    assert not torch.equal(out["image"], batch["image"])
    assert torch.equal(batch["image"][:, 0], batch["image"][:, 1])
    assert torch.equal(out["bounds"], batch["bounds"])


def test_scale_crop_keeps_labels_binary() -> None:
    torch.manual_seed(2)
    aug = ChangeAugmentation(scale=(0.5, 0.8), brightness=0, contrast=0, saturation=0, hue=0)
    out = aug(_batch())
    assert out["image"].shape == (6, 2, 3, 32, 32)
    assert set(out["mask"].unique().tolist()) <= {0, 1, 255}
    assert set(out["mask_post"].unique().tolist()) <= {2, 3}


def test_photometric_jitter_is_independent_per_date() -> None:
    torch.manual_seed(3)
    aug = ChangeAugmentation(
        flip=False, rotate90=False, scale=None, brightness=0.3, contrast=0.3, photometric_p=1.0
    )
    batch = _batch()
    out = aug(batch)
    assert torch.equal(out["mask"], batch["mask"])
    diff = (out["image"][:, 0] - out["image"][:, 1]).abs().mean(dim=(1, 2, 3))
    assert (diff > 1.0).sum() >= 4  # dates jittered differently in most samples
    assert out["image"].min() >= 0 and out["image"].max() <= 255


def test_photometric_on_normalized_multiband() -> None:
    torch.manual_seed(4)
    aug = ChangeAugmentation(value_range=None, photometric_p=1.0, scale=None)
    batch = {"image": torch.randn(4, 2, 5, 16, 16), "mask": torch.zeros(4, 16, 16).long()}
    out = aug(batch)
    assert out["image"].shape == (4, 2, 5, 16, 16)
    assert out["image"].min() < 0  # not clipped to [0, 1]


def test_date_swap() -> None:
    aug = ChangeAugmentation(
        flip=False, rotate90=False, scale=None, brightness=0, contrast=0, saturation=0, hue=0,
        date_swap=1.0,
    )  # fmt: skip
    batch = _batch()
    batch["image"][:, 1] += 1
    out = aug(batch)
    assert torch.equal(out["image"][:, 0], batch["image"][:, 1])
    assert torch.equal(out["image"][:, 1], batch["image"][:, 0])
    assert torch.equal(out["mask_pre"], batch["mask_post"])
    assert torch.equal(out["mask_post"], batch["mask_pre"])
    assert torch.equal(out["mask"], batch["mask"])


def test_normalize() -> None:
    norm = NormalizeChange([10.0, 20.0], [2.0, 0.0])
    image = torch.tensor([12.0, 25.0]).view(1, 1, 2, 1, 1).expand(3, 2, 2, 4, 4)
    out = norm({"image": image, "mask": torch.zeros(3, 4, 4)})
    assert torch.allclose(out["image"][:, :, 0], torch.ones(1))
    assert torch.allclose(out["image"][:, :, 1], torch.full((1,), 5.0))  # std 0 -> 1


def test_video_augmentation_geometry_per_sample_photometry_per_date() -> None:
    torch.manual_seed(5)
    batch = _batch(8)
    # The dates are the frames of kornia's VideoSequential: one geometry for both.
    geometry_only = ChangeAugmentation(scale=(0.6, 1.0), brightness=0, contrast=0,
                                       saturation=0, hue=0)  # fmt: skip
    out = geometry_only(batch)
    assert torch.equal(out["image"][:, 0], out["image"][:, 1])  # identical geometry per date
    jitter = {"flip": False, "rotate90": False, "scale": None, "brightness": 0.3,
              "contrast": 0.3, "photometric_p": 1.0}  # fmt: skip
    per_date = ChangeAugmentation(**jitter)(batch)["image"]
    shared = ChangeAugmentation(**jitter, per_date_photometry=False)(batch)["image"]
    differ = (per_date[:, 0] - per_date[:, 1]).abs().mean(dim=(1, 2, 3))
    assert (differ > 1.0).all()  # each date got its own jitter
    assert torch.allclose(shared[:, 0], shared[:, 1])  # asked for one jitter per sample
    assert not torch.allclose(shared[:, 0], batch["image"][:, 0])


def test_torchgeo_mask_layout_and_pipelines_built_once() -> None:
    torch.manual_seed(6)
    aug = ChangeAugmentation(scale=(0.5, 1.0), brightness=0, contrast=0, saturation=0, hue=0)
    batch = _batch()
    batch["mask"] = batch["mask"][:, None]  # TorchGeo's [B, 1, H, W]
    out = aug(batch)
    assert out["mask"].shape == (6, 1, 32, 32) and out["mask_pre"].shape == (6, 32, 32)
    assert set(out["mask"].unique().tolist()) <= {0, 1, 255}
    pipelines = dict(aug._pipelines)
    aug(batch)
    assert len(pipelines) == 1 and all(aug._pipelines[k] is v for k, v in pipelines.items())


def _squares(b: int = 8, size: int = 48) -> dict[str, torch.Tensor]:
    """Both dates the same pattern of 8-pixel squares; the mask is the pattern."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    pattern = (((yy // 8) + (xx // 8)) % 2).float()
    pre = (pattern * 200 + 20).expand(b, 3, size, size).clone()
    return {
        "image": torch.stack([pre, pre.clone()], dim=1),
        "mask": pattern.long().expand(b, -1, -1),
    }


def test_per_date_shift_moves_dates_independently_and_the_mask_follows_pre() -> None:
    torch.manual_seed(5)
    aug = ChangeAugmentation(
        flip=False, rotate90=False, scale=None, brightness=0, contrast=0, saturation=0, hue=0,
        per_date_shift=3.0,
    )  # fmt: skip
    batch = _squares()
    out = aug(batch)
    mask, pre, post = out["mask"], out["image"][:, 0, 0], out["image"][:, 1, 0]
    valid = mask != 255
    assert (~valid).any() and set(mask[valid].unique().tolist()) <= {0, 1}
    # The mask agrees with the pre date (up to bilinear edge pixels), not with the post date.
    pre_agree = ((pre > 120).long() == mask)[valid].float().mean()
    post_agree = ((post > 120).long() == mask)[valid].float().mean()
    assert pre_agree > 0.93
    assert post_agree < pre_agree - 0.05
    # Each date moved by at most 3 px per axis: the ignored strip is at most 3 px wide.
    assert ((~valid).sum(dim=(1, 2)) <= 48 * 3 * 2 + 9).all()
    assert not torch.equal(pre, post)
    assert torch.equal(batch["image"][:, 0], batch["image"][:, 1])  # input untouched


def test_per_date_shift_is_off_by_default_and_validated() -> None:
    import pytest

    from geochange.errors import ConfigurationError

    torch.manual_seed(6)
    batch = _squares()
    out = ChangeAugmentation(flip=False, rotate90=False, scale=None, photometric_p=0)(batch)
    assert torch.equal(out["image"], batch["image"]) and torch.equal(out["mask"], batch["mask"])
    with pytest.raises(ConfigurationError, match="per_date_shift"):
        ChangeAugmentation(per_date_shift=-1)


def _radiometric_only(**kwargs: float | bool) -> ChangeAugmentation:
    """No geometry and no ColorJitter: only the per-band radiometric jitter."""
    return ChangeAugmentation(
        flip=False, rotate90=False, scale=None, brightness=0, contrast=0, saturation=0, hue=0,
        photometric_p=1.0, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def _flat_batch(b: int = 4, size: int = 16) -> dict[str, torch.Tensor]:
    """Every band of both dates a ramp of values from 40 to 200 (so a gain is exact)."""
    ramp = torch.linspace(40, 200, size * size).view(size, size)
    pre = ramp.expand(b, 3, size, size).clone()
    return {"image": torch.stack([pre, pre.clone()], dim=1), "mask": torch.zeros(b, size, size)}


def test_band_gain_is_drawn_per_date_and_per_band_within_its_range() -> None:
    torch.manual_seed(0)
    batch = _flat_batch()
    out = _radiometric_only(band_gain=0.15)(batch)["image"]
    ratio = out / batch["image"]
    # One gain per (sample, date, band): constant over the pixels, inside [0.85, 1.15].
    gains = ratio.mean(dim=(-2, -1))
    assert torch.allclose(ratio, gains[..., None, None], atol=1e-5)
    assert gains.min() >= 0.85 - 1e-6 and gains.max() <= 1.15 + 1e-6
    assert gains.std(dim=2).min() > 0  # bands differ
    assert not torch.allclose(gains[:, 0], gains[:, 1])  # dates differ


def test_gamma_and_offset_per_band() -> None:
    torch.manual_seed(1)
    batch = _flat_batch()
    x = batch["image"] / 255
    out = _radiometric_only(gamma=0.2)(batch)["image"] / 255
    # out = x ** g for one g per (sample, date, band) in [exp(-0.2), exp(0.2)].
    g = (out.log() / x.log()).mean(dim=(-2, -1))
    assert torch.allclose(out, x ** g[..., None, None], atol=1e-4)
    assert g.min() >= torch.exp(torch.tensor(-0.2)) - 1e-4
    assert g.max() <= torch.exp(torch.tensor(0.2)) + 1e-4
    assert g.std() > 0.01
    shifted = _radiometric_only(band_offset=12 / 255)(batch)["image"] - batch["image"]
    offsets = shifted.mean(dim=(-2, -1))
    assert torch.allclose(shifted, offsets[..., None, None], atol=1e-3)
    assert offsets.abs().max() <= 12 + 1e-3 and offsets.std(dim=2).min() > 0


def test_haze_brightens_smoothly_towards_the_airlight() -> None:
    torch.manual_seed(2)
    batch = _flat_batch(b=16, size=32)
    x = batch["image"] / 255
    out = _radiometric_only(haze=0.25)(batch)["image"] / 255
    # Haze is a blend towards an airlight >= 0.8: dark pixels get brighter, by at most 25 %
    # of the distance to the airlight, and the fraction varies smoothly over the patch.
    dark = x < 0.5
    assert (out[dark] >= x[dark] - 1e-6).all()
    fraction = (out - x) / (1.0 - x)  # a lower bound on the blend fraction (airlight <= 1)
    assert fraction.max() <= 0.25 + 1e-4 and fraction.max() > 0.05
    step = (fraction[..., 1:, :] - fraction[..., :-1, :]).abs().max()
    assert step < 0.05  # smooth: no jumps between neighbouring pixels


def test_radiometric_preset_is_applied_per_date_and_can_be_shared() -> None:
    torch.manual_seed(3)
    batch = _flat_batch()
    aug = ChangeAugmentation.radiometric(flip=False, rotate90=False, scale=None)
    assert (aug.band_gain, aug.gamma, aug.haze) == (0.15, 0.2, 0.25)
    out = aug(batch)["image"]
    assert not torch.allclose(out[:, 0], out[:, 1])
    shared = _radiometric_only(band_gain=0.15, gamma=0.2, per_date_photometry=False)(batch)
    assert torch.allclose(shared["image"][:, 0], shared["image"][:, 1])
    # Off by default: the default augmentation draws nothing new.
    default = ChangeAugmentation()
    assert (default.band_gain, default.band_offset, default.gamma, default.haze) == (0,) * 4


def test_per_date_rotation_and_scale_keep_the_mask_on_the_pre_date() -> None:
    torch.manual_seed(4)
    aug = ChangeAugmentation(
        flip=False, rotate90=False, scale=None, photometric_p=0,
        per_date_rotation=3.0, per_date_scale=0.03,
    )  # fmt: skip
    batch = _squares()
    out = aug(batch)
    mask, pre, post = out["mask"], out["image"][:, 0, 0], out["image"][:, 1, 0]
    valid = mask != 255
    assert (~valid).any()  # rotated corners came from outside
    pre_agree = ((pre > 120).long() == mask)[valid].float().mean()
    post_agree = ((post > 120).long() == mask)[valid].float().mean()
    assert pre_agree > 0.9 and post_agree < pre_agree - 0.03
    assert torch.equal(batch["image"][:, 0], batch["image"][:, 1])  # input untouched


def test_shift_only_warp_is_the_translation_it_draws() -> None:
    from kornia.geometry.transform import translate

    batch = _squares(b=3)
    torch.manual_seed(7)
    out = ChangeAugmentation(
        flip=False, rotate90=False, scale=None, photometric_p=0, per_date_shift=2.5
    )(batch)
    torch.manual_seed(7)
    shift = (torch.rand(3, 2, 2) * 2 - 1) * 2.5
    for t in range(2):
        expected = translate(batch["image"][:, t], shift[:, t], mode="bilinear",
                             padding_mode="border", align_corners=True)  # fmt: skip
        assert torch.allclose(out["image"][:, t], expected, atol=1e-4)


def test_radiometric_and_warp_arguments_are_validated() -> None:
    import pytest

    from geochange.errors import ConfigurationError

    for kwargs in ({"band_gain": -0.1}, {"gamma": -1}, {"per_date_rotation": -2},
                   {"per_date_scale": 1.5}, {"haze": 2.0}):  # fmt: skip
        with pytest.raises(ConfigurationError):
            ChangeAugmentation(**kwargs)  # type: ignore[arg-type]


def test_robust_is_radiometric_with_the_per_date_warp() -> None:
    robust = ChangeAugmentation.robust(per_date_shift=3.0)
    assert (robust.band_gain, robust.gamma, robust.haze) == (0.15, 0.2, 0.25)
    assert (robust.per_date_shift, robust.per_date_rotation, robust.per_date_scale) == (
        3.0, 1.0, 0.02,
    )  # fmt: skip
