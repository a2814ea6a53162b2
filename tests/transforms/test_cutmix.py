"""CutMix boxes shared by both dates and every per-pixel target (geochange.transforms.cutmix)."""

from __future__ import annotations

import pytest
import torch

from geochange.errors import DataError
from geochange.transforms.cutmix import apply_cutmix, cutmix_boxes

SIZE = 32


def test_cutmix_keeps_dates_and_labels_aligned() -> None:
    batch = 6
    # Every pixel of sample i (both dates, every band, its labels) holds the value i.
    ids = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1, 1)
    image = ids.expand(batch, 2, 3, SIZE, SIZE).clone()
    image[:, 1] += 100  # the post date is distinguishable from the pre date
    labels = ids.view(batch, 1, 1).expand(batch, SIZE, SIZE).long()
    gen = torch.Generator().manual_seed(3)
    boxes = cutmix_boxes(batch, SIZE, SIZE, probability=1.0, area=(0.1, 0.3), generator=gen)
    partner = torch.tensor([1, 2, 3, 4, 5, 0])
    mixed_image = apply_cutmix(image, boxes, partner)
    mixed_labels = apply_cutmix(labels, boxes, partner)
    for index in range(batch):
        box = boxes[index]
        area = box.float().mean().item()
        assert 0.05 < area < 0.4  # rounding of the box sides aside, the requested range
        source = torch.where(box, partner[index], index)
        # Pre date, post date (same box) and the labels all come from the same sample.
        assert torch.equal(mixed_image[index, 0, 0], source.float())
        assert torch.equal(mixed_image[index, 1, 2], source.float() + 100)
        assert torch.equal(mixed_labels[index], source)
        # The box is one rectangle.
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        height = int(rows.max() - rows.min() + 1)
        width = int(cols.max() - cols.min() + 1)
        assert int(box.sum()) == height * width
    assert torch.equal(image[:, 0, 0, 0, 0], torch.arange(batch, dtype=torch.float32))
    assert not cutmix_boxes(4, SIZE, SIZE, probability=0.0).any()
    with pytest.raises(DataError, match="CutMix"):
        apply_cutmix(labels[:, :8], boxes, partner)
