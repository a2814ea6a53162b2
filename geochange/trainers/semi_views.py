"""The weak and strong views of one semi-supervised step (geometry shared by every target)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from geochange.keys import DIAGNOSTIC_CHANGE, PSEUDO_CHANGE, PSEUDO_POST, PSEUDO_PRE
from geochange.transforms import ChangeAugmentation
from geochange.transforms.cutmix import apply_cutmix

__all__ = ["GuidanceView", "StrongView", "guidance_views", "weak_view"]

#: ``(model outputs, CEG labels, (pseudo map pre, pseudo map post))`` of one view.
GuidanceView = tuple[dict[str, Tensor], Tensor, tuple[Tensor, Tensor]]

# The augmentation moves only the masks it knows ("mask", "mask_pre", "mask_post") and clamps
# them to 0..255; the CEG labels and the diagnostic truth (each 0, 1 or 255) share "mask" as
# one code 0..8 so they get exactly the same nearest-neighbour geometry.
_CODE = 3


def _to_code(label: Tensor) -> Tensor:
    return torch.where(label > 1, torch.full_like(label, 2), label)


def _from_code(code: Tensor) -> Tensor:
    return torch.where(code == 2, torch.full_like(code, 255), code)


@dataclass
class StrongView:
    """The strong view of one step: CutMix boxes and partners, mixed targets, model outputs."""

    boxes: Tensor
    partner: Tensor
    pseudo: Tensor
    confidence: Tensor
    outputs: dict[str, Tensor]

    def mix(self, value: Tensor) -> Tensor:
        """Apply the view's CutMix to another per-pixel target.

        Args:
            value: ``[B, H, W]`` (or ``[B, C, H, W]``) target of the weak view.

        Returns:
            The mixed target.
        """
        return apply_cutmix(value, self.boxes, self.partner)


def weak_view(
    augmentation: ChangeAugmentation,
    batch: Mapping[str, Any],
    semantic: tuple[Tensor, Tensor] | None,
) -> dict[str, Tensor]:
    """Weak view: one geometry for both dates, the pseudo maps, CEG labels and diagnostic truth.

    Args:
        augmentation: Geometric weak augmentation.
        batch: Normalized unlabeled batch (``image``; optional ``pseudo_change`` and
            ``diagnostic_change``).
        semantic: Per-date pseudo semantic maps, or ``None`` (FixMatch).

    Returns:
        ``image`` and, when present in the input, ``pseudo_pre`` / ``pseudo_post`` /
        ``pseudo_change`` / ``diagnostic_change`` of the view.
    """
    image = batch["image"].float()
    zeros = torch.zeros(image.shape[0], *image.shape[-2:], dtype=torch.long, device=image.device)
    generated = batch[PSEUDO_CHANGE].long() if PSEUDO_CHANGE in batch else zeros
    truth = batch[DIAGNOSTIC_CHANGE].long() if DIAGNOSTIC_CHANGE in batch else zeros
    view: dict[str, Tensor] = {
        "image": image,
        "mask": _to_code(generated) + _CODE * _to_code(truth),
    }
    if semantic is not None:
        view["mask_pre"], view["mask_post"] = semantic
    augmented = augmentation.to(image.device)(view)
    out = {"image": augmented["image"]}
    code = augmented["mask"]
    if PSEUDO_CHANGE in batch:
        out[PSEUDO_CHANGE] = _from_code(code % _CODE)
    if DIAGNOSTIC_CHANGE in batch:
        out[DIAGNOSTIC_CHANGE] = _from_code(code // _CODE)
    if semantic is not None:
        out[PSEUDO_PRE], out[PSEUDO_POST] = augmented["mask_pre"], augmented["mask_post"]
    return out


def guidance_views(
    labeled: Mapping[str, Any],
    semantic_l: tuple[Tensor, Tensor],
    weak: Mapping[str, Tensor],
    out_l: dict[str, Tensor],
    out_w: dict[str, Tensor],
    strong: StrongView,
    generate: Callable[[Tensor, Tensor], Tensor],
) -> dict[str, GuidanceView]:
    """Outputs, CEG labels and pseudo semantic maps of the labeled, weak and strong views.

    Args:
        labeled: Labeled batch (``pseudo_change`` used when present).
        semantic_l: Its pseudo semantic maps.
        weak: The weak view (:func:`weak_view`).
        out_l: Model outputs on the labeled batch.
        out_w: Model outputs on the weak view.
        strong: The strong view; its CEG labels and maps are the weak view's, CutMixed.
        generate: CEG from a pair of pseudo maps, for views without ``pseudo_change``.

    Returns:
        ``{"labeled": ..., "weak": ..., "strong": ...}``.
    """
    generated_l = (
        labeled[PSEUDO_CHANGE].long() if PSEUDO_CHANGE in labeled else generate(*semantic_l)
    )
    generated_w = (
        weak[PSEUDO_CHANGE]
        if PSEUDO_CHANGE in weak
        else generate(weak[PSEUDO_PRE], weak[PSEUDO_POST])
    )
    semantic_w = (weak[PSEUDO_PRE], weak[PSEUDO_POST])
    return {
        "labeled": (out_l, generated_l, semantic_l),
        "weak": (out_w, generated_w, semantic_w),
        "strong": (
            strong.outputs,
            strong.mix(generated_w),
            (strong.mix(semantic_w[0]), strong.mix(semantic_w[1])),
        ),
    }
