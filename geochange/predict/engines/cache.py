"""The on-disk cache of exported models: keys, the default directory, atomic entries.

An entry is a directory named by its key (a digest of everything the exported file depends
on: the weights, the input shape, the precision, the engine and exporter versions). It is
built in a temporary sibling directory and renamed into place, so a reader sees a complete
entry or none; two processes building the same entry both succeed and one copy is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geochange.errors import OutputError

logger = logging.getLogger("geochange.predict.engines")

#: Bumped when what an entry holds changes (graph, names, layout), so old entries are unused.
CACHE_FORMAT = 1
#: The file written last into an entry: its presence means the entry is complete.
META_NAME = "meta.json"
#: Temporary build directories older than this (seconds) are from dead processes: removed.
STALE_SECONDS = 24 * 3600


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/geochange/engines`` (``~/.cache/geochange/engines`` without it).

    ``GEOCHANGE_ENGINE_CACHE`` overrides it (e.g. a directory shared by Dask workers).
    """
    override = os.environ.get("GEOCHANGE_ENGINE_CACHE")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("geochange", appauthor=False)) / "engines"


def weights_digest(model: nn.Module) -> str:
    """A digest of the model's class and every parameter and buffer (names, dtypes, bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        data = tensor.detach().cpu().contiguous()
        if data.dtype == torch.bfloat16:  # numpy has no bfloat16
            data = data.view(torch.int16)
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def cache_key(fields: Mapping[str, Any]) -> str:
    """The entry name for ``fields`` (JSON-serializable): a readable prefix and a digest."""
    text = json.dumps({"format": CACHE_FORMAT, **fields}, sort_keys=True)
    digest = hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
    return f"{fields.get('engine', 'model')}-{digest}"


def entry_ready(cache_dir: Path, key: str) -> Path | None:
    """The complete entry ``key`` in ``cache_dir``, or None."""
    entry = Path(cache_dir) / key
    return entry if (entry / META_NAME).is_file() else None


def read_meta(entry: Path) -> dict[str, Any]:
    """The metadata an entry was written with."""
    return dict(json.loads((entry / META_NAME).read_text()))


def get_or_create(
    cache_dir: Path,
    key: str,
    build: Callable[[Path], Mapping[str, Any] | None],
    fields: Mapping[str, Any] | None = None,
) -> Path:
    """The entry ``key``, built by ``build(tmp_dir)`` into a temporary directory when missing.

    ``build`` writes the entry's files into the directory it is given and may return extra
    metadata; the entry's ``meta.json`` (``fields`` and that metadata) is written last, then
    the directory is renamed into place.

    Raises:
        OutputError: ``cache_dir`` cannot be created or written.
    """
    ready = entry_ready(cache_dir, key)
    if ready is not None:
        return ready
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=cache_dir))
    except OSError as err:
        raise OutputError(
            f"engine cache directory {str(cache_dir)!r} is not writable ({err}); set "
            "engine_cache_dir= (CLI --engine-cache-dir) to a writable directory"
        ) from err
    try:
        extra = build(tmp) or {}
        meta = {**(fields or {}), **extra, "created": time.time()}
        (tmp / META_NAME).write_text(json.dumps(meta, indent=1, sort_keys=True))
        final = cache_dir / key
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process renamed its copy first (a non-empty target cannot be replaced):
            # theirs is as good as ours.
            if entry_ready(cache_dir, key) is None:
                raise
            logger.debug("engine cache entry %s was written concurrently", key)
        else:
            logger.info("engine cache: wrote %s", final)
        return final
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_stale(cache_dir)


def _remove_stale(cache_dir: Path) -> None:
    """Remove temporary build directories left by processes that died mid-build."""
    now = time.time()
    for path in cache_dir.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
