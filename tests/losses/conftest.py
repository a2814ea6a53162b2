"""Fixtures shared by these tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    # The test machine is a shared, loaded 2-core box: one intra-op thread per process avoids
    # oversubscription, which made multi-threaded small convolutions several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
