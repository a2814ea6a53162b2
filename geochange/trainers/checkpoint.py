"""Reading and validating geochange checkpoints without building a model.

A geochange checkpoint is a Lightning checkpoint whose top-level dict holds a ``"geochange"``
entry written by :meth:`geochange.trainers.ChangeTrainer.on_save_checkpoint`: everything the
predictor needs (task, model name and arguments, bands, normalization, tile size, class names).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from geochange.errors import CheckpointError

__all__ = ["CHECKPOINT_KEY", "METADATA_KEYS", "load_checkpoint_dict", "read_checkpoint_metadata"]

#: Top-level checkpoint key holding the geochange metadata.
CHECKPOINT_KEY = "geochange"

#: Keys always present in ``checkpoint["geochange"]``.
METADATA_KEYS = (
    "task",
    "model",
    "model_kwargs",
    "in_channels",
    "num_classes",
    "class_names",
    "normalization",
    "bands",
    "tile_size",
    "version",
)


def load_checkpoint_dict(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file onto the CPU, turning every failure into a :class:`CheckpointError`.

    Only tensors and plain Python values are unpickled (``weights_only=True``), so reading the
    metadata of an untrusted file cannot run code.

    Args:
        path: Checkpoint file (``.ckpt``).

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: If the file is missing, unreadable, corrupt or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        EOFError,
        ValueError,
        OSError,
        AttributeError,
        KeyError,
        IndexError,
    ) as error:
        if "weights only load failed" in str(error).lower():
            raise CheckpointError(
                f"checkpoint {path} holds Python objects other than tensors and plain values; "
                "geochange only reads checkpoints with torch.load(weights_only=True) "
                f"({str(error).splitlines()[-1][:200]})"
            ) from error
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a PyTorch checkpoint "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(checkpoint).__name__}, "
            "not a Lightning checkpoint dict"
        )
    return checkpoint


def validate_metadata(checkpoint: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Return the geochange metadata of a loaded checkpoint dict, checking it is complete.

    Args:
        checkpoint: Loaded checkpoint.
        path: Where it came from (for messages).

    Returns:
        A copy of ``checkpoint["geochange"]``.

    Raises:
        CheckpointError: If it is not a Lightning checkpoint or lacks geochange metadata.
    """
    if "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint (no 'state_dict'; keys: "
            f"{sorted(map(str, checkpoint))[:6]}); a bare model state dict cannot be used "
            "by the trainer or predictor"
        )
    metadata = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(metadata, dict):
        raise CheckpointError(
            f"{path} is a Lightning checkpoint but not a geochange one (no "
            f"'{CHECKPOINT_KEY}' metadata); train it with geochange.ChangeTrainer"
        )
    missing = [key for key in METADATA_KEYS if key not in metadata]
    if missing:
        raise CheckpointError(f"{path}: geochange metadata lacks keys {missing}")
    if metadata["task"] not in ("binary", "semantic"):
        raise CheckpointError(f"{path}: unknown task {metadata['task']!r} in geochange metadata")
    return dict(metadata)


def read_checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    """Read what inference needs from a geochange checkpoint, without building the model.

    Args:
        path: Checkpoint written by :class:`geochange.trainers.ChangeTrainer`.

    Returns:
        Dict with keys ``task`` (``"binary"`` or ``"semantic"``), ``model`` (registry name),
        ``model_kwargs`` (keyword arguments of :func:`geochange.models.build_model`, incl.
        ``backbone``, ``in_channels``, ``num_classes``), ``in_channels``, ``num_classes``,
        ``class_names``, ``normalization`` (``{"mean": [...], "std": [...]}`` or ``None``),
        ``bands``, ``tile_size``, ``version`` (geochange version that wrote it), plus
        ``trainer`` (class path of the LightningModule).

    Raises:
        CheckpointError: For a missing, corrupt, non-Lightning or non-geochange file.
    """
    return validate_metadata(load_checkpoint_dict(path), path)
