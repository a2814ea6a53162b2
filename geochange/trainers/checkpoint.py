"""Old home of the checkpoint helpers: they live in :mod:`geochange.checkpoint` now.

Kept so ``geochange.trainers.checkpoint.X`` imports keep working; nothing here needs the trainer
(the trainer-specific loading is :meth:`geochange.trainers.ChangeTrainer.load_from_checkpoint`).
"""

from __future__ import annotations

from geochange.checkpoint import (
    CHECKPOINT_KEY,
    METADATA_KEYS,
    CheckpointMetadata,
    describe_state_dict_mismatch,
    load_checkpoint_dict,
    load_model,
    load_torch_file,
    read_checkpoint_metadata,
    validate_metadata,
    write_metadata,
)

__all__ = [
    "CHECKPOINT_KEY",
    "METADATA_KEYS",
    "CheckpointMetadata",
    "describe_state_dict_mismatch",
    "load_checkpoint_dict",
    "load_model",
    "load_torch_file",
    "read_checkpoint_metadata",
    "validate_metadata",
    "write_metadata",
]
