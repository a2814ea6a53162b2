"""Weak, strong and feature-perturbed views of unlabeled bi-temporal batches (semi-supervised)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geochange.transforms.augmentation import ChangeAugmentation

__all__ = ["StrongPhotometric", "decoder_feature_dropout", "default_weak_augmentation"]


class StrongPhotometric(nn.Module):
    """Strong per-date photometric augmentation of normalized bi-temporal images.

    Each date independently gets brightness/contrast jitter, a random Gaussian blur and a
    random grayscale (every band replaced by the band mean, so any band count works). The
    geometry is untouched: the strong view stays pixel-aligned with the weak view it is made
    from, which is what lets the weak view's pseudo labels supervise it.

    Args:
        brightness: Brightness jitter amplitude (in normalized units).
        contrast: Contrast jitter amplitude.
        jitter_p: Probability of brightness/contrast jitter per date.
        blur_p: Probability of a Gaussian blur per date.
        blur_sigma: ``(min, max)`` blur sigma in pixels.
        grayscale_p: Probability of grayscale per date.
    """

    def __init__(
        self,
        *,
        brightness: float = 0.4,
        contrast: float = 0.4,
        jitter_p: float = 0.8,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        grayscale_p: float = 0.2,
    ) -> None:
        super().__init__()
        self.jitter = ChangeAugmentation(
            flip=False,
            rotate90=False,
            scale=None,
            brightness=brightness,
            contrast=contrast,
            saturation=0.0,
            hue=0.0,
            photometric_p=jitter_p,
            value_range=None,
        )
        self.blur = K.RandomGaussianBlur((5, 5), blur_sigma, p=blur_p) if blur_p > 0 else None
        self.grayscale_p = grayscale_p

    def _grayscale(self, date: Tensor) -> Tensor:
        if self.grayscale_p <= 0 or date.shape[1] < 2:
            return date
        chosen = torch.rand(date.shape[0], 1, 1, 1, device=date.device) < self.grayscale_p
        gray = date.mean(dim=1, keepdim=True).expand_as(date)
        return torch.where(chosen, gray, date)

    @torch.no_grad()
    def forward(self, image: Tensor) -> Tensor:
        """Return a strongly augmented copy of ``image`` ``[B, 2, C, H, W]``.

        Args:
            image: Normalized bi-temporal images.

        Returns:
            The augmented images, same shape.
        """
        # The jitter module draws its parameters per date (independent illumination).
        jittered = self.jitter({"image": image})["image"]
        dates = []
        for t in range(jittered.shape[1]):
            date = jittered[:, t]
            if self.blur is not None:
                date = self.blur(date)
            dates.append(self._grayscale(date))
        return torch.stack(dates, dim=1)


def default_weak_augmentation() -> ChangeAugmentation:
    """The default weak view of semi-supervised training: geometry only.

    Flips, 90° rotations and a 0.5-1.0 area crop, the same for both dates and every mask; no
    photometry (the strong view adds it).

    Returns:
        The augmentation module.
    """
    return ChangeAugmentation(
        flip=True,
        rotate90=True,
        scale=(0.5, 1.0),
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        photometric_p=0.0,
        value_range=None,
    )


@contextmanager
def decoder_feature_dropout(decoder: nn.Module, probability: float) -> Iterator[None]:
    """Channel dropout on a decoder's inputs while the context is active (UniMatch FP).

    Args:
        decoder: The model's decoder; its first positional input (a tensor or a list of
            feature maps) is dropped out channel-wise.
        probability: Dropout probability.

    Yields:
        Nothing; the hook is removed on exit.
    """

    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        features = args[0]
        if isinstance(features, (list, tuple)):
            dropped = [F.dropout2d(f, probability, training=True) for f in features]
            return (dropped, *args[1:])
        return (F.dropout2d(features, probability, training=True), *args[1:])

    handle = decoder.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()
