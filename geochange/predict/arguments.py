"""Checks of :class:`~geochange.predict.ChangePredictor`'s arguments, before any work."""

from __future__ import annotations

from collections.abc import Sequence

from geochange.errors import ConfigurationError
from geochange.predict.windows import BLEND_MODES
from geochange.transforms.stats import VALUE_RANGE_MODES


def _check_arguments(
    *,
    tile_size: int,
    overlap: int,
    margin: int,
    blend: str,
    semantic_blend: str,
    probability_dtype: str,
    threshold: float,
    batch_size: int,
    normalization: dict[str, Sequence[float]] | None,
    value_range: str,
) -> None:
    """Raise a ConfigurationError for inconsistent :class:`ChangePredictor` arguments."""
    if value_range not in VALUE_RANGE_MODES:
        raise ConfigurationError(
            f"value_range must be one of {VALUE_RANGE_MODES}, got {value_range!r}"
        )
    if tile_size <= 0 or overlap < 0:
        raise ConfigurationError(f"invalid tile_size={tile_size} / overlap={overlap}")
    if tile_size <= overlap:
        raise ConfigurationError(f"tile_size ({tile_size}) must be larger than overlap ({overlap})")
    if overlap > 0 and not 0 <= 2 * margin < overlap:
        raise ConfigurationError(f"margin ({margin}) must be in [0, overlap / 2)")
    if blend not in BLEND_MODES:
        raise ConfigurationError(f"unknown blend {blend!r}; choose one of {BLEND_MODES}")
    if semantic_blend not in ("probability", "center"):
        raise ConfigurationError(
            f"semantic_blend must be 'probability' or 'center', got {semantic_blend!r}"
        )
    if probability_dtype not in ("uint8", "float32"):
        raise ConfigurationError("probability_dtype must be 'uint8' or 'float32'")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigurationError(f"threshold must be in [0, 1], got {threshold}")
    if batch_size < 1:
        raise ConfigurationError("batch_size must be >= 1")
    if normalization is not None:
        if set(normalization) < {"mean", "std"}:
            raise ConfigurationError("normalization must have 'mean' and 'std' lists")
        if len(normalization["mean"]) != len(normalization["std"]):
            raise ConfigurationError("normalization 'mean' and 'std' differ in length")
        if any(float(s) == 0 for s in normalization["std"]):
            raise ConfigurationError("normalization 'std' contains zeros")
