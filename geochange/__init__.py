"""geochange: bi-temporal change detection over very large georeferenced scenes, on TorchGeo.

The main entry points are imported lazily, so ``import geochange`` stays fast and the command
line starts quickly::

    from geochange import ChangeTrainer, ChangeDataModule, ChangePredictor, vectorize_changes
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it.
_LAZY: dict[str, str] = {
    "ChangeTrainer": "geochange.trainers",
    "SemiSupervisedChangeTrainer": "geochange.trainers",
    "ChangeDataModule": "geochange.datamodules",
    "ChangePredictor": "geochange.predict",
    "PredictionResult": "geochange.predict",
    "vectorize_changes": "geochange.vectorize",
    "evaluate_scene": "geochange.evaluate",
    "make_scene": "geochange.synthetic",
    "Scene": "geochange.synthetic",
    "build_model": "geochange.models",
    "register_model": "geochange.models",
    "GeochangeError": "geochange.errors",
    "DataError": "geochange.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'geochange' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
