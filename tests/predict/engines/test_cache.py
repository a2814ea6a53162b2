"""The engine cache (geochange.predict.engines.cache): keys, atomic entries, concurrency."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import torch

from geochange.errors import OutputError
from geochange.predict.engines.cache import (
    META_NAME,
    STALE_SECONDS,
    cache_key,
    default_cache_dir,
    get_or_create,
    read_meta,
    weights_digest,
)
from tests.builders import TinyConvChange


def test_default_directory_follows_xdg_and_the_override(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GEOCHANGE_ENGINE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "geochange" / "engines"
    monkeypatch.setenv("GEOCHANGE_ENGINE_CACHE", str(tmp_path / "shared"))
    assert default_cache_dir() == tmp_path / "shared"


def test_the_key_changes_with_weights_shape_and_precision() -> None:
    a, b = TinyConvChange(seed=0), TinyConvChange(seed=0)
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        b.conv1.weight[0, 0, 0, 0] += 1e-6
    assert weights_digest(a) != weights_digest(b)
    base = {"engine": "openvino", "weights": weights_digest(a), "shape": [4, 2, 3, 512, 512]}
    keys = {
        cache_key(base),
        cache_key({**base, "weights": weights_digest(b)}),
        cache_key({**base, "shape": [4, 2, 3, 256, 256]}),
        cache_key({**base, "precision": "bf16"}),
        cache_key({**base, "engine_version": "2099.1"}),
    }
    assert len(keys) == 5
    assert cache_key(base) == cache_key(dict(reversed(base.items())))
    assert cache_key(base).startswith("openvino-")


def test_an_entry_appears_complete_or_not_at_all(tmp_path: Path) -> None:
    def failing(directory: Path) -> None:
        (directory / "model.onnx").write_bytes(b"half")
        raise RuntimeError("export crashed")

    with pytest.raises(RuntimeError, match="export crashed"):
        get_or_create(tmp_path, "k", failing)
    assert list(tmp_path.iterdir()) == []  # neither the entry nor its temporary directory
    calls = []

    def build(directory: Path) -> dict:
        calls.append(directory)
        (directory / "model.onnx").write_bytes(b"graph")
        return {"extra": 1}

    entry = get_or_create(tmp_path, "k", build, fields={"engine": "x"})
    assert entry == tmp_path / "k" and (entry / "model.onnx").read_bytes() == b"graph"
    assert read_meta(entry)["extra"] == 1 and read_meta(entry)["engine"] == "x"
    assert get_or_create(tmp_path, "k", build) == entry and len(calls) == 1  # reused


def test_concurrent_builders_both_succeed_with_one_entry(tmp_path: Path) -> None:
    barrier = threading.Barrier(2)
    results: list[Path] = []

    def build(directory: Path) -> None:
        (directory / "model.onnx").write_bytes(b"graph")
        barrier.wait(timeout=10)  # both are mid-build before either renames

    threads = [
        threading.Thread(target=lambda: results.append(get_or_create(tmp_path, "k", build)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [tmp_path / "k"] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]
    assert (tmp_path / "k" / META_NAME).is_file()


def test_stale_temporary_directories_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".old.abc.tmp"
    stale.mkdir()
    old = time.time() - STALE_SECONDS - 10
    os.utime(stale, (old, old))
    fresh = tmp_path / ".busy.abc.tmp"  # another process building now
    fresh.mkdir()
    get_or_create(tmp_path, "k", lambda d: None)
    assert not stale.exists() and fresh.exists()


def test_an_unwritable_cache_directory_is_a_named_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match=r"engine cache directory .*file.*engine_cache_dir"):
        get_or_create(blocker / "engines", "k", lambda d: None)
