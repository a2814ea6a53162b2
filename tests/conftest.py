"""Fixtures shared by every test directory; the builders behind them live in tests/builders.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.builders import SHARED_DATA, Pair, make_pair


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    """A labelled 256 x 256 scene pair (see :func:`tests.builders.make_pair`)."""
    return make_pair(tmp_path / "scene")


@pytest.fixture
def shared_data() -> Path:
    """The ``../shared/data`` folder; skips the test where it is absent."""
    if not (SHARED_DATA / "levircd-samples").is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


@pytest.fixture
def single_thread() -> Iterator[None]:
    """One intra-op torch thread for the duration of a test."""
    # The test machine is a shared, loaded 2-core box: one intra-op thread per process avoids
    # oversubscription, which made multi-threaded small convolutions several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
