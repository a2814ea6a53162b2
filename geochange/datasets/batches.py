"""Batches read straight into their final buffers, and the collate function that keeps them.

A DataLoader batch is normally built twice: every sample allocates its own tensors, then the
collate function (TorchGeo's ``stack_samples``) copies them into one batch tensor per key,
and in a worker process the batch is copied once more into shared memory to reach the main
process. For 8 windows of 256 px that is ~17 MB written three times per batch, a third of what
reading the windows costs once they are in GDAL's block cache.

:meth:`BiTemporalRasterDataset.__getitems__ <geochange.datasets.BiTemporalRasterDataset>`
(called by PyTorch's DataLoader with a whole batch of queries) reads every window into one
buffer per key, allocated in shared memory inside a worker (as PyTorch's ``default_collate``
does), and returns a :class:`BatchSamples`: ordinary sample dicts whose tensors are views of
those buffers. :func:`stack_samples` returns the buffers themselves when the samples still
are those views, so the batch is written once; for any other list of samples it stacks them
like TorchGeo's ``stack_samples`` (into shared memory inside a worker). Both collate
functions give the same batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import get_worker_info

from geochange.keys import DIAGNOSTIC_CHANGE, MASK_KEYS, PSEUDO_POST, PSEUDO_PRE


def batch_buffer(shape: Sequence[int], dtype: torch.dtype) -> Tensor:
    """An uninitialised tensor for a batch; in a DataLoader worker, in shared memory.

    A batch in shared memory crosses to the main process without a copy (what PyTorch's
    ``default_collate`` does for its output).
    """
    if get_worker_info() is None:
        return torch.empty(tuple(shape), dtype=dtype)
    elem = torch.empty(0, dtype=dtype)
    storage = elem._typed_storage()._new_shared(math.prod(shape), device=elem.device)
    return elem.new(storage).resize_(*shape)


class BatchSamples(list[dict[str, Any]]):
    """Samples whose tensors under the keys of :attr:`stacked` are views of one batch each.

    Args:
        samples: the sample dicts, in batch order.
        stacked: key -> the ``[B, ...]`` tensor whose ``i``-th entry is ``samples[i][key]``.
    """

    def __init__(self, samples: Sequence[dict[str, Any]], stacked: dict[str, Tensor]) -> None:
        super().__init__(samples)
        self.stacked = stacked


def _still_views(samples: BatchSamples, key: str, batch: Tensor) -> bool:
    """Whether every sample's ``key`` is still the view of ``batch`` it was read as."""
    if len(samples) != batch.shape[0]:
        return False
    for index, sample in enumerate(samples):
        value = sample.get(key)
        if not isinstance(value, Tensor) or value.data_ptr() != batch[index].data_ptr():
            return False
        if value.shape != batch.shape[1:] or value.dtype != batch.dtype:
            return False
    return True


def stack_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate samples into a batch: tensors stacked along a new first axis, the rest in lists.

    The same batch as TorchGeo's ``stack_samples``. Samples read together by
    ``BiTemporalRasterDataset.__getitems__`` already share one buffer per key, which is
    returned as it is (no copy); other tensors are stacked, inside a DataLoader worker into
    shared memory.

    Args:
        samples: the sample dicts (all with the same keys).

    Returns:
        Key -> ``[B, ...]`` tensor, or the list of the samples' values for non-tensors.
    """
    stacked = samples.stacked if isinstance(samples, BatchSamples) else {}
    keys = list(samples[0]) if samples else []
    batch: dict[str, Any] = {}
    for key in keys:
        values = [sample[key] for sample in samples]
        if key in stacked and _still_views(samples, key, stacked[key]):  # type: ignore[arg-type]
            batch[key] = stacked[key]
        elif isinstance(values[0], Tensor):
            first = values[0]
            same = all(v.shape == first.shape and v.dtype == first.dtype for v in values)
            if same and first.device.type == "cpu":
                out = batch_buffer((len(values), *first.shape), first.dtype)
                batch[key] = torch.stack(values, out=out)
            else:
                batch[key] = torch.stack(values)  # raises torch's own shape error
        else:
            batch[key] = values
    return batch


def select_keys(
    samples: Sequence[dict[str, Any]],
    *,
    drop: Sequence[str] = (),
    rename: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The samples without the keys in ``drop`` and with keys renamed by ``rename``.

    Samples read as one batch stay one (:class:`BatchSamples`), so :func:`stack_samples` still
    returns their buffers without copying.
    """
    rename = rename or {}
    kept = [{rename.get(k, k): v for k, v in sample.items() if k not in drop} for sample in samples]
    if isinstance(samples, BatchSamples):
        stacked = {rename.get(k, k): v for k, v in samples.stacked.items() if k not in drop}
        return BatchSamples(kept, stacked)
    return kept


#: Keys of integer label maps in samples and batches (long once widened).
LABEL_MAP_KEYS = (*MASK_KEYS, PSEUDO_PRE, PSEUDO_POST, DIAGNOSTIC_CHANGE)


def widen(batch: dict[str, Any]) -> dict[str, Any]:
    """A compact batch (``BiTemporalRasterDataset(compact=True)``) as an ordinary one.

    ``image`` becomes float32 and integer label maps long: the values of the non-compact
    batch. Batches that already are float32 / long are returned unchanged (no copy). Call it
    where the batch is to be used, e.g. on the GPU after the transfer, so the smaller batch
    is what gets copied around.
    """
    out = dict(batch)
    image = out.get("image")
    if isinstance(image, Tensor) and not image.is_floating_point():
        out["image"] = image.float()
    for key in LABEL_MAP_KEYS:
        value = out.get(key)
        if isinstance(value, Tensor) and value.dtype == torch.uint8:
            out[key] = value.long()
    return out
