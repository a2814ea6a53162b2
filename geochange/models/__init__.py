"""Change detection models following one contract.

Every model is an ``nn.Module`` whose ``forward(x)`` takes ``x`` ``[B, 2, C, H, W]`` (dates
first) and returns a dict with ``"change"`` logits ``[B, 1, H, W]``; semantic models also
return ``"semantic_pre"``/``"semantic_post"`` class logits ``[B, K, H, W]``. Build them with
:func:`build_model`; extend the registry with :func:`register_model`.
"""

from __future__ import annotations

from geochange import keys as _keys
from geochange.keys import *  # noqa: F403  (the output keys stay importable from here)
from geochange.models.base import (
    ChangeModel,
    SiameseChangeModel,
)
from geochange.models.bit import BIT
from geochange.models.changeformer import ChangeFormer
from geochange.models.early_fusion import EarlyFusionUNet, StackedDates
from geochange.models.folding import fold_batch_norm
from geochange.models.registry import (
    MODEL_ALIASES,
    build_model,
    canonical_model_name,
    list_models,
    load_pretrained,
    register_model,
)
from geochange.models.semantic_change import SemanticChangeNet
from geochange.models.siamese import FusionUNet, SiamConc, SiamDiff
from geochange.models.snunet import SNUNet
from geochange.models.tinycd import TinyCD

#: Registry names of the models that output semantic maps (``task="semantic"``).
SEMANTIC_MODELS = frozenset({"semantic_change"})

register_model("fusion_unet", FusionUNet)
register_model("siam_diff", SiamDiff)
register_model("siam_conc", SiamConc)
register_model("early_fusion_unet", EarlyFusionUNet)
register_model("semantic_change", SemanticChangeNet)
register_model("changeformer", ChangeFormer)
register_model("snunet", SNUNet)
register_model("bit", BIT)
register_model("tinycd", TinyCD)

__all__ = [
    *_keys.__all__,
    "BIT",
    "MODEL_ALIASES",
    "SEMANTIC_MODELS",
    "ChangeFormer",
    "ChangeModel",
    "EarlyFusionUNet",
    "FusionUNet",
    "SNUNet",
    "SemanticChangeNet",
    "SiamConc",
    "SiamDiff",
    "SiameseChangeModel",
    "StackedDates",
    "TinyCD",
    "build_model",
    "canonical_model_name",
    "fold_batch_norm",
    "list_models",
    "load_pretrained",
    "register_model",
]
