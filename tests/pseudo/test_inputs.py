"""geochange.pseudo.inputs: change classes by name or id."""

from __future__ import annotations

import pytest

from geochange.errors import ConfigurationError
from geochange.pseudo import (
    resolve_change_classes,
)
from tests.pseudo.scenes import (
    CLASSES,
)


def test_resolve_change_classes():
    assert resolve_change_classes("building, water", CLASSES) == (0, 2)
    assert resolve_change_classes(["Bare Land", 0, "4"], CLASSES) == (0, 3, 4)
    with pytest.raises(ConfigurationError, match="roof"):
        resolve_change_classes("roof", CLASSES)
