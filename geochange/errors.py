"""Exception types raised by geochange.

Every error caused by bad user input derives from :class:`GeochangeError`, so callers can catch
one type; each also derives from the matching built-in (``ValueError``, ``OSError``) so existing
``except ValueError`` code keeps working.
"""

from __future__ import annotations


class GeochangeError(Exception):
    """Base class of every geochange error."""


class DataError(GeochangeError, ValueError):
    """Input data is unusable: unreadable file, band mismatch, no overlap, bad labels."""


class CheckpointError(GeochangeError, ValueError):
    """A checkpoint is missing, corrupt, or not a geochange checkpoint of the expected task."""


class ConfigurationError(GeochangeError, ValueError):
    """Arguments are inconsistent (e.g. ``tile_size <= overlap``, unknown model name)."""


class OutputError(GeochangeError, OSError):
    """An output cannot be written (unwritable directory, unknown format)."""


class NormalizationWarning(UserWarning):
    """A checkpoint carries no normalization: the model will be fed raw pixel values.

    Raised as a warning when a trainer writes such a checkpoint (no ``normalization`` given
    and none found on the datamodule, neither geochange's ``normalization`` nor TorchGeo's
    ``mean``/``std``) and when a predictor is built from one without ``normalization=``.
    """


class EngineUnavailableError(ConfigurationError):
    """An inference engine was asked for whose package is not installed (names the extra)."""


class QuantizationError(ConfigurationError):
    """int8 quantization was asked for but changes too many binary change pixels."""
