"""What :meth:`~geochange.predict.ChangePredictor.predict` returns: the written products."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from affine import Affine
from rasterio.crs import CRS

if TYPE_CHECKING:  # pragma: no cover
    from geochange.io.products import ChangeProducts

__all__ = ["PredictionResult"]


@dataclass
class PredictionResult:
    """Paths of the rasters written by :meth:`ChangePredictor.predict`.

    It is a :class:`geochange.io.products.ChangeProducts`, so the vectorizer and the evaluator
    take it as it is.

    Attributes:
        change: binary change COG (uint8 0/1, nodata 255).
        probability: change probability COG (uint8 ``round(p * 254)`` with nodata 255, or
            float32 with NaN nodata), or None when not written.
        semantic_pre: pre-date class ids (uint8, nodata 255) for semantic models.
        semantic_post: post-date class ids for semantic models.
        transition: ``from * K + to`` where changed, 254 where unchanged, 255 nodata (uint8;
            uint16 with 65534 / 65535 when ``K * K > 253``), for semantic models.
        class_names: semantic class names in id order (None for binary models).
        crs: output CRS.
        transform: output affine transform.
        height: output height in pixels.
        width: output width in pixels.
        tiles: number of tiles inferred in this call.
        seconds: wall time of this call.
    """

    change: Path
    probability: Path | None = None
    semantic_pre: Path | None = None
    semantic_post: Path | None = None
    transition: Path | None = None
    class_names: list[str] | None = None
    crs: CRS | None = None
    transform: Affine | None = None
    height: int = 0
    width: int = 0
    tiles: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


if TYPE_CHECKING:  # pragma: no cover
    # mypy checks that the result satisfies the contract vectorize and evaluate read.
    _CONTRACT: type[ChangeProducts] = PredictionResult
