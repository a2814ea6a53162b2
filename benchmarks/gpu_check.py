"""GPU readiness check: the CUDA pipeline on a generated pair, against the CPU result.

When a CUDA GPU is present (else it exits at once, saying so), it

* generates a scene pair (``--size``, default 4096) into ``bench_data/gpu_check`` and a random
  ``fusion_unet``/resnet18 whose BatchNorm statistics are calibrated on one of its tiles (so
  its map varies like a trained model's; nothing is downloaded);
* predicts a ``--agreement-size`` window on the CPU (torch, fp32) and on CUDA at fp32 (TF32
  off), bf16 and fp16, and reports the share of identical binary change pixels; the bar,
  >= 99.9 %, applies to fp32: with random weights half the probabilities lie within 0.08 of
  the threshold, where bf16/fp16 rounding alone flips ~8 % of pixels (docs/prediction.md);
* predicts the whole scene on CUDA at bf16 and fp16 (torch engine; ONNX Runtime's CUDA
  provider too where installed, fp32) and reports tiles/s, how busy the GPU was (CUDA-event
  time of the forward passes over wall time) and the projected time of the full
  48000 x 32500 pair (its tile count computed from the grid: 10,625 tiles of 512 px at the
  default overlap of 128).

It needs only this repository and a venv made by ``bash .ci/venv``; it runs in < 5 minutes on
one GPU.

    python benchmarks/gpu_check.py [--size 4096] [--agreement-size 1024]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "bench_data" / "gpu_check"
NORM = {"mean": [110.0, 110.0, 100.0], "std": [50.0, 50.0, 50.0]}
#: The LsSCD-scale pair the projection is for.
FULL_PAIR = (32500, 48000)
MIN_AGREEMENT = 0.999


def grid_tiles(height: int, width: int, tile: int = 512, overlap: int = 128) -> int:
    """Tiles of the predictor's grid over a ``height`` x ``width`` scene."""
    from geochange.predict import tile_starts

    stride = tile - overlap
    return len(tile_starts(height, tile, stride)) * len(tile_starts(width, tile, stride))


def projected_seconds(tiles_per_s: float, height: int, width: int, tile: int = 512) -> float:
    """Time of a whole ``height`` x ``width`` pair at ``tiles_per_s`` (default overlap)."""
    return grid_tiles(height, width, tile, tile // 4) / tiles_per_s


def change_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of valid pixels (not 255) whose change value is identical."""
    valid = (reference != 255) & (candidate != 255)
    if not valid.any():
        return 1.0
    return float(np.mean(reference[valid] == candidate[valid]))


class _Timed:
    """Wraps an engine's ``run``: CUDA-event time of every forward pass."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.run = engine.run
        self.ms = 0.0

    def __call__(self, x: Any, normalization: Any = None) -> Any:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = self.run(x, normalization)
        end.record()
        end.synchronize()
        self.ms += start.elapsed_time(end)
        return out


def model_for(scene: Any, tile: int) -> torch.nn.Module:
    """Random resnet18 fusion_unet, BatchNorm statistics of one scene tile."""
    sys.path.insert(0, str(ROOT))
    from tests.predict.engines.test_agreement import calibrated_fusion_unet

    return calibrated_fusion_unet(scene.pre, scene.post, tile)


def predict(model: torch.nn.Module, scene: Any, out: Path, window: Any = None, **kw: Any) -> Any:
    """One prediction; returns (result, seconds, forward seconds or None, change map)."""
    import rasterio

    from geochange.predict import ChangePredictor

    predictor = ChangePredictor(model, normalization=NORM, progress=False, **kw)
    timed = None
    if predictor.device.type == "cuda":
        timed = _Timed(predictor._inferencer.engine)
        predictor._inferencer.engine.run = timed  # type: ignore[method-assign]
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = predictor.predict(scene.pre, scene.post, out, window=window, overwrite=True)
    seconds = time.perf_counter() - t0
    with rasterio.open(result.change) as ds:
        change = ds.read(1)
    return result, seconds, (timed.ms / 1000 if timed else None), change


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="side of the generated pair")
    parser.add_argument("--agreement-size", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); nothing to do")
        return 2
    from rasterio.windows import Window

    from geochange.synthetic import make_scene

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"gpu_check: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    t0 = time.perf_counter()
    scene = make_scene(DATA / f"scene_{args.size}", args.size, args.size, seed=0, workers=8)
    print(f"  scene {args.size}^2 ready in {time.perf_counter() - t0:.0f} s", flush=True)
    model = model_for(scene, 512)
    size = args.agreement_size
    window = Window(0, 0, size, size)
    common = {"tile_size": 512, "overlap": 128, "batch_size": args.batch_size}
    _, cpu_s, _, cpu = predict(
        model, scene, DATA / "cpu", window, device="cpu", precision="fp32", **common
    )
    print(f"  CPU reference ({size}^2, torch fp32): {cpu_s:.1f} s", flush=True)
    ok = True
    for precision in ("fp32", "bf16", "fp16"):
        _, _, _, gpu = predict(
            model, scene, DATA / f"agree_{precision}", window, device="cuda",
            precision=precision, **common,
        )  # fmt: skip
        same = change_agreement(cpu, gpu)
        bar = same >= MIN_AGREEMENT if precision == "fp32" else True
        ok &= bar
        verdict = f" (bar 99.9%: {'ok' if bar else 'FAIL'})" if precision == "fp32" else ""
        print(
            f"  agreement CUDA {precision} vs CPU fp32: {100 * same:.3f}% identical change "
            f"pixels{verdict}",
            flush=True,
        )
    configs: list[tuple[str, str]] = [("torch", "bf16"), ("torch", "fp16")]
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            configs.append(("onnxruntime", "fp32"))
    for engine, precision in configs:
        for _ in ("warm-up", "timed"):
            result, seconds, forward, _ = predict(
                model, scene, DATA / f"full_{engine}_{precision}", device="cuda",
                engine=engine, precision=precision, **common,
            )  # fmt: skip
        rate = result.tiles / seconds
        busy = f"{100 * forward / seconds:.0f}%" if forward else "?"
        full = projected_seconds(rate, *FULL_PAIR)
        print(
            f"  CUDA {engine} {precision}: {result.tiles} tiles in {seconds:.1f} s = "
            f"{rate:.2f} tiles/s; forward passes {forward or 0:.1f} s = GPU busy {busy} of "
            f"wall; projected 48000 x 32500 pair ({grid_tiles(*FULL_PAIR)} tiles): "
            f"{full / 60:.1f} min",
            flush=True,
        )
    print("gpu_check:", "ok" if ok else "FAILED (fp32 agreement below 99.9%)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
