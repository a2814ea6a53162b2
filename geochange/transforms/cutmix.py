"""CutMix between samples of a bi-temporal batch: one box per sample, the same on both dates."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from geochange.errors import DataError

__all__ = ["apply_cutmix", "cutmix_boxes"]


def cutmix_boxes(
    batch_size: int,
    height: int,
    width: int,
    *,
    probability: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 1 / 0.3),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw one CutMix box per sample (UniMatch style: random area and aspect ratio).

    Args:
        batch_size: Samples ``B``.
        height: Rows ``H``.
        width: Columns ``W``.
        probability: Chance that a sample gets a box at all.
        area: ``(min, max)`` box area as a fraction of the image.
        ratio: ``(min, max)`` box aspect ratio (width / height), sampled log-uniformly.
        generator: Optional random generator (CPU) for reproducible boxes.
        device: Device of the returned mask.

    Returns:
        ``[B, H, W]`` bool mask, True inside the box (where the partner's content is pasted).
    """
    boxes = torch.zeros(batch_size, height, width, dtype=torch.bool)
    for index in range(batch_size):
        draws = torch.rand(4, generator=generator).tolist()
        if draws[0] >= probability:
            continue
        box_area = (area[0] + (area[1] - area[0]) * draws[1]) * height * width
        log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * draws[2]
        aspect = math.exp(log_ratio)
        box_h = max(1, min(height, round(math.sqrt(box_area / aspect))))
        box_w = max(1, min(width, round(math.sqrt(box_area * aspect))))
        corner = torch.rand(2, generator=generator).tolist()
        top = int(corner[0] * (height - box_h + 1))
        left = int(corner[1] * (width - box_w + 1))
        boxes[index, top : top + box_h, left : left + box_w] = True
    return boxes.to(device) if device is not None else boxes


def apply_cutmix(value: Tensor, boxes: Tensor, partner: Tensor) -> Tensor:
    """Paste ``value[partner]`` into ``value`` inside ``boxes``.

    The same boxes and partners must be used for the image and every per-pixel target, so
    dates, labels and pseudo labels stay aligned. Works for images ``[B, 2, C, H, W]`` (one box
    for both dates), ``[B, C, H, W]`` and per-pixel maps ``[B, H, W]``.

    Args:
        value: Tensor whose first dim is the batch and last two dims ``H, W``.
        boxes: ``[B, H, W]`` bool masks from :func:`cutmix_boxes`.
        partner: ``[B]`` long indices of the sample each one takes its box content from.

    Returns:
        The mixed tensor (a new tensor; ``value`` is untouched).

    Raises:
        DataError: If the batch or spatial size differs from the boxes.
    """
    if value.shape[0] != boxes.shape[0] or value.shape[-2:] != boxes.shape[-2:]:
        raise DataError(
            f"cannot CutMix a tensor of shape {tuple(value.shape)} with boxes {tuple(boxes.shape)}"
        )
    shape = [boxes.shape[0]] + [1] * (value.dim() - 3) + list(boxes.shape[-2:])
    return torch.where(boxes.view(shape), value[partner], value)
