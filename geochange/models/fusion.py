"""Old home of BatchNorm folding, kept so ``geochange.models.fusion`` imports keep working.

The code lives in :mod:`geochange.models.folding` (conv-BatchNorm *fusion*, not the
``fusion_unet`` model).
"""

from __future__ import annotations

from geochange.models.folding import fold_batch_norm

__all__ = ["fold_batch_norm"]
