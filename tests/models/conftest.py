"""These tests run small convolutions: one torch thread each (see the root ``single_thread``)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_thread(single_thread: None) -> None:
    """Applies the root ``single_thread`` fixture to every test of this directory."""
