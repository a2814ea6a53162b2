"""Checks of what a trainer is fed: batches, unlabeled views, pseudo maps, datamodule records.

The datamodule's normalization and input range are checked into the form checkpoints store. Each
check raises a :class:`~geochange.errors.DataError` (or ``ConfigurationError`` for the
datamodule) that names the key and the values found, before a shape error deep in the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from geochange.errors import ConfigurationError, DataError

__all__ = [
    "check_change_batch",
    "check_datamodule",
    "check_pseudo_semantic",
    "check_unlabeled_image",
    "datamodule_normalization",
    "datamodule_records",
    "input_range_record",
    "normalization_record",
]


def check_change_batch(
    batch: Mapping[str, Any],
    *,
    in_channels: int,
    task: str,
    num_classes: int | None,
    ignore_index: int,
) -> None:
    """Check a labeled batch: ``image`` ``[B, 2, C, H, W]``, 0/1 ``mask``, class maps in range.

    Args:
        batch: Batch dict.
        in_channels: Bands per date the model was built with.
        task: ``"binary"`` or ``"semantic"`` (which also needs ``mask_pre`` / ``mask_post``).
        num_classes: Classes of the semantic task.
        ignore_index: Label value that is always allowed.

    Raises:
        DataError: On a missing key, a wrong shape or band count, or labels out of range.
    """
    image = batch.get("image")
    if not isinstance(image, Tensor) or image.dim() != 5 or image.shape[1] != 2:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise DataError(f"batch 'image' must be [B, 2, C, H, W], got {shape}")
    if image.shape[2] != in_channels:
        raise DataError(
            f"the data has {image.shape[2]} bands per date but the model was built with "
            f"in_channels={in_channels}"
        )
    if "mask" not in batch:
        raise DataError("batch has no 'mask' (change labels)")
    if task == "semantic":
        if "mask_pre" not in batch or "mask_post" not in batch:
            raise DataError(
                "task='semantic' but the batch has no semantic labels "
                f"('mask_pre'/'mask_post'); batch keys: {sorted(batch)}"
            )
        assert num_classes is not None
        for key in ("mask_pre", "mask_post"):
            labels = batch[key]
            valid = labels[labels != ignore_index]
            if valid.numel() and (int(valid.max()) >= num_classes or int(valid.min()) < 0):
                bad = int(valid.max()) if int(valid.max()) >= num_classes else int(valid.min())
                raise DataError(
                    f"'{key}' holds class {bad} but num_classes={num_classes} "
                    f"(valid 0..{num_classes - 1}, ignore_index={ignore_index})"
                )
    mask = batch["mask"]
    valid_mask = mask[mask != ignore_index]
    if valid_mask.numel() and (int(valid_mask.max()) > 1 or int(valid_mask.min()) < 0):
        raise DataError(
            f"'mask' must hold 0/1 change labels (or ignore_index={ignore_index}), "
            f"found values {torch.unique(valid_mask).tolist()[:8]}"
        )


def check_unlabeled_image(image: Any, in_channels: int) -> None:
    """Check the ``image`` of an unlabeled batch is ``[B, 2, in_channels, H, W]``.

    Args:
        image: The batch's ``image`` value.
        in_channels: Bands per date the model was built with.

    Raises:
        DataError: If it is not a tensor of that shape.
    """
    if not isinstance(image, Tensor) or image.dim() != 5 or image.shape[1:3] != (2, in_channels):
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image)
        raise DataError(f"unlabeled batch 'image' must be [B, 2, {in_channels}, H, W], got {shape}")


def check_pseudo_semantic(
    pre: Any, post: Any, image: Tensor, what: str, num_classes: int, ignore_index: int
) -> tuple[Tensor, Tensor]:
    """Check per-date pseudo semantic maps against their batch and return them as ``long``.

    Args:
        pre: Pseudo map of the first date, ``[B, H, W]``.
        post: Pseudo map of the second date.
        image: The batch's ``image`` ``[B, 2, C, H, W]``.
        what: Which batch, for messages (``"labeled"``, ``"unlabeled"``).
        num_classes: Classes of the maps (``pseudo_num_classes``).
        ignore_index: Value of unknown pixels.

    Returns:
        ``(pre, post)`` as long tensors.

    Raises:
        DataError: On a wrong shape or classes outside ``0..num_classes - 1``.
    """
    expected = (image.shape[0], *image.shape[-2:])
    for name, value in (("pre", pre), ("post", post)):
        if not isinstance(value, Tensor) or tuple(value.shape) != expected:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value)
            raise DataError(
                f"pseudo semantic map ({name}, {what} batch) must be [B, H, W] = {expected}, "
                f"got {shape}"
            )
    pre, post = pre.long(), post.long()
    for name, value in (("pre", pre), ("post", post)):
        valid = value[value != ignore_index]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= num_classes):
            raise DataError(
                f"pseudo semantic map ({name}, {what} batch) holds classes outside "
                f"0..{num_classes - 1} (pseudo_num_classes) and {ignore_index}"
            )
    return pre, post


def check_datamodule(
    datamodule: Any, *, in_channels: int, task: str, num_classes: int | None
) -> None:
    """Check an attached datamodule's bands, task and classes agree with the trainer.

    Args:
        datamodule: The datamodule (attributes it lacks are not checked).
        in_channels: Bands per date of the trainer.
        task: Task of the trainer.
        num_classes: Classes of the trainer.

    Raises:
        ConfigurationError: On a disagreement, saying what to change.
    """
    data_channels = getattr(datamodule, "in_channels", None)
    if data_channels is not None and int(data_channels) != in_channels:
        raise ConfigurationError(
            f"in_channels={in_channels} but the data has {data_channels} bands per date; "
            f"set model in_channels={data_channels} (or select bands in the datamodule)"
        )
    data_task = getattr(datamodule, "task", None)
    if task == "semantic" and data_task == "binary":
        raise ConfigurationError(
            "task='semantic' but the datamodule has no semantic labels (mask_pre/mask_post); "
            "give semantic_pre/semantic_post rasters or use task='binary'"
        )
    data_classes = getattr(datamodule, "num_classes", None)
    if task == "semantic" and data_classes is not None:
        if int(data_classes) != num_classes:
            raise ConfigurationError(
                f"num_classes={num_classes} but the datamodule has {data_classes} classes"
            )


def _as_float_list(values: Any) -> list[float]:
    if isinstance(values, Tensor):
        return [float(v) for v in values.flatten().tolist()]
    return [float(v) for v in values]


def normalization_record(value: Any) -> dict[str, list[float]] | None:
    """Turn datamodule / user normalization into the checkpoint form ``{"mean", "std"}``.

    Args:
        value: ``None``, a mapping with ``mean`` and ``std``, or an object with those attributes.

    Returns:
        ``{"mean": [...], "std": [...]}`` of floats, or ``None``.

    Raises:
        ConfigurationError: If no mean / std can be read.
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        if "mean" not in value or "std" not in value:
            raise ConfigurationError(
                f"normalization must be a dict with 'mean' and 'std', got keys {sorted(value)}"
            )
        return {"mean": _as_float_list(value["mean"]), "std": _as_float_list(value["std"])}
    mean = getattr(value, "mean", None)
    std = getattr(value, "std", None)
    if mean is None or std is None:
        raise ConfigurationError(f"cannot read mean/std from normalization object {value!r}")
    return {"mean": _as_float_list(mean), "std": _as_float_list(std)}


