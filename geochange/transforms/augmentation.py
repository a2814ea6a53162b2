"""Batch augmentation for bi-temporal change detection, on the device, with kornia.

Batches are dicts in the project format (``image`` ``[B, 2, C, H, W]``, ``mask`` ``[B, H, W]``
or TorchGeo's ``[B, 1, H, W]``, optional ``mask_pre``/``mask_post`` and joined layers
``extra_image``/``extra_mask``). The dates are the frames of kornia's video augmentation
(``VideoSequential``), as in TorchGeo's change datamodules: geometric transforms use the *same*
parameters for both dates and every mask (so pixels stay co-registered and labels stay
aligned); photometric jitter is drawn *independently* per date (two acquisitions differ in
illumination, season, sensor).
The optional per-date shift (``per_date_shift``), rotation and scale warp each date
independently by a little, as misregistration and view-angle differences do; the masks follow
the pre date. The optional radiometric jitter (``band_gain``, ``band_offset``, ``gamma``,
``haze``) draws per date *and per band* what ``ColorJitter`` draws per image: sensor gains,
offsets and gammas that differ between bands, and a smooth haze over part of the scene.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia.geometry.transform import get_affine_matrix2d, warp_affine
from torch import Tensor, nn

from geochange.classes import IGNORE_INDEX
from geochange.errors import ConfigurationError
from geochange.keys import EXTRA_IMAGE, MASK_KEYS


class NormalizeChange(nn.Module):
    """Apply ``(x - mean) / std`` per band to both dates of ``image`` (raw pixel units).

    Args:
        mean: per-band means.
        std: per-band standard deviations (zeros are replaced by 1).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        std_t = torch.as_tensor(list(std), dtype=torch.float32)
        std_t = torch.where(std_t > 0, std_t, torch.ones_like(std_t))
        self.register_buffer("mean", torch.as_tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", std_t)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Return a copy of ``batch`` with a normalized ``image``."""
        out = dict(batch)
        image = batch["image"]
        shape = [1] * (image.ndim - 3) + [-1, 1, 1]
        mean = torch.as_tensor(self.mean).to(image.device).view(shape)
        std = torch.as_tensor(self.std).to(image.device).view(shape)
        out["image"] = (image.float() - mean) / std
        return out


class ChangeAugmentation(nn.Module):
    """Bi-temporal batch augmentation: shared geometry, per-date photometry, date swap.

    Usable on its own (e.g. weak and strong views for semi-supervised training): it takes and
    returns the batch dict and leaves the input untouched. Masks keep the layout they come in
    (``[B, H, W]`` or ``[B, 1, H, W]``); a joined ``extra_image`` moves with the geometry but
    gets no photometric jitter. The kornia pipelines are built once (the random resized crop
    once per patch size).

    Photometric jitter is applied in ``[0, 1]`` units: the image is divided by ``value_range``
    (e.g. 255 for 8-bit imagery), jittered with kornia (``ColorJitter`` for 3-band images,
    brightness/contrast for other band counts) and scaled back. With ``value_range=None`` the
    image is taken as already normalized (zero mean, unit std): brightness and contrast are then
    applied without clipping, and saturation/hue are skipped.

    Args:
        flip: random horizontal and vertical flips.
        rotate90: random multiples of 90° rotation.
        scale: ``(min, max)`` area fraction for a random resized crop back to the input size
            (None: no scale jitter).
        brightness: brightness jitter amplitude (0 disables).
        contrast: contrast jitter amplitude.
        saturation: saturation jitter amplitude (3-band images with a value range only).
        hue: hue jitter amplitude in ``[0, 0.5]`` (same restriction).
        photometric_p: probability that a date gets photometric jitter.
        date_swap: probability of swapping pre and post (semantic masks swapped, change kept).
        value_range: pixel value mapped to 1.0 for photometric jitter; None for normalized data.
        per_date_photometry: draw the photometric jitter independently for each date (True)
            or once for both dates of a sample (False).
        per_date_shift: largest per-date translation in pixels per axis (0 disables). Each date
            of each sample is translated by its own uniform sub-pixel shift in
            ``[-per_date_shift, per_date_shift]`` (bilinear, edges replicated), so the dates
            are misregistered against each other by up to twice that; the masks follow the
            pre date (nearest), and the strip shifted in from outside becomes the ignore value.
        per_date_rotation: largest independent rotation of each date about the patch centre,
            in degrees (0 disables); applied with the shift, masks following the pre date.
        per_date_scale: largest independent relative scale change of each date (0.02: scales
            drawn in ``[0.98, 1.02]``; 0 disables); applied with the shift and rotation.
        band_gain: per-date, per-band gains are drawn in ``[1 - band_gain, 1 + band_gain]``
            (0 disables), as radiometric calibration differs between bands and acquisitions.
        band_offset: per-date, per-band offsets in ``[-band_offset, band_offset]``, as a
            fraction of ``value_range`` (or in normalized units when ``value_range`` is None).
        gamma: per-date, per-band gammas in ``[exp(-gamma), exp(gamma)]`` (needs a
            ``value_range``; skipped on normalized data, as saturation and hue are).
        haze: largest haze fraction of a date (0 disables): each date is blended towards a
            bright airlight by a smooth random field of up to a random fraction in
            ``[0, haze]`` (needs a ``value_range``).

    The radiometric jitter is applied with the same per-date probability ``photometric_p``,
    after ``ColorJitter``; ``ChangeAugmentation.radiometric(...)`` gives its ranges matched to
    the ``"levir"`` realism preset of the synthetic scenes.
    """

    def __init__(
        self,
        *,
        flip: bool = True,
        rotate90: bool = True,
        scale: tuple[float, float] | None = (0.75, 1.0),
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.05,
        photometric_p: float = 0.8,
        date_swap: float = 0.0,
        value_range: float | None = 255.0,
        per_date_photometry: bool = True,
        per_date_shift: float = 0.0,
        per_date_rotation: float = 0.0,
        per_date_scale: float = 0.0,
        band_gain: float = 0.0,
        band_offset: float = 0.0,
        gamma: float = 0.0,
        haze: float = 0.0,
    ) -> None:
        super().__init__()
        amounts = {
            "per_date_shift": per_date_shift,
            "per_date_rotation": per_date_rotation,
            "per_date_scale": per_date_scale,
            "band_gain": band_gain,
            "band_offset": band_offset,
            "gamma": gamma,
            "haze": haze,
        }
        for name, value in amounts.items():
            if not value >= 0:
                raise ConfigurationError(f"{name} must be >= 0, got {value}")
        if per_date_scale >= 1 or band_gain >= 1 or haze > 1:
            raise ConfigurationError(
                "per_date_scale and band_gain must be < 1 and haze <= 1, got "
                f"{per_date_scale}, {band_gain} and {haze}"
            )
        self.per_date_shift = float(per_date_shift)
        self.per_date_rotation = float(per_date_rotation)
        self.per_date_scale = float(per_date_scale)
        self.band_gain, self.band_offset = float(band_gain), float(band_offset)
        self.gamma, self.haze = float(gamma), float(haze)
        geometric: list[nn.Module] = []
        if flip:
            geometric += [K.RandomHorizontalFlip(p=0.5), K.RandomVerticalFlip(p=0.5)]
        if rotate90:
            geometric.append(K.RandomRotation90(times=(0, 3), p=1.0))
        self.scale = scale
        self.geometric = nn.ModuleList(geometric)
        self.value_range = value_range
        self.brightness, self.contrast = brightness, contrast
        self.saturation, self.hue = saturation, hue
        self.photometric_p = photometric_p
        self.date_swap = date_swap
        # Frames are the dates: same_on_frame=False draws one jitter per date.
        same = not per_date_photometry
        self.per_date_photometry = per_date_photometry
        self._jitter_rgb = K.VideoSequential(
            K.ColorJitter(brightness, contrast, saturation, hue, p=photometric_p),
            data_format="BTCHW",
            same_on_frame=same,
        )
        clip = value_range is not None
        self._jitter_any = K.VideoSequential(
            K.RandomBrightness((1 - brightness, 1 + brightness), clip_output=clip, p=photometric_p),
            K.RandomContrast((1 - contrast, 1 + contrast), clip_output=clip, p=photometric_p),
            data_format="BTCHW",
            same_on_frame=same,
        )
        # Geometry pipelines by (height, width, with masks): the crop needs the output size.
        self._pipelines: dict[tuple[int, int, bool], K.AugmentationSequential] = {}

    @classmethod
    def radiometric(cls, **kwargs: Any) -> ChangeAugmentation:
        """The default augmentation plus radiometric jitter matched to the ``"levir"`` preset.

        The ranges cover the synthetic scenes' :class:`geochange.synthetic.realism.Radiometry`
        of that preset: per-band gain ±0.15, offset ±12/255, gamma ``exp(±0.2)``, haze up to
        0.25. Keyword arguments override any of them (or the other arguments of the class).
        """
        params: dict[str, Any] = {
            "band_gain": 0.15,
            "band_offset": 12 / 255,
            "gamma": 0.2,
            "haze": 0.25,
        }
        params.update(kwargs)
        return cls(**params)

    @classmethod
    def robust(cls, **kwargs: Any) -> ChangeAugmentation:
        """:meth:`radiometric` plus a per-date shift (2 px), rotation (1°) and scale (2 %).

        ``bench_train.py --augment robust``: the recipe measured to carry a clean-trained model
        to the ``"levir"`` preset (docs/synthetic.md). Keyword arguments override any argument.
        """
        params: dict[str, Any] = {
            "per_date_shift": 2.0,
            "per_date_rotation": 1.0,
            "per_date_scale": 0.02,
        }
        params.update(kwargs)
        return cls.radiometric(**params)

    def _pipeline(self, h: int, w: int, with_masks: bool) -> K.AugmentationSequential | None:
        key = (h, w, with_masks)
        if key not in self._pipelines:
            modules: list[nn.Module] = list(self.geometric)
            if self.scale is not None:
                modules.append(
                    K.RandomResizedCrop((h, w), scale=self.scale, ratio=(0.75, 1.333), p=1.0)
                )
            if not modules:
                return None
            video = K.VideoSequential(*modules, data_format="BTCHW", same_on_frame=True)
            data_keys = ["input", "mask"] if with_masks else ["input"]
            self._pipelines[key] = K.AugmentationSequential(
                video,
                data_keys=data_keys,
            )
        return self._pipelines[key]

    def _geometric(
        self, image: Tensor, masks: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        b, t, _, h, w = image.shape
        pipeline = self._pipeline(h, w, bool(masks))
        if pipeline is None:
            return image, masks
        if not masks:
            return pipeline(image), masks
        # Every mask becomes channels of one [B, M, H, W] stack, repeated on both frames (the
        # video augmentation wants a mask per frame; both frames get the same geometry).
        shapes = {k: m.shape for k, m in masks.items()}
        flat = [masks[k].reshape(b, -1, h, w).float() for k in masks]
        sizes = [f.shape[1] for f in flat]
        stack = torch.cat(flat, dim=1).unsqueeze(1).expand(-1, t, -1, -1, -1)
        image, moved = pipeline(image, stack)
        parts = torch.split(moved[:, 0], sizes, dim=1)
        out = {
            k: part.round().long().reshape(shapes[k]) for k, part in zip(masks, parts, strict=True)
        }
        return image, out

    @property
    def _warps_dates(self) -> bool:
        return self.per_date_shift > 0 or self.per_date_rotation > 0 or self.per_date_scale > 0

    def _date_matrices(self, image: Tensor) -> Tensor:
        """``[B, 2, 2, 3]`` affine matrices (pixels) of each sample's two dates."""
        b, _, _, h, w = image.shape
        device = image.device
        # (sample, date, (x, y)) in pixels; drawn first so shift-only runs draw as before.
        shift = (torch.rand(b, 2, 2, device=device) * 2 - 1) * self.per_date_shift
        angle = (torch.rand(b, 2, device=device) * 2 - 1) * self.per_date_rotation
        scale = 1 + (torch.rand(b, 2, device=device) * 2 - 1) * self.per_date_scale
        center = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=device).expand(b * 2, 2)
        matrix = get_affine_matrix2d(
            shift.reshape(-1, 2),
            center,
            scale.reshape(-1, 1).expand(-1, 2).contiguous(),
            angle.reshape(-1),
        )
        return matrix[:, :2].reshape(b, 2, 2, 3)

    def _warp_dates(
        self, image: Tensor, masks: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Independent small affine warp of each date; masks follow the pre date."""
        b = image.shape[0]
        h, w = image.shape[-2:]
        matrix = self._date_matrices(image)
        dates = [
            warp_affine(image[:, t], matrix[:, t], (h, w), mode="bilinear",
                        padding_mode="border", align_corners=True)
            for t in range(2)
        ]  # fmt: skip
        if not masks:
            return torch.stack(dates, dim=1), masks
        # Masks ([B, H, W] or [B, 1, H, W]) become channels of one stack, plus a channel of
        # ones that tells which pixels were moved in from outside.
        shapes = {k: m.shape for k, m in masks.items()}
        flat = [masks[k].reshape(b, -1, h, w).float() for k in masks]
        sizes = [f.shape[1] for f in flat]
        stack = torch.cat([*flat, torch.ones_like(flat[0][:, :1])], dim=1)
        moved = warp_affine(stack, matrix[:, 0], (h, w), mode="nearest", padding_mode="zeros",
                            align_corners=True)  # fmt: skip
        inside = moved[:, -1:] > 0.5
        parts = torch.split(moved[:, :-1], sizes, dim=1)
        out = {
            k: torch.where(inside, part.round().long(), IGNORE_INDEX).reshape(shapes[k])
            for k, part in zip(masks, parts, strict=True)
        }
        return torch.stack(dates, dim=1), out

    def _radiometric(self, image: Tensor, scaled: bool) -> Tensor:
        """Per-date, per-band gain/offset/gamma and a smooth haze (``[0, 1]`` units if scaled)."""
        if self.photometric_p <= 0 or not (
            self.band_gain or self.band_offset or (scaled and (self.gamma or self.haze))
        ):
            return image
        b, _, c, h, w = image.shape
        device = image.device
        t = 2 if self.per_date_photometry else 1  # 1: one draw for both dates (broadcast)

        def draw(amount: float, *shape: int) -> Tensor:
            return (torch.rand(b, t, *shape, device=device) * 2 - 1) * amount

        on = (torch.rand(b, t, 1, 1, 1, device=device) < self.photometric_p).float()
        out = image
        if scaled and self.gamma:
            out = out.clamp(0, 1) ** torch.exp(draw(self.gamma, c, 1, 1))
        out = out * (1 + draw(self.band_gain, c, 1, 1)) + draw(self.band_offset, c, 1, 1)
        if scaled and self.haze:
            # A smooth field: bilinear upsampling of a 3 x 3 grid of random levels.
            grid = torch.rand(b * t, 1, 3, 3, device=device)
            field = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=True)
            amount = torch.rand(b, t, 1, 1, 1, device=device) * self.haze
            fraction = field.view(b, t, 1, h, w) * amount
            airlight = 0.8 + 0.2 * torch.rand(b, t, c, 1, 1, device=device)
            out = out * (1 - fraction) + airlight * fraction
        if scaled:
            out = out.clamp(0, 1)
        return on * out + (1 - on) * image

    def _photometric(self, image: Tensor) -> Tensor:
        amounts = (self.brightness, self.contrast, self.saturation, self.hue, self.band_gain,
                   self.band_offset, self.gamma, self.haze)  # fmt: skip
        if self.photometric_p <= 0 or not any(amounts):
            return image
        if self.value_range is None:
            return self._radiometric(self._jitter_any(image), scaled=False)
        scaled = (image / self.value_range).clamp(0, 1)
        jitter = self._jitter_rgb if image.shape[2] == 3 else self._jitter_any
        return self._radiometric(jitter(scaled), scaled=True) * self.value_range

    @staticmethod
    def _with_extra(image: Tensor, extra: Tensor | None) -> tuple[Tensor, int, bool]:
        """``image`` with a joined layer's bands appended (one date: repeated on both)."""
        if extra is None:
            return image, 0, False
        single = extra.dim() == 4
        frames = extra.float().unsqueeze(1).expand(-1, 2, -1, -1, -1) if single else extra
        return torch.cat([image, frames.float()], dim=2), int(frames.shape[2]), single

    def _swap(self, image: Tensor, masks: dict[str, Tensor]) -> Tensor:
        swap = torch.rand(image.shape[0], device=image.device) < self.date_swap
        if not swap.any():
            return image
        image = torch.where(swap.view(-1, 1, 1, 1, 1), image.flip(1), image)
        if "mask_pre" in masks and "mask_post" in masks:
            mp, mq = masks["mask_pre"], masks["mask_post"]
            sel = swap.view(-1, *([1] * (mp.dim() - 1)))
            masks["mask_pre"] = torch.where(sel, mq, mp)
            masks["mask_post"] = torch.where(sel, mp, mq)
        return image

    @torch.no_grad()
    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Augment a batch.

        Args:
            batch: dict with ``image`` ``[B, 2, C, H, W]`` and optional masks ``[B, H, W]``
                (or ``[B, 1, H, W]``) and joined layers.

        Returns:
            A new dict with augmented ``image``, masks and joined layers; other keys are passed
            through.
        """
        out = dict(batch)
        image = batch["image"].float()
        channels = image.shape[2]
        masks = {k: batch[k] for k in MASK_KEYS if k in batch}
        image, extra_bands, single = self._with_extra(image, batch.get(EXTRA_IMAGE))
        image, masks = self._geometric(image, masks)
        if extra_bands:
            extra = image[:, :, channels:]
            out[EXTRA_IMAGE] = extra[:, 0] if single else extra
            image = image[:, :, :channels]
        if self._warps_dates:
            image, masks = self._warp_dates(image, masks)
        image = self._photometric(image)
        if self.date_swap > 0:
            image = self._swap(image, masks)
        out["image"] = image
        for key, value in masks.items():
            # Interpolation never invents classes with nearest resampling, but guard the range.
            out[key] = value.clamp(0, IGNORE_INDEX)
        return out
