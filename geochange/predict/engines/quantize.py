"""int8 post-training quantization (NNCF) of the OpenVINO engine, on tiles of the scene itself.

The tiles sampled over the scene are split: most calibrate NNCF's quantizer, the rest are held
out and predicted by both the int8 model and the fp32 one (OpenVINO at f32). int8 is used only
when at least :data:`MIN_INT8_AGREEMENT` of the held-out binary change pixels are identical;
otherwise :class:`~geochange.errors.QuantizationError` is raised before any tile of the scene is
predicted. It refuses rather than falling back: a run asked for int8 never silently produces
a map at another precision and speed, and the message says what agreement was measured.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from geochange.errors import EngineUnavailableError, QuantizationError
from geochange.predict.engines.cache import cache_key, get_or_create, read_meta
from geochange.predict.engines.export import NORMALIZED, ONNX_NAME, Compiled, export_onnx

if TYPE_CHECKING:  # pragma: no cover
    from geochange.predict.engines.openvino_engine import OpenVINOEngine

logger = logging.getLogger("geochange.predict.engines")

#: Smallest share of held-out binary change pixels int8 must keep identical to fp32.
MIN_INT8_AGREEMENT = 0.995
#: Default number of tiles sampled over the scene for calibration and the check.
CALIBRATION_TILES = 32
#: Share of the sampled tiles held out for the agreement check (at least one batch).
HELD_OUT_SHARE = 0.25


def binary_agreement(reference: np.ndarray, candidate: np.ndarray, threshold: float = 0.5) -> float:
    """Share of pixels whose binary change (channel 0 >= ``threshold``) is the same.

    Args:
        reference: probabilities ``[N, 1 + 2K, H, W]`` (or ``[N, H, W]`` change only).
        candidate: probabilities of the same shape.
        threshold: the change threshold.

    Returns:
        The identical share in [0, 1] (1.0 for no pixels).
    """
    a, b = np.asarray(reference), np.asarray(candidate)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.ndim == 4:
        a, b = a[:, 0], b[:, 0]
    if a.size == 0:
        return 1.0
    return float(np.mean((a >= threshold) == (b >= threshold)))


def check_int8_agreement(
    fp32: Compiled,
    int8: Compiled,
    tiles: np.ndarray,
    batch_size: int,
    threshold: float = 0.5,
) -> float:
    """Binary change agreement of ``int8`` with ``fp32`` on held-out ``tiles`` ``[N, 2, C, H, W]``.

    Both callables take batches of exactly ``batch_size`` tiles (``N`` is a multiple of it).
    """
    reference, candidate = [], []
    for start in range(0, len(tiles), batch_size):
        batch = np.ascontiguousarray(tiles[start : start + batch_size])
        reference.append(fp32(batch))
        candidate.append(int8(batch))
    return binary_agreement(np.concatenate(reference), np.concatenate(candidate), threshold)


def split_tiles(tiles: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibration and held-out tiles: whole batches each, every 4th batch held out."""
    batches = len(tiles) // batch_size
    if batches < 2:
        raise QuantizationError(
            f"int8 calibration needs at least {2 * batch_size} valid tiles (two batches of "
            f"{batch_size}); the scene gave {len(tiles)}: use calibration_tiles= or fp32/bf16"
        )
    held_batches = max(1, round(batches * HELD_OUT_SHARE))
    step = max(1, batches // held_batches)
    held = set(range(step - 1, batches, step)[:held_batches])
    pick = [
        np.arange(b * batch_size, (b + 1) * batch_size) for b in range(batches) if b not in held
    ]
    hold = [np.arange(b * batch_size, (b + 1) * batch_size) for b in sorted(held)]
    return tiles[np.concatenate(pick)], tiles[np.concatenate(hold)]


def _require_nncf() -> Any:
    try:
        import nncf
    except ImportError as err:
        raise EngineUnavailableError(
            "precision='int8' needs NNCF: pip install 'geochange[openvino]' (openvino, nncf) "
            f"({err})"
        ) from err
    return nncf


def quantize_engine(
    engine: OpenVINOEngine,
    tiles: np.ndarray,
    *,
    threshold: float = 0.5,
    min_agreement: float | None = None,
) -> float:
    """Quantize ``engine``'s model on ``tiles`` (normalized, ``[N, 2, C, H, W]``); check it.

    The quantized IR is cached under a key that includes the calibration tiles, with the
    measured agreement, so a second run on the same scene reuses both.

    Returns:
        The held-out binary change agreement of int8 with fp32.

    Raises:
        QuantizationError: too few tiles, or agreement below ``min_agreement`` (default
            :data:`MIN_INT8_AGREEMENT`).
        EngineUnavailableError: NNCF is not installed.
    """
    _require_nncf()
    if min_agreement is None:
        min_agreement = MIN_INT8_AGREEMENT
    batch = engine.batch_size
    shape = (batch, *tiles.shape[1:])
    runner = engine.runner(torch.from_numpy(tiles[:1]))
    digest = hashlib.blake2b(np.ascontiguousarray(tiles).tobytes(), digest_size=16)
    fields = {**engine.key_fields(runner, shape), "calibration": digest.hexdigest()}
    calibration, held_out = split_tiles(tiles, batch)
    assert engine.cache_dir is not None
    entry = get_or_create(
        engine.cache_dir,
        cache_key(fields),
        lambda d: _quantize_into(engine, runner, shape, calibration, held_out, threshold, d),
        fields=fields,
    )
    meta = read_meta(entry)
    agreement = float(meta["agreement"])
    message = (
        f"int8 keeps {100 * agreement:.3f}% of binary change pixels identical to fp32 on "
        f"{meta['held_out_tiles']} held-out tiles of this scene (calibrated on "
        f"{meta['calibration_tiles']})"
    )
    if agreement < min_agreement:
        raise QuantizationError(
            f"{message}; int8 needs >= {100 * min_agreement:.1f}%: use precision='auto' "
            "(the CPU's best float precision)"
        )
    logger.info("openvino engine: %s", message)
    with engine._lock:
        engine.entries[(shape, NORMALIZED)] = entry.name
        engine._compiled.pop((shape, NORMALIZED), None)  # another scene's calibration
    return agreement


def _quantize_into(
    engine: OpenVINOEngine,
    runner: nn.Module,
    shape: tuple[int, ...],
    calibration: np.ndarray,
    held_out: np.ndarray,
    threshold: float,
    directory: Path,
) -> dict[str, Any]:
    """Build the int8 entry in ``directory``; return its metadata (with the agreement)."""
    import nncf

    from geochange.predict.engines.openvino_engine import IR_NAME, _core, _Requests

    ov = __import__("openvino")
    onnx_path = directory / ONNX_NAME
    export_onnx(runner, shape, onnx_path)
    model = ov.convert_model(str(onnx_path))
    for path in directory.glob("model.onnx*"):
        path.unlink()
    batch = shape[0]
    items = [calibration[i : i + batch] for i in range(0, len(calibration), batch)]
    quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items) * batch)
    ov.save_model(quantized, str(directory / IR_NAME), compress_to_fp16=False)
    config = engine.compile_config()
    reference = {**config, "INFERENCE_PRECISION_HINT": "f32"}
    fp32 = _Requests(_core().compile_model(model, "CPU", reference))
    int8 = _Requests(_core().compile_model(quantized, "CPU", config))
    agreement = check_int8_agreement(fp32, int8, held_out, batch, threshold)
    return {
        "agreement": agreement,
        "calibration_tiles": len(calibration),
        "held_out_tiles": len(held_out),
        "threshold": threshold,
    }


def sample_indices(count: int, total: int) -> Sequence[int]:
    """``count`` indexes spread evenly over ``range(total)`` (all of them when fewer)."""
    if total <= count:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, count).round()})
