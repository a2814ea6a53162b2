"""geochange: bi-temporal change detection over very large georeferenced scenes, on TorchGeo.

The front door: every public entry point is importable from here. They are imported lazily, so
``import geochange`` stays fast (no torch, no Lightning) and the command line starts quickly::

    from geochange import ChangeTrainer, ChangeDataModule, ChangePredictor, vectorize_changes

Each name lives in the module named in ``_LAZY``; see docs/architecture.md for the layout.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    # Real imports for IDEs and type checkers; at runtime ``__getattr__`` imports on first use.
    from geochange.checkpoint import (  # checkpoint
        CheckpointMetadata,
        load_model,
        read_checkpoint_metadata,
    )
    from geochange.datamodules import (  # datamodules
        ChangeDataModule,
        FolderChangeDataModule,
        SyntheticSceneDataModule,
    )
    from geochange.datasets import (  # datasets
        BiTemporalRasterDataset,
        ChangeFolderDataset,
        SemanticChangeFolderDataset,
        region_boxes,
        spatial_split,
    )
    from geochange.errors import (  # errors
        CheckpointError,
        ConfigurationError,
        DataError,
        EngineUnavailableError,
        GeochangeError,
        NormalizationWarning,
        OutputError,
        QuantizationError,
    )
    from geochange.evaluate import (  # evaluation
        EvaluationReport,
        evaluate_scene,
        match_objects,
    )
    from geochange.losses import (  # losses
        BatchBalancedContrastiveLoss,
        BCEDiceLoss,
        BSCCLoss,
        CombinedIoULoss,
        DiceLoss,
        FocalLoss,
        MaskedBCEWithLogitsLoss,
        SACLLoss,
        SCDMultitaskLoss,
        SoftIoULoss,
        build_change_loss,
    )
    from geochange.metrics import (  # metrics
        BinaryChangeMetrics,
        SemanticChangeMetrics,
    )
    from geochange.models import (  # models
        ChangeModel,
        build_model,
        list_models,
        load_pretrained,
        register_model,
    )
    from geochange.predict import (  # prediction
        ChangePredictor,
        PredictionResult,
    )
    from geochange.pseudo import (  # pseudo labels
        PseudoLabelSummary,
        change_event_generation,
        change_event_generation_batch,
        evaluate_pseudo_labels,
        generate_pseudo_labels,
    )
    from geochange.samplers import (  # samplers
        ChangeBalancedGeoSampler,
        InsideGridGeoSampler,
    )
    from geochange.synthetic import (  # synthetic scenes
        Scene,
        make_scene,
    )
    from geochange.trainers import (  # trainers
        ChangeTrainer,
        SemiSupervisedChangeTrainer,
    )
    from geochange.vectorize import (  # vectorizing
        vectorize_changes,
    )

# A literal list, so that type checkers and linters see the re-exports.
__all__ = [
    "BCEDiceLoss",
    "BSCCLoss",
    "BatchBalancedContrastiveLoss",
    "BiTemporalRasterDataset",
    "BinaryChangeMetrics",
    "ChangeBalancedGeoSampler",
    "ChangeDataModule",
    "ChangeFolderDataset",
    "ChangeModel",
    "ChangePredictor",
    "ChangeTrainer",
    "CheckpointError",
    "CheckpointMetadata",
    "CombinedIoULoss",
    "ConfigurationError",
    "DataError",
    "DiceLoss",
    "EngineUnavailableError",
    "EvaluationReport",
    "FocalLoss",
    "FolderChangeDataModule",
    "GeochangeError",
    "InsideGridGeoSampler",
    "MaskedBCEWithLogitsLoss",
    "NormalizationWarning",
    "OutputError",
    "PredictionResult",
    "PseudoLabelSummary",
    "QuantizationError",
    "SACLLoss",
    "SCDMultitaskLoss",
    "Scene",
    "SemanticChangeFolderDataset",
    "SemanticChangeMetrics",
    "SemiSupervisedChangeTrainer",
    "SoftIoULoss",
    "SyntheticSceneDataModule",
    "build_change_loss",
    "build_model",
    "change_event_generation",
    "change_event_generation_batch",
    "evaluate_pseudo_labels",
    "evaluate_scene",
    "generate_pseudo_labels",
    "list_models",
    "load_model",
    "load_pretrained",
    "make_scene",
    "match_objects",
    "read_checkpoint_metadata",
    "region_boxes",
    "register_model",
    "spatial_split",
    "vectorize_changes",
]

#: Public name -> home module that defines it (the one place to add an entry point).
_LAZY: dict[str, str] = {
    # datasets
    "BiTemporalRasterDataset": "geochange.datasets",
    "ChangeFolderDataset": "geochange.datasets",
    "SemanticChangeFolderDataset": "geochange.datasets",
    "region_boxes": "geochange.datasets",
    "spatial_split": "geochange.datasets",
    # samplers
    "ChangeBalancedGeoSampler": "geochange.samplers",
    "InsideGridGeoSampler": "geochange.samplers",
    # datamodules
    "ChangeDataModule": "geochange.datamodules",
    "FolderChangeDataModule": "geochange.datamodules",
    "SyntheticSceneDataModule": "geochange.datamodules",
    # models
    "ChangeModel": "geochange.models",
    "build_model": "geochange.models",
    "list_models": "geochange.models",
    "load_pretrained": "geochange.models",
    "register_model": "geochange.models",
    # losses
    "BCEDiceLoss": "geochange.losses",
    "BSCCLoss": "geochange.losses",
    "BatchBalancedContrastiveLoss": "geochange.losses",
    "CombinedIoULoss": "geochange.losses",
    "DiceLoss": "geochange.losses",
    "FocalLoss": "geochange.losses",
    "MaskedBCEWithLogitsLoss": "geochange.losses",
    "SACLLoss": "geochange.losses",
    "SCDMultitaskLoss": "geochange.losses",
    "SoftIoULoss": "geochange.losses",
    "build_change_loss": "geochange.losses",
    # metrics
    "BinaryChangeMetrics": "geochange.metrics",
    "SemanticChangeMetrics": "geochange.metrics",
    # trainers
    "ChangeTrainer": "geochange.trainers",
    "SemiSupervisedChangeTrainer": "geochange.trainers",
    # checkpoint
    "CheckpointMetadata": "geochange.checkpoint",
    "load_model": "geochange.checkpoint",
    "read_checkpoint_metadata": "geochange.checkpoint",
    # prediction
    "ChangePredictor": "geochange.predict",
    "PredictionResult": "geochange.predict",
    # vectorizing
    "vectorize_changes": "geochange.vectorize",
    # evaluation
    "EvaluationReport": "geochange.evaluate",
    "evaluate_scene": "geochange.evaluate",
    "match_objects": "geochange.evaluate",
    # pseudo labels
    "PseudoLabelSummary": "geochange.pseudo",
    "change_event_generation": "geochange.pseudo",
    "change_event_generation_batch": "geochange.pseudo",
    "evaluate_pseudo_labels": "geochange.pseudo",
    "generate_pseudo_labels": "geochange.pseudo",
    # synthetic scenes
    "Scene": "geochange.synthetic",
    "make_scene": "geochange.synthetic",
    # errors
    "CheckpointError": "geochange.errors",
    "ConfigurationError": "geochange.errors",
    "DataError": "geochange.errors",
    "EngineUnavailableError": "geochange.errors",
    "GeochangeError": "geochange.errors",
    "NormalizationWarning": "geochange.errors",
    "OutputError": "geochange.errors",
    "QuantizationError": "geochange.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'geochange' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
