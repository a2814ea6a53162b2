"""Lightning trainers for change detection and checkpoint metadata helpers.

* :class:`ChangeTrainer` — binary or semantic change detection (LightningModule).
* :class:`SemiSupervisedChangeTrainer` — FixMatch / DiffMatch semi-supervised training.
* :func:`read_checkpoint_metadata` — what inference needs from a checkpoint, without a model.
"""

from __future__ import annotations

from geochange.trainers.change import LSSCD_CLASS_NAMES, ChangeTrainer
from geochange.trainers.checkpoint import CHECKPOINT_KEY, METADATA_KEYS, read_checkpoint_metadata
from geochange.trainers.semi import SemiSupervisedChangeTrainer

__all__ = [
    "CHECKPOINT_KEY",
    "LSSCD_CLASS_NAMES",
    "METADATA_KEYS",
    "ChangeTrainer",
    "SemiSupervisedChangeTrainer",
    "read_checkpoint_metadata",
]
