"""``BiTemporalRasterDataset & RasterDataset``: extra layers joined under their own keys.

TorchGeo's :class:`~torchgeo.datasets.IntersectionDataset` concatenates the samples of the
joined datasets key by key (``concat_samples``): a single-date ``image`` ``[C, H, W]`` cannot
join the bi-temporal ``[2, C, H, W]``, and two ``[H, W]`` masks become one ``[2H, W]``. Here a
joined layer keeps its own key instead (:data:`geochange.keys.EXTRA_IMAGE`,
:data:`~geochange.keys.EXTRA_MASK`), once for a single-date layer, per date for a time series
of the two dates; the bi-temporal sample's ``bounds`` and ``transform`` stay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchgeo.datasets import GeoDataset, IntersectionDataset

from geochange.errors import DataError
from geochange.keys import EXTRA_IMAGE, EXTRA_MASK, MASK, to_mask_layout

__all__ = ["BiTemporalIntersectionDataset", "join_layer"]


def _layer_image(value: Tensor) -> Tensor:
    if value.dim() == 3 or (value.dim() == 4 and value.shape[0] == 2):
        return value.float()
    raise DataError(
        "an image layer joined with & must hold one date [C, H, W] or the two dates "
        f"[2, C, H, W] (RasterDataset(time_series=True)); got {tuple(value.shape)}"
    )


def join_layer(sample: dict[str, Any], layer: dict[str, Any], mask_layout: str) -> dict[str, Any]:
    """Join a TorchGeo layer's sample to a bi-temporal sample (see the module docstring).

    Args:
        sample: the bi-temporal sample (``image`` ``[2, C, H, W]``, its masks and metadata).
        layer: the joined dataset's sample (``image`` and/or ``mask``, ``bounds``, ...).
        mask_layout: the bi-temporal dataset's mask layout (``"geochange"`` or ``"torchgeo"``).

    Returns:
        The joined sample: ``extra_image`` for an image layer (several image layers of the same
        form concatenated along their bands); a label layer fills ``mask`` when the sample has
        no label, else ``extra_mask``.

    Raises:
        DataError: an image layer of another shape, image layers of different forms (one date
            and two dates), or a second label layer where ``mask`` and ``extra_mask`` are taken.
    """
    out = dict(sample)
    for key, value in layer.items():
        if key in ("bounds", "transform"):
            continue  # the bi-temporal sample's window and grid describe the joined sample
        if key == "image":
            image = _layer_image(value)
            if EXTRA_IMAGE in out:
                previous = out[EXTRA_IMAGE]
                if previous.dim() != image.dim():
                    raise DataError(
                        "image layers joined with & mix one date and two dates: "
                        f"{tuple(previous.shape)} and {tuple(image.shape)}"
                    )
                image = torch.cat([previous, image], dim=image.dim() - 3)
            out[EXTRA_IMAGE] = image
        elif key == "mask":
            target = MASK if MASK not in out else EXTRA_MASK
            if target in out:
                raise DataError(
                    "a second label layer joined with &: the sample already has 'mask' and "
                    "'extra_mask'; join label layers with TorchGeo's own IntersectionDataset"
                )
            out[target] = value
        else:
            out.setdefault(key, value)
    return to_mask_layout(out, mask_layout, batched=False)


class BiTemporalIntersectionDataset(IntersectionDataset):
    """The intersection of a bi-temporal dataset and TorchGeo layers, made by ``&``.

    ``BiTemporalRasterDataset(...) & dem & landcover`` yields the bi-temporal sample plus
    ``extra_image`` / ``extra_mask`` (see :func:`join_layer`). The bi-temporal dataset must be
    the left operand: ``dem & pairs`` is TorchGeo's own intersection, which cannot join them.

    Args:
        dataset1: a :class:`~geochange.datasets.BiTemporalRasterDataset` (or an intersection
            made from one).
        dataset2: the TorchGeo dataset to join.
        spatial_only: ignore the time dimension when intersecting (TorchGeo's meaning).
        transforms: function applied to each joined sample.
    """

    def __init__(
        self,
        dataset1: GeoDataset,
        dataset2: GeoDataset,
        spatial_only: bool = False,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(
            dataset1, dataset2, spatial_only=spatial_only, collate_fn=self._join,
            transforms=transforms,
        )  # fmt: skip
        self.mask_layout: str = getattr(dataset1, "mask_layout", "geochange")

    def _join(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        first, layer = samples
        return join_layer(first, layer, self.mask_layout)

    def __and__(self, other: GeoDataset) -> BiTemporalIntersectionDataset:
        """Join one more TorchGeo layer (``(pairs & dem) & landcover``)."""
        return BiTemporalIntersectionDataset(self, other)
