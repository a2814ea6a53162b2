"""Fixtures of the engine tests: one export cache for the session, engines that are installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


#: Every engine, skipped where its package is missing.
ENGINE_PARAMS = [
    pytest.param("torch", id="torch"),
    pytest.param(
        "openvino",
        id="openvino",
        marks=pytest.mark.skipif(not _installed("openvino", "onnx"), reason="no openvino"),
    ),
    pytest.param(
        "onnxruntime",
        id="onnxruntime",
        marks=pytest.mark.skipif(not _installed("onnxruntime", "onnx"), reason="no onnxruntime"),
    ),
]


@pytest.fixture(autouse=True)
def engine_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    """One cache for the session (exports are reused across tests), never the user's."""
    path = tmp_path_factory.getbasetemp() / "engine-cache"
    monkeypatch.setenv("GEOCHANGE_ENGINE_CACHE", str(path))
    return path