def input_range_record(value: Any) -> dict[str, Any] | None:
    """Check and copy an input range record ``{"dtype", "min", "max"}``.

    Args:
        value: ``None`` or a mapping with ``min`` and ``max`` lists (one value per band).

    Returns:
        The checked copy, or ``None``.

    Raises:
        ConfigurationError: On missing keys or lists of different lengths.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping) or "min" not in value or "max" not in value:
        raise ConfigurationError(
            f"input_range must be a dict with 'min' and 'max' lists (and 'dtype'), got {value!r}"
        )
    low, high = _as_float_list(value["min"]), _as_float_list(value["max"])
    if len(low) != len(high) or not low:
        raise ConfigurationError("input_range 'min' and 'max' need one value per band")
    dtype = value.get("dtype")
    return {"dtype": str(dtype) if dtype is not None else None, "min": low, "max": high}


def datamodule_normalization(datamodule: Any, in_channels: int) -> dict[str, list[float]] | None:
    """The normalization a datamodule applies, in the checkpoint form, or ``None``.

    geochange datamodules say it in ``normalization``; TorchGeo's datamodules in ``mean`` and
    ``std`` (applied by their ``aug`` before the model sees a batch), often one value for
    every band (TorchGeo's default is ``mean=0``, ``std=255``), which is repeated per band.

    Args:
        datamodule: The datamodule (or any object with those attributes).
        in_channels: Bands per date of the model.

    Returns:
        ``{"mean": [...], "std": [...]}`` with one value per band, or ``None``.

    Raises:
        ConfigurationError: If TorchGeo's ``mean``/``std`` hold neither one value nor one
            per band.
    """
    value = getattr(datamodule, "normalization", None)
    if value is not None:
        return normalization_record(value)
    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    if mean is None or std is None:
        return None
    record = normalization_record({"mean": mean, "std": std})
    assert record is not None
    for key in ("mean", "std"):
        values = record[key]
        if len(values) == 1:
            record[key] = values * in_channels
        elif len(values) != in_channels:
            raise ConfigurationError(
                f"the datamodule's {key} has {len(values)} values but the model has "
                f"in_channels={in_channels}: give one value, or one per band"
            )
    return record


def datamodule_records(datamodule: Any, in_channels: int) -> dict[str, Any]:
    """What an attached datamodule says for the checkpoint metadata (only what it has).

    Args:
        datamodule: The datamodule, or ``None``.
        in_channels: Bands per date of the model.

    Returns:
        A subset of ``normalization``, ``bands``, ``patch_size`` and ``input_range``.
    """
    if datamodule is None:
        return {}
    records: dict[str, Any] = {}
    normalization = datamodule_normalization(datamodule, in_channels)
    if normalization is not None:
        records["normalization"] = normalization
    bands = getattr(datamodule, "bands", None)
    if bands is not None:
        records["bands"] = list(bands)
    patch = getattr(datamodule, "patch_size", None)
    if patch is not None:
        records["patch_size"] = int(patch if isinstance(patch, int) else patch[0])
    data_range = getattr(datamodule, "input_range", None)
    if data_range is not None:
        records["input_range"] = input_range_record(data_range)
    return records
