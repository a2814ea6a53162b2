from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "datasets"))
from scenes import Pair, make_pair

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    return make_pair(tmp_path / "scene")


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED / "levircd-samples").is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED
