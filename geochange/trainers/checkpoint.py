"""Old home of the checkpoint helpers: they live in :mod:`geochange.checkpoint` now.

Kept so ``geochange.trainers.checkpoint.X`` imports keep working; nothing here needs the trainer
(the trainer-specific loading is :meth:`geochange.trainers.ChangeTrainer.load_from_checkpoint`).
"""

from __future__ import annotations

from geochange import checkpoint as _home
from geochange.checkpoint import *  # noqa: F403

__all__ = _home.__all__
